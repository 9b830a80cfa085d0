//! `encoder.silent_audio`: a camera without sound (GStreamer's gst-rtsp-server on
//! loopback, H.264 only) passed through gets a silent AAC track, as iOS players need.
//! ffprobe and ffmpeg judge what is served over HTTP/3: the track is in CODECS and in
//! every part, it is silent, and each part's sound covers that part's pictures.

mod common;

use std::process::Command;
use std::time::Duration;

use common::camera::{Served, read, serve_camera_with, wait_ok, wait_segments};
use common::rtsp::free_port;
use common::{decode_errors, with_init};

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

/// ffmpeg's `volumedetect` verdict on the sound of `file`: its loudest sample, in dB.
fn max_volume_db(file: &std::path::Path) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "info", "-i"])
        .arg(file)
        .args(["-map", "0:a", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log
        .lines()
        .find_map(|l| l.split("max_volume:").nth(1))
        .unwrap_or_else(|| panic!("no volumedetect verdict: {log}"));
    let value = line.trim().trim_end_matches("dB").trim();
    if value == "-inf" {
        f64::NEG_INFINITY
    } else {
        value.parse().expect("a level in dB")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_sound_gets_a_silent_aac_track() {
    let Served {
        dir,
        camera: _camera,
        server: _server,
        client,
    } = serve_camera_with(free_port(), &["--codec", "h264", "--audio", "none"], |s| {
        s.encoder.silent_audio = true;
    })
    .await;
    let multivariant = wait_ok(&client, "/cam/index.m3u8", Duration::from_secs(20)).await;
    assert!(
        multivariant.contains("CODECS=\"avc1.") && multivariant.contains(",mp4a.40.2\""),
        "{multivariant}"
    );
    // Two complete segments: the later one still lists its parts.
    let playlist = read(&wait_segments(&client, "/cam/video.m3u8", 2).await);
    let init = client.get(&format!("/cam/{}", playlist.maps[0])).await;
    assert_eq!(init.status(), 200);
    let segment = playlist
        .segments
        .iter()
        .find(|s| !s.parts.is_empty())
        .expect("a complete segment with parts");

    // The whole segment: both tracks decode, and the sound is silence.
    let media = client.get(&format!("/cam/{}", segment.uri)).await;
    assert_eq!(media.status(), 200);
    let file = with_init(dir.path(), &segment.uri, &init.body, &media.body);
    assert_eq!(decode_errors(&file), "");
    let loudest = max_volume_db(&file);
    assert!(
        loudest < -80.0,
        "silence, but the loudest sample is {loudest} dB"
    );

    // Each part: its sound starts within one AAC block (21.3 ms) and a frame of its
    // first picture and lasts as long as its pictures, so a player that appends parts
    // finds no hole in either track.
    for part in &segment.parts {
        let bytes = client.get(&format!("/cam/{}", part.uri)).await;
        assert_eq!(bytes.status(), 200);
        let file = with_init(dir.path(), &part.uri, &init.body, &bytes.body);
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
