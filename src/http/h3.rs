//! The HTTP/3 front: quinn (QUIC) + h3 over Mirror's own transport adapter
//! ([`super::quic`]), ALPN `h3`. Each connection is a task, each request a task; the
//! handler's response is sent chunk by chunk as it comes, its chunks handed to quinn
//! without copying.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use h3::server::RequestStream;

use super::quic::{self, BodyHandoff};
use super::{AppState, handle};

/// Connection limits of the listeners (QUIC, and the same for TCP).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most concurrent connections; more are refused.
    pub max_connections: usize,
    /// Most concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
}

/// The quinn server configuration for `tls` with `limits`.
pub fn server_config(
    tls: rustls::ServerConfig,
    limits: ConnectionLimits,
) -> Result<quinn::ServerConfig, quinn::crypto::rustls::NoInitialCipherSuite> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(limits.max_streams_per_connection.into());
    // HTTP/3 needs three unidirectional streams each way (control, QPACK encoder and
    // decoder) and clients may open a few more.
    transport.max_concurrent_uni_streams(8u32.into());
    transport.max_idle_timeout(limits.idle_timeout.try_into().ok());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Accepts connections on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<AppState>, limits: ConnectionLimits) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            tracing::warn!(remote = %incoming.remote_address(), "connection limit reached, refused");
            incoming.refuse();
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        let open = open.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(incoming, state).await {
                tracing::debug!(%error, "HTTP/3 connection ended");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(
    incoming: quinn::Incoming,
    state: Arc<AppState>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let connection = incoming.await?;
    let quinn = connection.clone();
    let bodies = BodyHandoff::default();
    let mut h3 = h3::server::builder()
        .build::<_, Bytes>(quic::Connection::new(connection, bodies.clone()))
        .await?;
    let mut requests: u64 = 0;
    let ended = loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                requests += 1;
                let state = state.clone();
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((request, stream)) => {
                            if let Err(error) = respond(&state, request, stream, &bodies).await {
                                tracing::debug!(%error, "HTTP/3 request ended early");
                            }
                        }
                        Err(error) => tracing::debug!(%error, "bad HTTP/3 request"),
                    }
                });
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(error.into()),
        }
    };
    log_connection_stats(&quinn, requests);
    ended
}

/// What a connection cost in packets, at debug level (`RUST_LOG=mirror::http::h3=debug`):
/// BENCHMARKS.md's datagrams per request come from these.
fn log_connection_stats(connection: &quinn::Connection, requests: u64) {
    let stats = connection.stats();
    tracing::debug!(
        remote = %connection.remote_address(),
        requests,
        datagrams_sent = stats.udp_tx.datagrams,
        sendmsg_calls = stats.udp_tx.ios,
        bytes_sent = stats.udp_tx.bytes,
        datagrams_received = stats.udp_rx.datagrams,
        stream_frames_sent = stats.frame_tx.stream,
        stop_sending_sent = stats.frame_tx.stop_sending,
        "HTTP/3 connection ended"
    );
}

async fn respond<S>(
    state: &AppState,
    request: http::Request<()>,
    mut stream: RequestStream<S, Bytes>,
    bodies: &BodyHandoff,
) -> Result<(), h3::error::StreamError>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let response = handle(state, &request).await;
    let (parts, body) = response.into_parts();
    stream
        .send_response(http::Response::from_parts(parts, ()))
        .await?;
    let mut chunks = body.into_chunks();
    while let Some(chunk) = chunks.next().await {
        // The transport sends this very `Bytes`, not a copy (see `quic`).
        bodies.offer(stream.id(), &chunk);
        stream.send_data(chunk).await?;
    }
    stream.finish().await?;
    // RFC 9114 4.1: the response is complete and needs nothing more of the request. A
    // request whose end has already arrived (a GET's usually has) is read to that end,
    // which closes the stream without sending anything; otherwise the client is asked to
    // stop sending, with H3_NO_ERROR (not quinn's default code 0, which a client reads as
    // an abort). That STOP_SENDING was sent for nearly every request: a frame each end
    // had to build, track and acknowledge.
    let request_ended = matches!(stream.recv_data().now_or_never(), Some(Ok(None)));
    if !request_ended {
        stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    }
    Ok(())
}
