//! Short smoke runs of `mirror bench viewers` and `bench flood` against a server on
//! loopback: the tools produce sane numbers (requests made, bytes received, no errors,
//! announce delays measured; a flood meeting the limits). The full runs are for
//! BENCHMARKS.md.

mod common;

use std::time::Duration;

use common::fixtures::loopback_settings;
use mirror::server::RunningServer;
use mirror_loadgen::viewers::{LoadMode, Transport, ViewersOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_bench_reports_sane_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = loopback_settings(dir.path(), 320, 180, 400);
    // Every emulated viewer comes from 127.0.0.1: lift the per-address limits, as for
    // a cache tier in front.
    settings.limits.max_connections_per_address = 1_000_000;
    settings.limits.max_held_per_address = 1_000_000;
    settings.limits.requests_per_second_per_address = 0;
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let options = ViewersOptions {
        mode: LoadMode::Live,
        transport: Transport::Http3,
        url: format!(
            "https://127.0.0.1:{}/test/index.m3u8",
            server.h3_addr.port()
        ),
        viewers: 5,
        duration: Duration::from_secs(3),
        ca: server.tls.cert_path.clone(),
        server_pid: Some(std::process::id()),
        remote_ok: false,
        switch_every: None,
    };
    let report = run(&options).await.expect("runs");
    assert!(report.errors.is_empty(), "{report:?}");
    // Five viewers, 3 s of 200 ms parts: a reload and a part each per part.
    assert!(report.requests >= 5 * 2 * 10, "{report:?}");
    assert!(report.bytes > 0 && report.egress_bits_per_s > 0.0);
    assert!(report.announce_delay_ms.n >= 5 * 10, "{report:?}");
    // Parts are announced within a part of their media end, not seconds late.
    assert!(report.announce_delay_ms.p50.abs() < 200.0, "{report:?}");
    assert!(report.server_cpu_s.is_some_and(|c| c > 0.0));
    // The egress mode: parts fetched back to back.
    let parts = run(&ViewersOptions {
        mode: LoadMode::Parts,
        viewers: 2,
        duration: Duration::from_secs(1),
        ..options.clone()
    })
    .await
    .expect("runs");
    assert!(parts.errors.is_empty(), "{parts:?}");
    assert!(parts.requests >= 10, "{parts:?}");
    // The same over the TCP path (HTTP/2), which shares the UDP port number.
    let h2 = run(&ViewersOptions {
        mode: LoadMode::Parts,
        transport: Transport::Http2,
        viewers: 2,
        duration: Duration::from_secs(1),
        ..options.clone()
    })
    .await
    .expect("runs over HTTP/2");
    assert!(h2.errors.is_empty(), "{h2:?}");
    assert!(h2.requests >= 10, "{h2:?}");
    let refused = ViewersOptions {
        url: "https://10.0.0.1:4443/x.m3u8".into(),
        ..options
    };
    assert!(
        run(&refused).await.is_err(),
        "not loopback: refused before any packet"
    );
}

/// Viewers switching renditions of a ladder the way hls.js does (the new playlist at the
/// position the old one's rendition report gives) get their next part without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_switch_renditions_by_their_reports() {
    use common::fixtures::rendition;
    use mirror::config::StreamSettings;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = loopback_settings(dir.path(), 320, 180, 400);
    settings.streams = vec![StreamSettings {
        name: "ladder".into(),
        source: "testsrc".into(),
        renditions: vec![rendition("a", 320, 180, 400), rendition("b", 160, 90, 150)],
        policy: None,
        publish_key: None,
        publish_key_sha256: None,
        srt_passphrase: None,
    }];
    let server = RunningServer::start_with(&settings, "", &mirror::ingest::SourceSpec::TestPattern)
        .await
        .expect("server");
    // Let both renditions list a few parts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = run(&ViewersOptions {
        mode: LoadMode::Live,
        transport: Transport::Http3,
        url: format!(
            "https://127.0.0.1:{}/ladder/index.m3u8",
            server.h3_addr.port()
        ),
        viewers: 4,
        duration: Duration::from_secs(4),
        ca: server.tls.cert_path.clone(),
        server_pid: None,
        remote_ok: false,
        switch_every: Some(Duration::from_millis(800)),
    })
    .await
    .expect("runs");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.switches >= 4 * 2, "{report:?}");
    // Each completed switch is timed; a viewer's last one may be cut by the run's end.
    assert!(
        report.switch_ms.n as u64 + 4 >= report.switches,
        "{report:?}"
    );
    // The switch lands on the next part of the other rendition: at most a part away.
    assert!(report.switch_ms.p50 < 400.0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_quic_bulk_baseline_moves_bytes() {
    use mirror_loadgen::quic_bulk;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = mirror::tls::load_or_generate(None, None, dir.path()).expect("certificate");
    let endpoint = quic_bulk::source("127.0.0.1:0".parse().expect("addr"), &tls).expect("source");
    let addr = endpoint.local_addr().expect("bound");
    let source = tokio::spawn(quic_bulk::serve(endpoint));
    let report = quic_bulk::read(
        addr,
        &tls.cert_path,
        2,
        Duration::from_millis(500),
        Some(std::process::id()),
    )
    .await
    .expect("reads");
    assert!(report.bytes > 1_000_000, "{report:?}");
    assert!(report.bits_per_s > 0.0 && report.server_cpu_s_per_gb.is_some());
    source.abort();
}

/// `mirror bench flood` from 127.0.0.2 against a server's per-address limits: held
/// reloads answered as the edge moves, the rest refused 429, the connections past the
/// address's budget refused, and the run over on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_bench_meets_the_limits() {
    use mirror_loadgen::flood::{FloodOptions, run as flood};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = loopback_settings(dir.path(), 320, 180, 400);
    settings.limits.max_connections_per_address = 4;
    settings.limits.max_held_per_connection = 16;
    settings.limits.max_held_per_address = 32;
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let options = FloodOptions {
        url: format!(
            "https://127.0.0.1:{}/test/video.m3u8",
            server.h3_addr.port()
        ),
        held: 200,
        connections: 8,
        duration: Duration::from_secs(3),
        bind: std::net::Ipv4Addr::new(127, 0, 0, 2).into(),
        ca: server.tls.cert_path.clone(),
        remote_ok: false,
        ignore_retry_after: false,
    };
    let started = std::time::Instant::now();
    let report = flood(&options).await.expect("runs");
    assert!(started.elapsed() < Duration::from_secs(8), "{report:?}");
    let status = |code| report.statuses.get(&code).copied().unwrap_or(0);
    assert!(status(200) >= 32, "held reloads answered: {report:?}");
    assert!(status(429) >= 100, "the rest refused: {report:?}");
    assert!(report.connects >= 4, "{report:?}");
    assert!(
        report.errors.get("connect").copied().unwrap_or(0) >= 4,
        "connections past the budget refused: {report:?}"
    );
}
