//! The player page in a real browser: Debian's headless Chromium, driven by
//! playwright-core, plays the test stream with hls.js over HTTP/3 (QUIC forced to the
//! test origin, the self-signed certificate accepted by its SPKI hash), and the page's
//! own resource timing reports `h3`.

mod common;

use std::path::Path;

use common::browser;
use common::fixtures::{loopback_settings, until_segment};
use common::rtsp::{RtspServer, free_port};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;
use mirror::stream::StreamMode;

/// Plays `stream` of `server` in headless Chromium for 24 latency samples and checks
/// what every such run must show: no hls.js error, every request over HTTP/3, and a
/// live latency near the edge. Returns the page's report.
async fn play_and_check(server: &RunningServer, stream: &str) -> serde_json::Value {
    let port = server.h3_addr.port();
    let args = [
        format!("https://127.0.0.1:{port}/?stream={stream}"),
        port.to_string(),
        server.tls.spki_sha256.clone(),
        "24".into(),
        "60".into(),
    ];
    let result = browser::run_script("play.mjs", &args).await;
    assert!(result["error"].is_null(), "hls.js error: {result}");
    let latencies: Vec<f64> = result["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert!(latencies.len() >= 24, "{result}");
    let protocols: Vec<&str> = result["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        protocols,
        ["h3"],
        "every playlist and media request went over HTTP/3: {result}"
    );
    assert_eq!(result["pageProtocol"], "h3");
    // Live latency (wall clock minus capture time of the frame on screen) is sane: the
    // player is at the live edge, not seconds behind. The full measurement is in
    // BENCHMARKS.md.
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median > 0.0 && median < 3.0,
        "median latency {median} s: {result}"
    );
    result
}

/// One browser run at a time: two Chromiums and two encoding servers on two cores starve
/// each other, and latency is what these tests look at.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn page_settings(dir: &Path) -> mirror::config::Settings {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut settings = loopback_settings(dir, 640, 360, 800);
    settings.server.hls_js = Some(root.join("node_modules/hls.js/dist/hls.min.js"));
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_the_test_stream_over_http3_in_chromium() {
    let _alone = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RunningServer::start(&page_settings(dir.path()), "test")
        .await
        .expect("server starts");
    assert!(
        server.state.hls_js.is_some(),
        "hls.js installed by scripts/setup (npm)"
    );
    // Join a stream that has been running for a few segments, as a viewer would.
    until_segment(&server, "test", 3).await;
    play_and_check(&server, "test").await;
}

/// The camera case: an RTSP source passed through (no decode, no encode) plays in
/// hls.js over HTTP/3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_an_rtsp_camera_passed_through_over_http3() {
    let _alone = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(free_port(), &["--codec", "h264", "--audio", "aac"]);
    let server = RunningServer::start_with(
        &page_settings(dir.path()),
        "cam",
        &SourceSpec::Rtsp(camera.url()),
    )
    .await
    .expect("server starts");
    let stream = server.state.streams.get("cam").expect("stream").clone();
    until_segment(&server, "cam", 3).await;
    assert_eq!(stream.status().mode, Some(StreamMode::Passthrough));
    play_and_check(&server, "cam").await;
    drop(camera);
}

/// The status view beside the player: the stream table and four plots fed by
/// `/metrics` and the page's own player, read twice in headless Chromium; the plots have
/// moved in between. The screenshot is kept as the test's artefact in
/// `target/test-artifacts/status-page.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_view_shows_the_streams_and_its_plots_move() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 320, 180, 300);
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server starts");
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artefact directory");
    let screenshot = artifacts.join("status-page.png");
    let port = server.h3_addr.port();
    let args = [
        format!("https://127.0.0.1:{port}/status"),
        port.to_string(),
        server.tls.spki_sha256.clone(),
        screenshot.display().to_string(),
    ];
    let result = browser::run_script("status.mjs", &args).await;
    let (first, second) = (&result["first"], &result["second"]);
    assert!(second["status"]["error"].is_null(), "{result}");
    // The table: the one stream, live, one rendition, this page's player watching it.
    let row = &second["table"][0];
    assert_eq!(row[0], "test", "{result}");
    assert_eq!(row[1], "live", "{result}");
    assert_eq!(row[3], "video.m3u8", "{result}");
    // The test pattern is encoded at 300 kbit/s (what x264 makes of it, over 1 s).
    let bitrate_in: f64 = row[4]
        .as_str()
        .and_then(|cell| cell.strip_suffix(" Mbit/s encoded"))
        .and_then(|mbits| mbits.parse().ok())
        .unwrap_or_else(|| panic!("bitrate in: {result}"));
    assert!((0.02..3.0).contains(&bitrate_in), "{result}");
    assert_ne!(row[5], "0", "the page's own player is a viewer: {result}");
    // Every plot has points, and more of them three seconds later.
    let series = |read: &serde_json::Value, name: &str| -> Vec<f64> {
        read["status"]["series"][name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {result}"))
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect()
    };
    for name in ["latency", "cadence", "announce", "egress"] {
        let (before, after) = (series(first, name), series(second, name));
        assert!(!before.is_empty(), "{name} has no point: {result}");
        assert!(after.len() > before.len(), "{name} did not move: {result}");
    }
    // What they show is what the server did: about five parts a second (200 ms parts),
    // bytes going out, a latency near the edge.
    let cadence = series(second, "cadence");
    let mean = cadence.iter().sum::<f64>() / cadence.len() as f64;
    assert!(
        (3.0..=7.0).contains(&mean),
        "parts per second {mean}: {result}"
    );
    assert!(
        series(second, "egress").iter().any(|&v| v > 0.0),
        "{result}"
    );
    let latency = series(second, "latency");
    assert!(latency.iter().all(|&v| v > 0.0 && v < 5.0), "{result}");
    assert!(screenshot.exists());
}
