//! Publishers for the push tests: the ffmpeg CLI over RTMP and SRT, and what the
//! tests wait for on the served side.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirror::llhls::parse::parse_media_playlist;

use super::h3client::H3Client;

/// The RTMP key the tests' `publish` streams have.
pub const KEY: &str = "the-live-publish-key-01";

/// ffmpeg publishing a 320×240 30 fps test pattern with a 1 kHz tone, 1 s GOPs, for
/// `seconds`, to `url`.
pub fn publish(url: &str, seconds: u32, b_frames: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-bf", &b_frames.to_string()])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (apt-get install ffmpeg)")
}

pub fn url(addr: SocketAddr, key: &str) -> String {
    format!("rtmp://127.0.0.1:{}/live/{key}", addr.port())
}

/// The media playlist once it lists `segments` complete segments.
pub async fn wait_segments(client: &H3Client, segments: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let fetched = client.get("/live/video.m3u8").await;
        if fetched.status() == 200
            && let Some(playlist) = parse_media_playlist(&fetched.text())
            && playlist.segments.len() >= segments
        {
            return fetched.text();
        }
        assert!(
            Instant::now() < deadline,
            "{segments} segments not listed: {}",
            fetched.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stream's entry in `/streams`.
pub async fn listed(client: &H3Client) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&client.get("/streams").await.text()).expect("JSON");
    list["streams"][0].clone()
}

/// ffmpeg publishing MPEG-TS over SRT (libsrt's caller) for `seconds` to `url`.
pub fn publish_srt(url: &str, seconds: u32) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args([
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-bf",
            "2",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "mpegts", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (apt-get install ffmpeg)")
}

/// Waits for `child` to end within `within`; whether it succeeded.
pub async fn ends(child: &mut Child, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        assert!(started.elapsed() < within, "still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
