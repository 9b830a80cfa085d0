//! A GStreamer RTSP camera on loopback with Mirror serving it as stream `cam`, and what
//! the RTSP tests read back over HTTP/3: playlists as a player reads them, segments
//! decoded by ffprobe.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::{Duration, Instant};

use super::fixtures::loopback_settings;
use super::h3client::H3Client;
use super::rtsp::RtspServer;
use super::{decode_errors, probe_frames, with_init};
use mirror::ingest::SourceSpec;
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};
use mirror::server::RunningServer;

/// A camera on loopback, and Mirror serving it as stream `cam`.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub camera: RtspServer,
    pub server: RunningServer,
    pub client: H3Client,
}

/// Starts `tests/rtsp/server.py` on `port` with `args`, and Mirror playing it.
pub async fn serve_camera(port: u16, args: &[&str]) -> Served {
    serve_camera_with(port, args, |_| {}).await
}

/// The same, Mirror's settings changed by `adjust` first.
pub async fn serve_camera_with(
    port: u16,
    args: &[&str],
    adjust: impl FnOnce(&mut mirror::config::Settings),
) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let camera = RtspServer::start(port, args);
    let mut settings = loopback_settings(dir.path(), 320, 240, 400);
    adjust(&mut settings);
    let server = RunningServer::start_with(&settings, "cam", &SourceSpec::Rtsp(camera.url()))
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    Served {
        dir,
        camera,
        server,
        client,
    }
}

/// Polls `path` until it answers 200 (a network source opens in the background).
pub async fn wait_ok(client: &H3Client, path: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let fetched = client.get(path).await;
        if fetched.status() == 200 {
            return fetched.text();
        }
        assert!(
            Instant::now() < deadline,
            "{path}: still {} after {within:?}",
            fetched.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The playlist as a player reads it.
pub fn read(playlist: &str) -> ListedPlaylist {
    parse_media_playlist(playlist).unwrap_or_else(|| panic!("a media playlist: {playlist}"))
}

/// The URIs of the complete segments `playlist` lists, in order.
pub fn segment_uris(playlist: &str) -> Vec<String> {
    read(playlist).segments.into_iter().map(|s| s.uri).collect()
}

/// The playlist once it lists at least `segments` complete segments.
pub async fn wait_segments(client: &H3Client, path: &str, segments: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let playlist = wait_ok(client, path, Duration::from_secs(20)).await;
        if segment_uris(&playlist).len() >= segments {
            return playlist;
        }
        assert!(Instant::now() < deadline, "no segments: {playlist}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Fetches `init` and `segment`, writes them as one file, returns its frames.
pub async fn decode_segment(
    client: &H3Client,
    dir: &Path,
    stream: &str,
    init: &str,
    segment: &str,
) -> Vec<super::ProbedFrame> {
    let init = client.get(&format!("/{stream}/{init}")).await;
    assert_eq!(init.status(), 200);
    let media = client.get(&format!("/{stream}/{segment}")).await;
    assert_eq!(media.status(), 200);
    let file = with_init(dir, segment, &init.body, &media.body);
    let errors = decode_errors(&file);
    assert!(errors.is_empty(), "{segment} decodes cleanly: {errors}");
    probe_frames(&file)
}

/// The init segment that heads the playlist (its first EXT-X-MAP).
pub fn map_uri(playlist: &str) -> String {
    read(playlist).maps.into_iter().next().expect("EXT-X-MAP")
}
