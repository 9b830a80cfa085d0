//! Hostile clients, over real clients on all three protocols (HTTP/3 with quinn and h3,
//! HTTP/2 and HTTP/1.1 with curl, rustls and raw sockets), against one live server with
//! tight `[limits]`. Each case comes from its own loopback address (127.0.0.N: all of
//! 127/8 is loopback), so that per-address limits and token buckets of one case do not
//! touch the next. While each case runs, a viewer on 127.0.0.2 reloads the playlist
//! every 100 ms: every one of its requests must answer within a second. Afterwards the
//! process's descriptors and memory must be back near where they started.
//!
//! One test function runs the cases in order: descriptor and memory counts are the
//! process's, so nothing else may run beside them.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mirror::config::Settings;
use mirror::server::RunningServer;
use mirror::tls::{TlsMaterial, client_config_trusting};
use mirror_loadgen::client::H3Client;

#[path = "common/fixtures.rs"]
mod fixtures;

#[path = "hostile/requests.rs"]
mod requests;
#[path = "hostile/transport.rs"]
mod transport;

/// The stream every case asks for.
pub(crate) const STREAM: &str = "test";

/// The server under attack, and how to reach it.
pub(crate) struct Target {
    pub(crate) server: RunningServer,
    pub(crate) dir: tempfile::TempDir,
}

impl Target {
    pub(crate) fn h3_addr(&self) -> SocketAddr {
        self.server.h3_addr
    }

    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        self.server.tcp_addr
    }

    pub(crate) fn tls(&self) -> &TlsMaterial {
        &self.server.tls
    }

    /// A QUIC client endpoint on `source`, with `transport` if given.
    pub(crate) fn quic_endpoint(
        &self,
        source: IpAddr,
        transport: Option<quinn::TransportConfig>,
    ) -> quinn::Endpoint {
        let tls = client_config_trusting(self.tls(), &[b"h3"]).unwrap();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        if let Some(transport) = transport {
            config.transport_config(Arc::new(transport));
        }
        let mut endpoint = quinn::Endpoint::client(SocketAddr::new(source, 0)).unwrap();
        endpoint.set_default_client_config(config);
        endpoint
    }

    /// A QUIC connection from `source` (the endpoint must outlive it).
    pub(crate) async fn quic_connect(
        &self,
        source: IpAddr,
        transport: Option<quinn::TransportConfig>,
    ) -> (quinn::Endpoint, quinn::Connection) {
        let endpoint = self.quic_endpoint(source, transport);
        let connection = endpoint
            .connect(self.h3_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        (endpoint, connection)
    }

    /// An HTTP/3 client from `source`.
    pub(crate) async fn h3_from(&self, source: IpAddr) -> H3Client {
        let endpoint = self.quic_endpoint(source, None);
        H3Client::connect_on(&endpoint, self.h3_addr(), "localhost")
            .await
            .unwrap()
    }

    /// A rendition's playlist now.
    pub(crate) async fn playlist(&self, client: &H3Client) -> mirror::llhls::parse::ListedPlaylist {
        let text = client
            .get(&format!("/{STREAM}/video.m3u8"))
            .await
            .unwrap()
            .text();
        mirror::llhls::parse::parse_media_playlist(&text).unwrap()
    }
}

/// 127.0.0.`n`.
pub(crate) fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// What curl got.
#[derive(Debug)]
pub(crate) struct CurlResult {
    /// The status, 0 when curl got no response.
    pub(crate) status: u16,
    /// The response head, lower-cased.
    pub(crate) head: String,
    /// curl's exit code.
    pub(crate) exit: i32,
}

/// curl from `source` with `args` (`--http1.1` or `--http2` among them) to `path`.
pub(crate) async fn curl(target: &Target, source: IpAddr, args: &[&str], path: &str) -> CurlResult {
    let output = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-o", "/dev/null", "-D", "-"])
        .args(["--interface", &source.to_string()])
        .args(args)
        .arg(format!(
            "https://127.0.0.1:{}{path}",
            target.tcp_addr().port()
        ))
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&output.stdout).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    CurlResult {
        status,
        head,
        exit: output.status.code().unwrap_or(-1),
    }
}

type Case = for<'a> fn(&'a Target) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Reloads the playlist every 100 ms from 127.0.0.2 until stopped; the slowest answer.
async fn health(target: Arc<Target>, stop: Arc<AtomicBool>) -> Duration {
    let client = target.h3_from(source(2)).await;
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let fetched = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(&format!("/{STREAM}/video.m3u8")),
        )
        .await;
        let took = started.elapsed();
        match fetched {
            Ok(Ok(fetched)) => assert_eq!(fetched.status(), 200, "health request refused"),
            Ok(Err(error)) => panic!("health request failed: {error}"),
            Err(_) => panic!("health request unanswered for 5 s"),
        }
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// The limits under test: small enough that a case reaches each of them quickly.
fn settings(dir: &std::path::Path) -> Settings {
    let mut settings = fixtures::loopback_settings(dir, 320, 180, 400);
    let limits = &mut settings.limits;
    limits.max_connections = 8;
    limits.max_connections_per_address = 4;
    limits.max_streams_per_connection = 100;
    limits.idle_timeout_ms = 2000;
    limits.handshake_timeout_ms = 1000;
    limits.header_timeout_ms = 1000;
    limits.send_timeout_ms = 1000;
    limits.max_held_per_connection = 16;
    limits.max_held_per_address = 32;
    // A burst the held-request case stays within, a rate the rate case exceeds.
    limits.requests_per_second_per_address = 50;
    limits.request_burst_per_address = 2500;
    limits.quic_retry_threshold = 2;
    // More than the rate case earns, less than the cut-off case does in a second.
    limits.refusals_before_cut_off = 1000;
    limits.cut_off_ms = 1500;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_on_all_three_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&settings(dir.path()), STREAM)
        .await
        .unwrap();
    let target = Arc::new(Target { server, dir });
    // Wait for the first media, then take the process's measure.
    let warm = target.h3_from(source(3)).await;
    let started = Instant::now();
    while target.playlist(&warm).await.segments.len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(warm);
    let (fds_before, rss_before) = (open_fds(), rss());

    let cases: &[(&str, Case)] = &[
        ("plain HTTP on the TLS port", |t| {
            Box::pin(transport::plain_http_on_the_tls_port(t))
        }),
        ("connection flood", |t| {
            Box::pin(transport::connection_flood(t))
        }),
        ("QUIC connection budget", |t| {
            Box::pin(transport::quic_connection_budget(t))
        }),
        ("silent and idle connections", |t| {
            Box::pin(transport::silent_connections(t))
        }),
        ("slow readers", |t| Box::pin(transport::slow_readers(t))),
        ("header limits", |t| Box::pin(transport::header_limits(t))),
        ("control stream flood", |t| {
            Box::pin(transport::control_stream_flood(t))
        }),
        ("spoofed handshakes", |t| {
            Box::pin(transport::unanswered_handshakes(t))
        }),
        ("garbage datagrams", |t| {
            Box::pin(transport::garbage_datagrams(t))
        }),
        ("rapid stream resets", |t| {
            Box::pin(transport::rapid_resets(t))
        }),
        ("held requests", |t| Box::pin(requests::held_requests(t))),
        ("request rate", |t| Box::pin(requests::request_rate(t))),
        ("bad requests", |t| Box::pin(requests::bad_requests(t))),
        ("cut off", |t| Box::pin(requests::cut_off(t))),
    ];
    // HOSTILE_CASE=<part of a name> runs only the matching cases.
    let only = std::env::var("HOSTILE_CASE").ok();
    for (name, case) in cases {
        if only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let probe = tokio::spawn(health(target.clone(), stop.clone()));
        eprintln!("case: {name}");
        case(&target).await;
        stop.store(true, Ordering::Relaxed);
        let slowest = probe.await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            slowest < Duration::from_secs(1),
            "{name}: a health request took {slowest:?}"
        );
        eprintln!("case: {name}: ok, slowest health request {slowest:?}");
    }

    // Everything a case opened has been dropped; the server closes what it held after
    // its timeouts (2 s idle at most).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (fds_after, rss_after) = (open_fds(), rss());
    eprintln!("fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after}");
    assert!(
        fds_after <= fds_before + 16,
        "descriptors not released: {fds_before} before, {fds_after} after"
    );
    assert!(
        rss_after <= rss_before + (64 << 20),
        "memory not released: {rss_before} before, {rss_after} after"
    );
}
