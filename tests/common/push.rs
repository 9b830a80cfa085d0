//! Publishers for the push tests: the ffmpeg CLI over RTMP and SRT, and what the
//! tests wait for on the served side.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirror::config::StreamSettings;
use mirror::http::admin::Secret;
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};

use super::h3client::H3Client;
use super::{ProbedFrame, decode_errors, probe_frames, with_init};

/// The RTMP key the tests' `publish` streams have.
pub const KEY: &str = "the-live-publish-key-01";

/// A `publish` stream `name` with an RTMP `key` and an SRT `passphrase`.
pub fn publish_stream(name: &str, key: Option<&str>, passphrase: Option<&str>) -> StreamSettings {
    StreamSettings {
        name: name.into(),
        source: "publish".into(),
        renditions: Vec::new(),
        policy: None,
        publish_key: key.map(|k| Secret(k.into())),
        publish_key_sha256: None,
        srt_passphrase: passphrase.map(|p| Secret(p.into())),
    }
}

/// ffmpeg publishing a 320×240 30 fps test pattern with a 1 kHz tone, 1 s GOPs, for
/// `seconds`, to `url` in container `format` (`flv` for RTMP, `mpegts` for SRT).
fn ffmpeg(url: &str, format: &str, seconds: u32, b_frames: u32) -> Child {
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
        .args(["-f", format, url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (apt-get install ffmpeg)")
}

/// ffmpeg publishing over RTMP to `url`, with `b_frames` B-frames.
pub fn publish(url: &str, seconds: u32, b_frames: u32) -> Child {
    ffmpeg(url, "flv", seconds, b_frames)
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

/// The publisher's bitrate as `/streams` gives it, once measured (within 8 s), checked
/// against the AVERAGE-BANDWIDTH the multivariant playlist gives (the first GOP's rate,
/// then the segments'): the same order.
pub async fn publisher_bitrate(client: &H3Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(8);
    let bps = loop {
        let entry = listed(client).await;
        if let Some(bps) = entry["status"]["publisher"]["bitrate_bps"].as_u64() {
            break bps;
        }
        assert!(Instant::now() < deadline, "no publisher bitrate: {entry}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let multivariant = client.get("/live/index.m3u8").await.text();
    let average = super::average_bandwidth(&multivariant);
    assert!(
        (average / 4..=average * 4).contains(&bps),
        "publisher at {bps} bit/s, the stream's average {average}"
    );
    bps
}

/// ffmpeg publishing MPEG-TS over SRT (libsrt's caller) for `seconds` to `url`, with
/// 2 B-frames.
pub fn publish_srt(url: &str, seconds: u32) -> Child {
    ffmpeg(url, "mpegts", seconds, 2)
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

/// Segment `index` of `playlist` (stream `stream`'s), with its init segment, fetched
/// into `dir` and decoded by ffmpeg without an error: its name and its frames, and how
/// many of them are video and audio.
pub async fn decoded_segment(
    client: &H3Client,
    dir: &std::path::Path,
    stream: &str,
    playlist: &ListedPlaylist,
    index: usize,
) -> (String, Vec<ProbedFrame>, usize, usize) {
    let map = playlist.maps.first().expect("EXT-X-MAP").clone();
    let segment = playlist.segments[index].uri.clone();
    let init = client.get(&format!("/{stream}/{map}")).await;
    let media = client.get(&format!("/{stream}/{segment}")).await;
    assert_eq!((init.status(), media.status()), (200, 200));
    let file = with_init(dir, &segment, &init.body, &media.body);
    assert_eq!(decode_errors(&file), "", "{segment} decodes cleanly");
    let frames = probe_frames(&file);
    let video = frames.iter().filter(|f| f.media_type == "video").count();
    let audio = frames.iter().filter(|f| f.media_type == "audio").count();
    (segment, frames, video, audio)
}
