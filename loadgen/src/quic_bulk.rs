//! The raw QUIC baseline: a bulk sender and a reader over the same quinn and rustls as
//! Mirror, no HTTP/3 on top. What it moves per server CPU second is the ceiling an
//! HTTP/3 server on this machine can approach.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use mirror::tls::{TlsMaterial, client_config_from_pem, server_config};

/// ALPN of the bulk protocol.
pub const ALPN: &[u8] = b"mirror-bulk";
/// The same, as text.
pub const ALPN_STR: &str = "mirror-bulk";

/// Why the baseline could not run.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// TLS set-up.
    #[error(transparent)]
    Tls(#[from] mirror::tls::TlsError),
    /// QUIC set-up or transfer.
    #[error("QUIC: {0}")]
    Quic(String),
}

/// A listening bulk source.
pub fn source(listen: SocketAddr, tls: &TlsMaterial) -> Result<quinn::Endpoint, BulkError> {
    let crypto = server_config(tls, &[ALPN], true)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| BulkError::Quic(e.to_string()))?;
    quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), listen)
        .map_err(|e| BulkError::Quic(e.to_string()))
}

/// Sends 64 KiB chunks on every stream a client opens, until the client goes away.
pub async fn serve(endpoint: quinn::Endpoint) {
    let chunk = Bytes::from(vec![0x5a; 64 * 1024]);
    while let Some(incoming) = endpoint.accept().await {
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, _recv)) = connection.accept_bi().await {
                let chunk = chunk.clone();
                tokio::spawn(async move { while send.write_chunk(chunk.clone()).await.is_ok() {} });
            }
        });
    }
}

/// What the reader measured.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// Connections.
    pub connections: usize,
    /// Seconds read.
    pub seconds: f64,
    /// Bytes received.
    pub bytes: u64,
    /// Bits per second.
    pub bits_per_s: f64,
    /// Source CPU seconds (when its pid was given).
    pub server_cpu_s: Option<f64>,
    /// Source CPU seconds per GB.
    pub server_cpu_s_per_gb: Option<f64>,
}

impl BulkReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "raw QUIC bulk: {:.2} Gbit/s over {} connections, {} bytes in {:.1} s, source CPU {} s/GB",
            self.bits_per_s / 1e9,
            self.connections,
            self.bytes,
            self.seconds,
            self.server_cpu_s_per_gb
                .map_or("n/a".into(), |c| format!("{c:.2}"))
        )
    }
}

/// Reads from the source at `addr` on `connections` connections for `duration`.
pub async fn read(
    addr: SocketAddr,
    ca: &Path,
    connections: usize,
    duration: Duration,
    server_pid: Option<u32>,
) -> Result<BulkReport, BulkError> {
    if !addr.ip().is_loopback() {
        return Err(BulkError::Quic(format!("{addr} is not loopback")));
    }
    let mut tls = client_config_from_pem(ca)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| BulkError::Quic(e.to_string()))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| BulkError::Quic(e.to_string()))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let cpu_before = server_pid.and_then(crate::cpu::process_cpu_seconds);
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, 64) {
        let connecting = endpoint
            .connect(addr, "localhost")
            .map_err(|e| BulkError::Quic(e.to_string()))?;
        tasks.push(tokio::spawn(async move {
            let connection = connecting.await.map_err(|e| e.to_string())?;
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let mut bytes = 0u64;
            while Instant::now() < until {
                match recv.read_chunk(1 << 20, true).await {
                    Ok(Some(chunk)) => bytes += chunk.bytes.len() as u64,
                    Ok(None) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            connection.close(0u32.into(), b"done");
            Ok::<_, String>(bytes)
        }));
    }
    let mut bytes = 0;
    for task in tasks {
        bytes += task
            .await
            .map_err(|e| BulkError::Quic(e.to_string()))?
            .map_err(BulkError::Quic)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (
        cpu_before,
        server_pid.and_then(crate::cpu::process_cpu_seconds),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let gb = bytes as f64 / 1e9;
    Ok(BulkReport {
        connections,
        seconds,
        bytes,
        bits_per_s: bytes as f64 * 8.0 / seconds,
        server_cpu_s: cpu,
        server_cpu_s_per_gb: cpu.filter(|_| gb > 0.0).map(|c| c / gb),
    })
}
