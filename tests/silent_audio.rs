//! `encoder.silent_audio`: a camera without sound (GStreamer's gst-rtsp-server on
//! loopback, H.264 only) gets a silent AAC track, as iOS players need, in a rendition
//! that passes its pictures through and in one encoded from them.
//! ffprobe and ffmpeg judge what is served over HTTP/3: the track is in CODECS and in
//! every part, it is silent, and each part's sound covers that part's pictures.

mod common;

use std::process::Command;
use std::time::Duration;

use common::camera::{read, wait_ok, wait_segments};
use common::fixtures::{copy_rendition, loopback_settings, public_stream, rendition};
use common::h3client::H3Client;
use common::rtsp::{RtspServer, free_port};
use common::{decode_errors, with_init};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;

/// The presentation times (s) of the packets of `file`'s `kind` stream (`v` or `a`).
fn packet_times(file: &std::path::Path, kind: &str) -> Vec<f64> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_sound_gets_a_silent_aac_track_in_every_rendition() {
    // A ladder: the camera's pictures passed through, and a smaller rendition encoded
    // from them, which carries the same sound.
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(free_port(), &["--codec", "h264", "--audio", "none"]);
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    settings.encoder.silent_audio = true;
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
    let variants: Vec<&str> = multivariant
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(variants.len(), 2, "{multivariant}");
    for variant in variants {
        assert!(
            variant.contains("CODECS=\"avc1.") && variant.contains(",mp4a.40.2\""),
            "{multivariant}"
        );
    }
    for name in ["source", "small"] {
        check_rendition(&client, dir.path(), name).await;
    }
}

/// A complete segment of rendition `name` decodes and its sound is silence; in each of
/// its parts the sound starts within one AAC block (21.3 ms) and a frame of the first
/// picture and lasts as long as the pictures, so a player that appends parts finds no
/// hole in either track.
async fn check_rendition(client: &H3Client, dir: &std::path::Path, name: &str) {
    // Two complete segments: the later one still lists its parts.
    let playlist = read(&wait_segments(client, &format!("/cam/{name}.m3u8"), 2).await);
    let init = client.get(&format!("/cam/{}", playlist.maps[0])).await;
    assert_eq!(init.status(), 200);
    let segment = playlist
        .segments
        .iter()
        .find(|s| !s.parts.is_empty())
        .expect("a complete segment with parts");

    let media = client.get(&format!("/cam/{}", segment.uri)).await;
    assert_eq!(media.status(), 200);
    let file = with_init(dir, &segment.uri, &init.body, &media.body);
    assert_eq!(decode_errors(&file), "", "{}", segment.uri);
    let loudest = common::max_volume_db(&file);
    assert!(
        loudest < -80.0,
        "{}: silence, but the loudest sample is {loudest} dB",
        segment.uri
    );

    for part in &segment.parts {
        let bytes = client.get(&format!("/cam/{}", part.uri)).await;
        assert_eq!(bytes.status(), 200);
        let file = with_init(dir, &part.uri, &init.body, &bytes.body);
        // Packets, not frames: a part that does not start with a keyframe decodes only
        // after the parts before it.
        let span = |kind: &str| {
            let times = packet_times(&file, kind);
            assert!(!times.is_empty(), "{} has no {kind}", part.uri);
            (
                times.iter().copied().fold(f64::INFINITY, f64::min),
                times.len(),
            )
        };
        let ((video_start, pictures), (audio_start, blocks)) = (span("v"), span("a"));
        assert!(
            (audio_start - video_start).abs() < 0.021_4 + 0.034,
            "{}: sound starts at {audio_start}, pictures at {video_start}",
            part.uri
        );
        let (video_s, audio_s) = (pictures as f64 / 30.0, blocks as f64 * 1024.0 / 48_000.0);
        assert!(
            (audio_s - video_s).abs() < 0.05,
            "{}: {blocks} blocks of sound ({audio_s} s) for {pictures} pictures ({video_s} s)",
            part.uri
        );
    }
}
