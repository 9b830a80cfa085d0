//! RTSP sources that fail, against a real RTSP server (GStreamer's gst-rtsp-server on
//! loopback): a server that dies and comes back, sources that cannot be played, a
//! camera that hangs, and one that wants a login.

mod common;

use std::time::{Duration, Instant};

use common::camera::{Served, decode_segment, map_uri, segment_uris, serve_camera, wait_segments};
use common::fixtures::{loopback_settings, public_stream};
use common::h3client::H3Client;
use common::rtsp::{RtspServer, free_port};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;
use mirror::stream::SourceState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_and_returns_gives_a_discontinuity_and_the_next_msn() {
    let port = free_port();
    let Served {
        dir,
        camera,
        server,
        client,
    } = serve_camera(port, &["--codec", "h264", "--audio", "aac"]).await;
    wait_segments(&client, "/cam/video.m3u8", 2).await;
    let stream = server.state.streams.get("cam").expect("stream").clone();

    camera.kill();
    let before = stream.current().position.open_msn;
    let started = Instant::now();
    let blocked = client
        .get(&format!("/cam/video.m3u8?_HLS_msn={}", before + 1))
        .await;
    assert_eq!(
        blocked.status(),
        503,
        "a blocked reload ends, it does not hang"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within three target durations: {:?}",
        started.elapsed()
    );
    let status = stream.status();
    assert_eq!(status.state, SourceState::Retrying);
    assert!(status.last_error.is_some());
    let down = client.get("/cam/video.m3u8").await;
    assert_eq!(down.status(), 200);
    // Nothing is hinted while the source is down: what comes next is after a break.
    assert!(!down.text().contains("PRELOAD-HINT"), "{}", down.text());
    let stalled = stream.current().position.open_msn;

    // It comes back reconfigured, at another picture size: new parameter sets, so a new
    // init segment from the segment after the discontinuity on.
    let camera = RtspServer::start(
        port,
        &[
            "--codec", "h264", "--audio", "aac", "--width", "480", "--height", "270",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream.current().position.open_msn < stalled + 2 {
        assert!(Instant::now() < deadline, "the stream did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let playlist = client.get("/cam/video.m3u8").await.text();
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    // MSNs go on: the segment after the break is the next number.
    let after: Vec<u64> = segment_uris(&playlist)
        .iter()
        .filter_map(|u| u.rsplit('-').next()?.strip_suffix(".m4s")?.parse().ok())
        .collect();
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    assert!(*after.last().unwrap_or(&0) >= stalled, "{after:?}");
    // The segment right after the discontinuity has its own EXT-X-MAP and decodes with
    // it, at the new size.
    let lines: Vec<&str> = playlist.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "#EXT-X-DISCONTINUITY")
        .expect("tag");
    let new_map = lines[at + 1]
        .strip_prefix("#EXT-X-MAP:URI=\"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("EXT-X-MAP after the discontinuity: {playlist}"));
    assert!(new_map.ends_with("-init1.mp4"), "{new_map}");
    assert_ne!(
        new_map,
        map_uri(&playlist),
        "the old map still heads the playlist"
    );
    let first_after = lines[at..]
        .iter()
        .find(|l| !l.starts_with('#'))
        .expect("a segment after the break");
    let frames = decode_segment(&client, dir.path(), "cam", new_map, first_after).await;
    assert!(
        frames
            .iter()
            .any(|f| f.media_type == "video" && f.key_frame)
    );
    let size = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(dir.path().join(first_after))
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "480,270");
    // The multivariant playlist describes the camera as it is now.
    let multivariant = client.get("/cam/index.m3u8").await.text();
    assert!(
        multivariant.contains("RESOLUTION=480x270"),
        "{multivariant}"
    );
    assert!(stream.status().restarts >= 1);
    assert_eq!(stream.status().state, SourceState::Live);
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_are_retried_and_leave_other_streams_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(free_port(), &["--codec", "vp8", "--audio", "none"]);
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    let stream = |name: &str, source: String| public_stream(name, &source, Vec::new());
    settings.streams = vec![
        stream("good", "testsrc".into()),
        stream("refused", format!("rtsp://127.0.0.1:{}/cam", free_port())),
        stream(
            "wrongpath",
            format!("rtsp://127.0.0.1:{}/nothing-here", camera.port),
        ),
        stream("vp8", camera.url()),
    ];
    settings.validate().expect("valid settings");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("bad network sources do not stop start-up");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let good = server.state.streams.get("good").expect("stream").clone();
    let mut updates = good.subscribe();
    let deadline = Instant::now() + Duration::from_secs(15);
    while updates.borrow_and_update().position.open_msn < 4 {
        assert!(Instant::now() < deadline, "the good stream stalled");
        tokio::time::timeout(Duration::from_secs(5), updates.changed())
            .await
            .expect("the good stream keeps publishing")
            .expect("running");
    }
    for (name, expected) in [
        ("refused", "refused"),
        ("wrongpath", "404"),
        ("vp8", "no H.264 or H.265 video stream"),
    ] {
        // Backoff starts at 0.5 s: a second attempt comes within a few seconds. A
        // stream between attempts is Retrying, and Opening again when its backoff ends
        // (the last error kept), so wait to see it Retrying after two attempts.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let status = server.state.streams.get(name).expect("stream").status();
            if status.restarts >= 2 && status.state == SourceState::Retrying {
                break status;
            }
            assert_ne!(status.state, SourceState::Live, "{name}: {status:?}");
            assert!(
                Instant::now() < deadline,
                "{name} is not retried: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let error = status.last_error.unwrap_or_default();
        assert!(
            error.to_lowercase().contains(&expected.to_lowercase()),
            "{name}: {error}"
        );
        assert_eq!(
            client.get(&format!("/{name}/index.m3u8")).await.status(),
            503
        );
    }
    // Three streams retry on their own backoffs: /streams shows one of them retrying.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let json = client.get("/streams").await.text();
        if json.contains("\"state\":\"retrying\"") {
            break;
        }
        assert!(Instant::now() < deadline, "{json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("/good/index.m3u8").await.status(), 200);

    // A local file that is not media is a configuration mistake: start-up stops.
    let not_media = dir.path().join("notes.txt");
    std::fs::write(&not_media, "not a video").expect("write");
    let error = RunningServer::start_with(
        &loopback_settings(dir.path(), 320, 240, 400),
        "file",
        &SourceSpec::File(not_media),
    )
    .await
    .err()
    .expect("refused");
    assert!(error.to_string().contains("notes.txt"), "{error}");
}

/// The watchdog: a camera that hangs (connection open, nothing sent) is noticed within
/// a few PART-TARGETs and reconnected when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_hangs_is_caught_by_the_watchdog_and_reconnected() {
    let Served {
        dir: _dir,
        camera,
        server,
        client,
    } = serve_camera(free_port(), &["--codec", "h264", "--audio", "aac"]).await;
    wait_segments(&client, "/cam/video.m3u8", 2).await;
    let stream = server.state.streams.get("cam").expect("stream").clone();

    camera.freeze();
    let frozen_at = Instant::now();
    while stream.status().state != SourceState::Retrying {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(3),
            "a silent source is noticed within three PART-TARGETs and then some"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = stream.status().last_error.unwrap_or_default();
    assert!(error.contains("no media for"), "{error}");
    let stalled = stream.current().position.open_msn;

    camera.thaw();
    let deadline = Instant::now() + Duration::from_secs(40);
    while stream.current().position.open_msn < stalled + 2 {
        assert!(
            Instant::now() < deadline,
            "not reconnected: {:?}",
            stream.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let playlist = client.get("/cam/video.m3u8").await.text();
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    assert_eq!(
        playlist.matches("#EXT-X-MAP:").count(),
        1,
        "same parameters, same init segment: {playlist}"
    );
    drop(camera);
}

/// A camera that wants a login: the credentials come from the URL (percent-encoded),
/// and never show in the status; without them the source is refused and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(
        free_port(),
        &[
            "--audio",
            "none",
            "--user",
            "viewer",
            "--password",
            "s@cret",
        ],
    );
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    let stream = |name: &str, source: String| public_stream(name, &source, Vec::new());
    settings.streams = vec![
        stream(
            "with",
            format!("rtsp://viewer:s%40cret@127.0.0.1:{}/cam", camera.port),
        ),
        stream("without", camera.url()),
    ];
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    wait_segments(&client, "/with/video.m3u8", 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .state
        .streams
        .get("without")
        .expect("stream")
        .status()
        .restarts
        < 1
    {
        assert!(Instant::now() < deadline, "not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = server
        .state
        .streams
        .get("without")
        .expect("stream")
        .status();
    let error = refused.last_error.unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    let json = client.get("/streams").await.text();
    assert!(
        !json.contains("s@cret") && !json.contains("s%40cret"),
        "{json}"
    );
}
