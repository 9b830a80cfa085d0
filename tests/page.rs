//! The player page in a real browser: Debian's headless Chromium, driven by
//! playwright-core, plays the test stream with hls.js over HTTP/3 (QUIC forced to the
//! test origin, the self-signed certificate accepted by its SPKI hash), and the page's
//! own resource timing reports `h3`.

mod common;

use std::path::Path;

use common::fixtures::loopback_settings;

use mirror::server::RunningServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_the_test_stream_over_http3_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = loopback_settings(dir.path(), 640, 360, 800);
    settings.server.hls_js = root.join("node_modules/hls.js/dist/hls.min.js");
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server starts");
    assert!(
        server.state.hls_js.is_some(),
        "hls.js installed by scripts/setup (npm)"
    );
    // Join a stream that has been running for a few segments, as a viewer would.
    let mut updates = server.state.streams["test"].subscribe();
    while updates.borrow_and_update().position.open_msn < 3 {
        updates.changed().await.expect("stream runs");
    }
    let port = server.h3_addr.port();
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/play.mjs"))
        .arg(format!("https://127.0.0.1:{port}/"))
        .arg(port.to_string())
        .arg(&server.tls.spki_sha256)
        .args(["24", "60"])
        .current_dir(root)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("JSON from the page");
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
}
