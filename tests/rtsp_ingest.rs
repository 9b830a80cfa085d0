//! RTSP ingest against a real RTSP server (GStreamer's gst-rtsp-server on loopback):
//! passthrough of H.264+AAC, HEVC and G.711 (made AAC) fetched over HTTP/3 and decoded
//! by ffprobe, RTP over UDP, a camera ladder, a long camera GOP, and recording. Sources
//! that fail are in `rtsp_sources.rs`.

mod common;

use std::time::Duration;

use common::camera::{
    Served, decode_segment, map_uri, read, segment_uris, serve_camera, wait_ok, wait_segments,
};
use common::fixtures::{copy_rendition, loopback_settings, public_stream, rendition};
use common::h3client::H3Client;
use common::rtsp::{RtspServer, free_port};
use common::{decode_errors, probe_frames};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;
use mirror::stream::{SourceState, StreamMode};

/// CPU seconds this process has used (user + system).
fn process_cpu_seconds() -> f64 {
    mirror_loadgen::cpu::process_cpu_seconds(std::process::id()).expect("own CPU time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_aac_are_passed_through_and_decode() {
    let Served {
        dir,
        camera,
        server,
        client,
    } = serve_camera(free_port(), &["--codec", "h264", "--audio", "aac"]).await;

    let multivariant = wait_ok(&client, "/cam/index.m3u8", Duration::from_secs(20)).await;
    assert!(
        multivariant.contains("CODECS=\"avc1.") && multivariant.contains(",mp4a.40.2\""),
        "{multivariant}"
    );
    assert!(
        multivariant.contains("RESOLUTION=640x360"),
        "{multivariant}"
    );
    assert!(multivariant.contains("FRAME-RATE=30\n"), "{multivariant}");
    assert!(!multivariant.contains("BANDWIDTH=0,"), "{multivariant}");

    let playlist = wait_segments(&client, "/cam/video.m3u8", 3).await;
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n"), "{playlist}");
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{playlist}");
    assert!(
        playlist.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"),
        "{playlist}"
    );
    let status = &server.state.streams.get("cam").expect("stream").status();
    assert_eq!(status.mode, Some(StreamMode::Passthrough));
    assert_eq!(status.state, SourceState::Live);

    // A complete segment: the source's 1 s GOP, 30 frames, an IDR first, with sound.
    let segments = segment_uris(&playlist);
    let segment = &segments[segments.len() - 2];
    let frames = decode_segment(&client, dir.path(), "cam", &map_uri(&playlist), segment).await;
    let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
    assert!(
        (28..=32).contains(&video.len()),
        "{} video frames",
        video.len()
    );
    assert!(video[0].key_frame, "segments start with an IDR");
    let audio = frames.iter().filter(|f| f.media_type == "audio").count();
    assert!(
        audio >= 40,
        "{audio} AAC frames in a second of 48 kHz sound"
    );
    // Frames are evenly spaced: passthrough keeps the source's timestamps.
    for pair in video.windows(2) {
        let step = pair[1].pts_time - pair[0].pts_time;
        assert!((step - 1.0 / 30.0).abs() < 0.004, "frame step {step}");
    }

    // Every hinted part comes to exist, including across segment ends, where only the
    // camera's next keyframe tells that the segment is over (RFC 8216bis 6.2.6).
    for _ in 0..12 {
        let playlist = client.get("/cam/video.m3u8").await.text();
        let hint = read(&playlist).hint.expect("a hint");
        let part = client.get(&format!("/cam/{hint}")).await;
        assert_eq!(part.status(), 200, "hinted {hint}");
    }

    // The passthrough path's CPU cost, for the record (the test binary holds the server
    // and the client; the RTSP server is another process).
    let before = process_cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = process_cpu_seconds() - before;
    eprintln!(
        "passthrough 640x360@30 H.264+AAC: {:.1} % of a core (debug build)",
        used / 3.0 * 100.0
    );
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_is_passed_through_and_decodes() {
    // Bound, not `_`: the camera and the server must live to the end.
    let Served {
        dir,
        camera: _camera,
        server: _server,
        client,
    } = serve_camera(free_port(), &["--codec", "h265", "--audio", "none"]).await;
    let multivariant = wait_ok(&client, "/cam/index.m3u8", Duration::from_secs(20)).await;
    assert!(multivariant.contains("CODECS=\"hvc1.1."), "{multivariant}");
    let playlist = wait_segments(&client, "/cam/video.m3u8", 2).await;
    let segments = segment_uris(&playlist);
    let frames = decode_segment(
        &client,
        dir.path(),
        "cam",
        &map_uri(&playlist),
        &segments[segments.len() - 1],
    )
    .await;
    assert!(frames.len() >= 28, "{} frames", frames.len());
    assert!(frames[0].key_frame);
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(dir.path().join(&segments[segments.len() - 1]))
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "hevc");
}

/// A camera ladder: one rendition passed through, one decoded and encoded smaller with
/// the camera's keyframes, so both switch at the same frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_rendition_passed_through_and_one_transcoded_stay_aligned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(free_port(), &["--codec", "h264", "--audio", "aac"]);
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    settings.streams = vec![public_stream(
        "cam",
        &camera.url(),
        vec![copy_rendition("source"), rendition("small", 320, 180, 300)],
    )];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let multivariant = wait_ok(&client, "/cam/index.m3u8", Duration::from_secs(20)).await;
    assert!(
        multivariant.contains("RESOLUTION=640x360"),
        "{multivariant}"
    );
    assert!(
        multivariant.contains("RESOLUTION=320x180"),
        "{multivariant}"
    );
    let source = wait_segments(&client, "/cam/source.m3u8", 3).await;
    let small = wait_segments(&client, "/cam/small.m3u8", 3).await;
    assert_eq!(
        server
            .state
            .streams
            .get("cam")
            .expect("stream")
            .status()
            .mode,
        Some(StreamMode::Mixed)
    );
    assert!(source.contains("#EXT-X-RENDITION-REPORT:URI=\"small.m3u8\""));
    assert!(small.contains("#EXT-X-RENDITION-REPORT:URI=\"source.m3u8\""));
    // The same MSN in both: an IDR first, at the same time, and decodable.
    let msn = |uri: &str| -> u64 {
        uri.rsplit('-')
            .next()
            .and_then(|s| s.strip_suffix(".m4s"))
            .and_then(|s| s.parse().ok())
            .expect("msn")
    };
    let small_segments = segment_uris(&small);
    let target = &small_segments[small_segments.len() - 2];
    let source_segment = segment_uris(&source)
        .into_iter()
        .find(|u| msn(u) == msn(target))
        .expect("same MSN in the passthrough rendition");
    let big = decode_segment(
        &client,
        dir.path(),
        "cam",
        &map_uri(&source),
        &source_segment,
    )
    .await;
    let little = decode_segment(&client, dir.path(), "cam", &map_uri(&small), target).await;
    let first_video = |frames: &[common::ProbedFrame]| {
        frames
            .iter()
            .find(|f| f.media_type == "video")
            .cloned()
            .expect("video")
    };
    let (a, b) = (first_video(&big), first_video(&little));
    assert!(a.key_frame && b.key_frame, "both start with an IDR");
    assert!(
        (a.pts_time - b.pts_time).abs() < 0.001,
        "aligned: {} vs {}",
        a.pts_time,
        b.pts_time
    );
    let count =
        |frames: &[common::ProbedFrame]| frames.iter().filter(|f| f.media_type == "video").count();
    assert_eq!(count(&big), count(&little), "same frames in both");
    let sound =
        |frames: &[common::ProbedFrame]| frames.iter().filter(|f| f.media_type == "audio").count();
    assert!(sound(&little) > 0, "the small one has sound");
    // The camera's own AAC in both, not a re-encode: the same frames.
    assert_eq!(sound(&big), sound(&little));
    drop(camera);
}

/// A camera sending G.711 μ-law (which HLS cannot carry): its video is passed through
/// and its sound transcoded to AAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_sound_is_transcoded_to_aac_beside_passed_through_video() {
    let Served {
        dir,
        camera,
        server,
        client,
    } = serve_camera(free_port(), &["--codec", "h264", "--audio", "pcmu"]).await;
    let multivariant = wait_ok(&client, "/cam/index.m3u8", Duration::from_secs(20)).await;
    assert!(
        multivariant.contains("CODECS=\"avc1.") && multivariant.contains(",mp4a.40.2\""),
        "{multivariant}"
    );
    let playlist = wait_segments(&client, "/cam/video.m3u8", 3).await;
    assert_eq!(
        server
            .state
            .streams
            .get("cam")
            .expect("stream")
            .status()
            .mode,
        Some(StreamMode::Passthrough)
    );
    let segments = segment_uris(&playlist);
    let frames = decode_segment(
        &client,
        dir.path(),
        "cam",
        &map_uri(&playlist),
        &segments[segments.len() - 2],
    )
    .await;
    let video = frames.iter().filter(|f| f.media_type == "video").count();
    let audio = frames.iter().filter(|f| f.media_type == "audio").count();
    assert!((28..=32).contains(&video), "{video} video frames");
    assert!(
        (40..=52).contains(&audio),
        "{audio} AAC frames: about a second of 48 kHz sound"
    );
    // The camera's tone, not silence: G.711 decoded right.
    let volume = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "info", "-i"])
        .arg(dir.path().join(&segments[segments.len() - 2]))
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let log = String::from_utf8_lossy(&volume.stderr);
    let mean: f64 = log
        .lines()
        .find_map(|l| l.split("mean_volume: ").nth(1))
        .and_then(|v| v.trim_end_matches(" dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no volume: {log}"));
    assert!(mean > -30.0, "mean volume {mean} dB");
    drop(camera);
}

/// RTP over UDP (`source.rtsp_transport = "udp"`) instead of interleaved on the RTSP
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_over_udp_is_passed_through_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(free_port(), &["--codec", "h264", "--audio", "aac"]);
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    settings.source.rtsp_transport = mirror::ingest::RtspTransport::Udp;
    let server = RunningServer::start_with(&settings, "cam", &SourceSpec::Rtsp(camera.url()))
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let playlist = wait_segments(&client, "/cam/video.m3u8", 2).await;
    let segments = segment_uris(&playlist);
    let frames = decode_segment(
        &client,
        dir.path(),
        "cam",
        &map_uri(&playlist),
        &segments[segments.len() - 1],
    )
    .await;
    let video = frames.iter().filter(|f| f.media_type == "video").count();
    assert!((28..=32).contains(&video), "{video} video frames");
    assert!(frames.iter().any(|f| f.media_type == "audio"));
    drop(camera);
}

/// A camera whose GOP is longer than the segment target: passthrough segments follow
/// its GOP, and TARGETDURATION fits them from the first playlist on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_segments_follow_a_long_camera_gop() {
    let Served {
        dir: _dir,
        camera: _camera,
        server: _server,
        client,
    } = serve_camera(free_port(), &["--audio", "none", "--gop", "60"]).await;
    let first = wait_ok(&client, "/cam/video.m3u8", Duration::from_secs(20)).await;
    assert!(first.contains("#EXT-X-TARGETDURATION:2\n"), "{first}");
    let playlist = wait_segments(&client, "/cam/video.m3u8", 2).await;
    assert!(playlist.contains("#EXT-X-TARGETDURATION:2\n"), "{playlist}");
    let durations: Vec<&str> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .collect();
    assert!(
        durations.iter().all(|d| *d == "2.000,"),
        "two-second segments, one per GOP: {durations:?}"
    );
    // Parts stay at PART-TARGET: latency does not grow with the GOP.
    assert!(playlist.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"));
}

/// `mirror record` runs the live media path with a directory for a sink, so a camera is
/// recorded the way it is served: passed through, segments on its own GOP, a finished
/// presentation ffmpeg reads end to end.
#[test]
fn an_rtsp_camera_is_recorded_through_the_live_media_path() {
    use mirror::config::Settings;
    use mirror::record::{RecordOptions, names, record};
    let camera = RtspServer::start(free_port(), &["--codec", "h264", "--audio", "aac"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let summary = record(
        &Settings::default(),
        &RecordOptions {
            out_dir: out.clone(),
            duration: Duration::from_secs(3),
            realtime: true,
            source: SourceSpec::Rtsp(camera.url()),
        },
    )
    .expect("records the camera");
    assert!(summary.segments >= 2, "{summary:?}");
    assert!(summary.codecs.starts_with("avc1."), "{}", summary.codecs);
    assert!(summary.codecs.ends_with(",mp4a.40.2"), "{}", summary.codecs);
    let index = out.join(names::MULTIVARIANT);
    assert_eq!(decode_errors(&index), "");
    let frames = probe_frames(&index);
    let video = frames.iter().filter(|f| f.media_type == "video").count();
    // The camera sends 30 fps; the recording holds its complete GOPs.
    assert!((55..=100).contains(&video), "{video} frames");
    assert!(frames.iter().any(|f| f.media_type == "audio"));
    let media = std::fs::read_to_string(out.join(names::MEDIA)).expect("media playlist");
    assert!(media.ends_with("#EXT-X-ENDLIST\n"), "{media}");
    assert!(
        !media.contains("EXT-X-SERVER-CONTROL"),
        "a finished presentation"
    );
}
