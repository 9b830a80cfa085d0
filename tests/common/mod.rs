//! Helpers shared by the integration tests: ffprobe/ffmpeg as the judges of media.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;

/// One decoded frame as ffprobe reports it.
#[derive(Debug, Clone)]
pub struct ProbedFrame {
    pub media_type: String,
    pub key_frame: bool,
    pub pict_type: String,
    pub pts_time: f64,
}

/// Decodes `file` with ffprobe and returns every frame of every stream.
pub fn probe_frames(file: &Path) -> Vec<ProbedFrame> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_frames", "-show_entries"])
        .arg(
            "frame=media_type,key_frame,pict_type,pts_time,pkt_pts_time,best_effort_timestamp_time",
        )
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe runs (apt-get install ffmpeg)");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("ffprobe json");
    json["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| ProbedFrame {
            media_type: f["media_type"].as_str().unwrap_or_default().to_string(),
            key_frame: f["key_frame"].as_i64() == Some(1),
            pict_type: f["pict_type"].as_str().unwrap_or_default().to_string(),
            pts_time: f["pts_time"]
                .as_str()
                .or(f["best_effort_timestamp_time"].as_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN),
        })
        .collect()
}

/// Decodes `input` fully with ffmpeg; returns what it printed at level `error`
/// (empty when the decode was clean). Panics if ffmpeg fails.
pub fn decode_errors(input: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(
        output.status.success(),
        "ffmpeg {}: {}",
        input.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `init` followed by `media` into `dir/name` and returns the path.
pub fn with_init(dir: &Path, name: &str, init: &[u8], media: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut bytes = init.to_vec();
    bytes.extend_from_slice(media);
    std::fs::write(&path, bytes).expect("write");
    path
}

/// The first AVERAGE-BANDWIDTH in `text` (a multivariant playlist, or one of its
/// EXT-X-STREAM-INF lines).
pub fn average_bandwidth(text: &str) -> u64 {
    text.split("AVERAGE-BANDWIDTH=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("AVERAGE-BANDWIDTH: {text}"))
}

pub mod h3client;
pub mod push;

/// Makes a short file with the ffmpeg CLI: 320×240 at 25 fps, keyframe every second,
/// with a 440 Hz tone or without sound.
pub fn make_file(dir: &Path, name: &str, seconds: u32, with_audio: bool) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut command = Command::new("ffmpeg");
    command.args([
        "-nostdin",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
    ]);
    if with_audio {
        command.args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-c:a",
            "aac",
        ]);
    }
    let status = command
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-g", "25"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    path
}

pub mod browser;
pub mod camera;
pub mod fixtures;
pub mod rtsp;
pub mod sender;

/// ffmpeg's `volumedetect` verdict on the sound of `file`: its loudest sample, in dB.
pub fn max_volume_db(file: &std::path::Path) -> f64 {
    let output = std::process::Command::new("ffmpeg")
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
