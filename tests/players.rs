//! Stock third-party players, embedded as a site owner would (each player's own API, its
//! documented low-latency setting on, nothing else tuned), play the test stream over
//! HTTP/3 in Debian's headless Chromium: hls.js, Shaka Player, and video.js with
//! @videojs/http-streaming (VHS), all pinned in package.json. Each must start, stay
//! near the live edge without stalling, and make every request over HTTP/3.
//! `scripts/measure-latency --player NAME` takes the same figures over minutes
//! (BENCHMARKS.md).

mod common;

use std::time::Duration;

use common::browser;
use common::fixtures::loopback_settings;
use mirror::server::RunningServer;

/// One browser run at a time: two Chromiums and two encoding servers on two cores starve
/// each other, and latency is what these tests look at.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each player plays after its first frame.
const PLAY_SECONDS: u32 = 30;

/// The player's report after [`PLAY_SECONDS`] on a test stream that has run for a few
/// segments, as a viewer joining it would find it.
async fn play(player: &str) -> serde_json::Value {
    let _alone = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 640, 360, 800);
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server starts");
    let mut updates = server
        .state
        .streams
        .get("test")
        .expect("stream")
        .subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while updates.borrow_and_update().position.open_msn < 3 {
        tokio::time::timeout_at(deadline, updates.changed())
            .await
            .expect("the test stream starts")
            .expect("stream runs");
    }
    let port = server.h3_addr.port();
    let args = [
        player.to_string(),
        format!("https://127.0.0.1:{port}/test/index.m3u8"),
        port.to_string(),
        server.tls.spki_sha256.clone(),
        PLAY_SECONDS.to_string(),
    ];
    browser::run_script("players.mjs", &args).await
}

/// What every player must show; returns the median latency.
fn check(result: &serde_json::Value, median_bound_s: f64) -> f64 {
    assert!(result["error"].is_null(), "player error: {result}");
    assert_eq!(result["failed"], serde_json::json!([]), "{result}");
    assert_eq!(
        result["protocols"],
        serde_json::json!(["h3"]),
        "every playlist and media response came over HTTP/3: {result}"
    );
    let mut latencies: Vec<f64> = result["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    // Four samples a second once playing.
    assert!(
        latencies.len() >= (PLAY_SECONDS as usize) * 3,
        "{} samples: {result}",
        latencies.len()
    );
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    assert!(
        median > 0.0 && median < median_bound_s,
        "median latency {median} s, bound {median_bound_s} s: {result}"
    );
    assert_eq!(
        result["stalls"], 0,
        "stalls after the first frame: {result}"
    );
    median
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_with_its_stock_low_latency_mode_plays_near_the_edge() {
    let result = play("hlsjs").await;
    check(&result, 1.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaka_player_with_its_stock_low_latency_mode_plays_near_the_edge() {
    let result = play("shaka").await;
    check(&result, 1.5);
}

/// VHS asks again for a blocking playlist it was just answered when that answer ended
/// at a segment boundary. Answered from the browser's cache (Mirror's blocking answers
/// used to be `max-age=6`), it got the same playlist for six seconds, stalled, and
/// stayed 6 s behind; Mirror's boundary answers are kept by no cache now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_js_vhs_with_its_stock_low_latency_mode_plays_near_the_edge() {
    let result = play("vhs").await;
    assert_eq!(
        result["cachedPlaylists"], 0,
        "no playlist came from the browser's cache: {result}"
    );
    check(&result, 2.0);
}
