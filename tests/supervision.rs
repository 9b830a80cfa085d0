//! Issue 11.16: a panic on one stream's media path (injected through a fail point, the
//! `failpoints` feature) is caught and recovered from like a failed source: counted
//! in `/streams`, the source reopened with backoff, the stream back with the next MSN;
//! the other stream serves throughout.

use std::time::{Duration, Instant};

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/h3client.rs"]
mod h3client;
#[path = "common/rtsp.rs"]
mod rtsp;

use mirror::config::StreamSettings;
use mirror::server::RunningServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_media_thread_is_restarted_and_the_others_keep_serving() {
    // Fail points are process-wide: one scenario at a time.
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    settings.streams = ["one", "two"]
        .into_iter()
        .map(|name| StreamSettings {
            name: name.into(),
            source: "testsrc".into(),
            renditions: Vec::new(),
            policy: None,
            publish_key: None,
            publish_key_sha256: None,
            srt_passphrase: None,
        })
        .collect();
    let server = RunningServer::start(&settings, "unused")
        .await
        .expect("server starts");
    let streams = ["one", "two"].map(|n| server.state.streams.get(n).expect("stream").clone());
    let started = Instant::now();
    while streams.iter().any(|s| s.current().position.open_msn < 2) {
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The next frame either stream takes panics, once.
    fail::cfg("media-step", "1*panic(injected fault)").expect("fail point");
    let started = Instant::now();
    let panicked = loop {
        // Counted first, then recorded as the failure it is (restarts, last error).
        if let Some(i) = streams.iter().position(|s| {
            let status = s.status();
            status.panics > 0 && status.restarts > 0
        }) {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no panic happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    fail::remove("media-step");
    let (hit, other) = (&streams[panicked], &streams[1 - panicked]);
    let status = hit.status();
    assert_eq!(status.panics, 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected fault")),
        "{status:?}"
    );

    // The other stream answers at once all the while; the one hit comes back.
    let client = h3client::H3Client::connect(server.h3_addr, &server.tls).await;
    let other_name = ["one", "two"][1 - panicked];
    let from = hit.current().position.open_msn;
    let other_from = other.current().position.open_msn;
    let started = Instant::now();
    while hit.current().position.open_msn < from + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stream that panicked did not come back: {:?}",
            hit.status()
        );
        let asked = Instant::now();
        let fetched = client.get(&format!("/{other_name}/video.m3u8")).await;
        assert_eq!(fetched.status(), 200);
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        other.current().position.open_msn > other_from,
        "the other stream stopped"
    );
    assert_eq!(other.status().panics, 0);
    assert!(hit.status().restarts >= 1);
}

/// Issue 11.16: a camera that stops sending keyframes (its samples' keyframe flags
/// cleared through a fail point). Before, its segment grew for ever; now a segment
/// that reaches three segment targets without one restarts the source, says so in
/// `/streams`, and no listed segment is longer than that cap and a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_stops_sending_keyframes_does_not_grow_one_segment_for_ever() {
    let _scenario = fail::FailScenario::setup();
    let camera = rtsp::RtspServer::start(
        rtsp::free_port(),
        &[
            "--gop", "30", "--audio", "none", "--width", "320", "--height", "180",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    let server = RunningServer::start_with(
        &settings,
        "cam",
        &mirror::ingest::SourceSpec::parse(&camera.url()),
    )
    .await
    .expect("server starts");
    let stream = server.state.streams.get("cam").expect("stream").clone();
    let started = Instant::now();
    while stream.current().position.open_msn < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            stream.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail::cfg("no-keyframes", "return").expect("fail point");
    let started = Instant::now();
    let status = loop {
        let status = stream.status();
        if status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no keyframe"))
        {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a segment without a keyframe went on: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fail::remove("no-keyframes");
    assert!(status.restarts >= 1, "{status:?}");
    let client = h3client::H3Client::connect(server.h3_addr, &server.tls).await;
    let text = client.get("/cam/video.m3u8").await.text();
    let playlist = mirror::llhls::parse::parse_media_playlist(&text).expect("playlist");
    // The camera's GOP (1 s) is the passthrough segment target.
    let cap = Duration::from_secs(3) + settings.cmaf.part_target();
    for segment in &playlist.segments {
        assert!(
            segment.duration <= cap,
            "segment {} lasts {:?}: {text}",
            segment.msn,
            segment.duration
        );
    }
}
