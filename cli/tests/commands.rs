//! The `mirror` command itself: what an operator types, run as a process.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{decode_errors, probe_frames};
use mirror::record::names;

#[test]
fn mirror_record_command_writes_a_presentation_ffmpeg_reads_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["record", "--seconds", "2", "--out"])
        .arg(&out)
        .status()
        .expect("runs mirror");
    assert!(status.success());
    // The test pattern is a live source: 2 s of media take 2 s of wall clock.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ran at real time"
    );
    assert_eq!(decode_errors(&out.join(names::MULTIVARIANT)), "");
    let frames = probe_frames(&out.join(names::MULTIVARIANT));
    assert_eq!(
        frames.iter().filter(|f| f.media_type == "video").count(),
        60
    );
}

#[test]
fn bad_config_stops_start_up_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[cmaf]\npart_target_ms = 5\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .arg("--config")
        .arg(&config)
        .args(["record", "--seconds", "1", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .expect("runs mirror");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cmaf.part_target_ms"), "{stderr}");
    assert!(!dir.path().join("out").exists(), "nothing written");
}
