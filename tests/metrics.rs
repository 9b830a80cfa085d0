//! `/metrics`, `/healthz` and `/readyz` of a live server: scraped while real clients
//! play over HTTP/3 (quinn + h3) and curl asks over HTTP/2 and HTTP/1.1; the text is
//! checked by Prometheus's own parser and linter (`promtool check metrics`), and the
//! counters must move by what the clients did.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/h3client.rs"]
mod h3client;
#[path = "common/rtsp.rs"]
mod rtsp;

use h3client::H3Client;

/// Each sample of a scrape in the Prometheus text format, by its name with labels as
/// written (`name{a="b"}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// promtool's verdict on `text`: its parser and its lint of the naming conventions.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by scripts/setup)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writes");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// curl over `protocol` (`--http2`, `--http1.1`): status and body.
fn curl(server: &RunningServer, protocol: &str, path: &str) -> (u16, String) {
    let output = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", protocol, "-w", "\n%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{}{path}",
            server.tcp_addr.port()
        ))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (status.trim().parse().expect("a status"), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_clients_did_and_promtool_accepts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    let server = RunningServer::start_with(&settings, "test", &SourceSpec::TestPattern)
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let started = Instant::now();
    let playlist = loop {
        let fetched = client.get("/test/video.m3u8").await;
        if fetched.status() == 200
            && let Some(playlist) = mirror::llhls::parse::parse_media_playlist(&fetched.text())
            && playlist.segments.len() >= 2
        {
            break playlist;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, before_text) = curl(&server, "--http2", "/metrics");
    assert_eq!(status, 200);
    promtool_check(&before_text);
    let before = samples(&before_text);
    let scraped_at = Instant::now();

    // Over HTTP/3: every part listed, and five blocking reloads for the next part.
    let parts: Vec<String> = playlist
        .segments
        .iter()
        .flat_map(|s| s.parts.iter().map(|p| p.uri.clone()))
        .collect();
    for part in &parts {
        assert_eq!(client.get(&format!("/test/{part}")).await.status(), 200);
    }
    let mut reloads = 0;
    while reloads < 5 {
        let current = mirror::llhls::parse::parse_media_playlist(
            &client.get("/test/video.m3u8").await.text(),
        )
        .expect("a playlist");
        let (msn, part) = current.next_part();
        let fetched = client
            .get(&format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        assert_eq!(fetched.status(), 200);
        reloads += 1;
    }
    // Over HTTP/2 and HTTP/1.1: the playlist twice each, one unknown name.
    for protocol in ["--http2", "--http1.1"] {
        for _ in 0..2 {
            assert_eq!(curl(&server, protocol, "/test/video.m3u8").0, 200);
        }
    }
    assert_eq!(curl(&server, "--http1.1", "/test/nothing.m4s").0, 404);

    let (status, after_text) = curl(&server, "--http2", "/metrics");
    assert_eq!(status, 200);
    promtool_check(&after_text);
    let after = samples(&after_text);
    let moved = |name: &str| value(&after, name) - value(&before, name);
    let requests = |protocol: &str, route: &str, class: &str| {
        moved(&format!(
            "mirror_http_requests_total{{protocol=\"{protocol}\",route=\"{route}\",status=\"{class}\"}}"
        ))
    };
    assert_eq!(
        requests("h3", "part", "2xx"),
        parts.len() as f64,
        "{after_text}"
    );
    assert_eq!(requests("h3", "blocking_playlist", "2xx"), 5.0);
    assert_eq!(requests("h2", "playlist", "2xx"), 2.0);
    assert_eq!(requests("h1", "playlist", "2xx"), 2.0);
    assert_eq!(requests("h1", "other", "4xx"), 1.0, "the unknown name");
    // The first scrape's own response, over HTTP/2.
    assert_eq!(requests("h2", "other", "2xx"), 1.0);
    assert!(
        moved("mirror_http_response_body_bytes_total{protocol=\"h3\"}") > 10_000.0,
        "parts are bytes"
    );
    assert!(moved("mirror_store_hits_total") >= parts.len() as f64);
    assert!(
        moved("mirror_parts_total{stream=\"test\",rendition=\"video\"}") >= 5.0,
        "five blocking reloads waited for five new parts"
    );
    assert_eq!(
        moved("mirror_http_wake_up_seconds_count{protocol=\"h3\"}"),
        5.0,
        "each blocking reload was held, then woken: {after_text}"
    );
    // The test pattern's frames into the rendition, at its frame rate, between scrapes.
    let fps = moved("mirror_rendition_video_frames_total{stream=\"test\",rendition=\"video\"}")
        / scraped_at.elapsed().as_secs_f64();
    let configured = f64::from(settings.source.fps);
    assert!(
        (configured * 0.6..configured * 1.4).contains(&fps),
        "{fps} frames/s into the rendition, the source makes {configured}"
    );
    assert!(moved("mirror_rendition_media_bytes_total{stream=\"test\",rendition=\"video\"}") > 0.0);
    assert!(
        after.contains_key("mirror_encoder_queued_frames{stream=\"test\",rendition=\"video\"}"),
        "{after_text}"
    );
    assert_eq!(
        value(
            &after,
            "mirror_viewers{stream=\"test\",rendition=\"video\"}"
        ),
        1.0,
        "one HTTP/3 connection fetched parts"
    );
    assert_eq!(
        value(&after, "mirror_http_open_connections{protocol=\"h3\"}"),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "mirror_source_state{stream=\"test\",state=\"live\"}"
        ),
        1.0
    );
    assert!(value(&after, "mirror_quic_handshakes_total") >= 1.0);

    // OpenMetrics for a scraper that asks for it.
    let openmetrics = client
        .request(
            http::Method::GET,
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert!(
        openmetrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        openmetrics.header("content-type")
    );
    assert!(openmetrics.text().trim_end().ends_with("# EOF"));

    assert_eq!(curl(&server, "--http1.1", "/healthz").0, 200);
    let (status, body) = curl(&server, "--http1.1", "/readyz");
    assert_eq!(status, 200, "{body}");
}

/// A camera's stream: the bytes its source delivered, its jitter buffer, and per
/// rendition the bytes and frames that went in and the encoder's queue, one rendition
/// passed through and one transcoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cameras_bytes_in_frames_and_encoder_queue_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = rtsp::RtspServer::start(rtsp::free_port(), &["--codec", "h264", "--audio", "aac"]);
    let mut settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    settings.streams = vec![fixtures::public_stream(
        "cam",
        &camera.url(),
        vec![
            fixtures::copy_rendition("source"),
            fixtures::rendition("small", 320, 180, 300),
        ],
    )];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server");
    let started = Instant::now();
    while !server
        .state
        .streams
        .get("cam")
        .expect("cam")
        .current()
        .has_media
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, before_text) = curl(&server, "--http1.1", "/metrics");
    let scraped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, after_text) = curl(&server, "--http1.1", "/metrics");
    assert_eq!(status, 200);
    promtool_check(&after_text);
    let elapsed = scraped_at.elapsed().as_secs_f64();
    let (before, after) = (samples(&before_text), samples(&after_text));
    let rate = |name: &str| (value(&after, name) - value(&before, name)) / elapsed;
    let rendition = |family: &str, rendition: &str| {
        format!("{family}{{stream=\"cam\",rendition=\"{rendition}\"}}")
    };

    let source_bytes = rate("mirror_source_bytes_total{stream=\"cam\"}");
    assert!(source_bytes > 1_000.0, "{after_text}");
    // The passed-through rendition takes every sample the camera sends.
    let copied = rate(&rendition("mirror_rendition_media_bytes_total", "source"));
    assert!(
        (copied / source_bytes - 1.0).abs() < 0.15,
        "source {source_bytes} B/s, copied {copied} B/s"
    );
    for name in ["source", "small"] {
        let fps = rate(&rendition("mirror_rendition_video_frames_total", name));
        assert!(
            (20.0..40.0).contains(&fps),
            "{name}: {fps} frames/s of a 30 fps camera"
        );
    }
    assert_eq!(
        value(&after, &rendition("mirror_encoder_queued_frames", "source")),
        0.0,
        "nothing encodes the passed-through rendition"
    );
    assert!(
        after.contains_key(&rendition("mirror_encoder_queued_frames", "small")),
        "{after_text}"
    );
    assert!(
        value(
            &after,
            "mirror_jitter_buffer_capacity_samples{stream=\"cam\"}"
        ) > 0.0,
        "{after_text}"
    );
    assert!(after.contains_key("mirror_jitter_buffer_dropped_gops_total{stream=\"cam\"}"));
}

/// `/readyz` names a stream whose source never delivers, and says 503; `/healthz`
/// still says the process serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_stream_that_is_not_publishing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    // Nothing listens on port 9: the source fails, and is retried.
    let source = SourceSpec::Rtsp("rtsp://127.0.0.1:9/absent".into());
    let server = RunningServer::start_with(&settings, "dark", &source)
        .await
        .expect("server");
    let (status, body) = curl(&server, "--http1.1", "/readyz");
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["streams_not_publishing"], serde_json::json!(["dark"]));
    assert_eq!(curl(&server, "--http2", "/healthz").0, 200);
}
