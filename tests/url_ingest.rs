//! libav network sources: the ffmpeg CLI pushes MPEG-TS to Mirror over UDP and over
//! SRT on loopback; what Mirror serves over HTTP/3 decodes.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::rtsp::free_port;
use common::sender::Sender;
use common::{decode_errors, probe_frames, with_init};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;
use mirror::stream::{SourceState, StreamMode};

async fn served_segment_decodes(source: &str, sender_url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let server = RunningServer::start_with(&settings, "net", &SourceSpec::parse(source))
        .await
        .expect("server starts");
    let _sender = Sender::start(sender_url, "mpegts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let deadline = Instant::now() + Duration::from_secs(25);
    let playlist = loop {
        let fetched = client.get("/net/video.m3u8?_HLS_msn=3").await;
        if fetched.status() == 200 && fetched.text().contains("-3.m4s\n") {
            break fetched.text();
        }
        assert!(
            Instant::now() < deadline,
            "{source}: no segments ({}) {:?}",
            fetched.status(),
            server.state.streams.get("net").expect("stream").status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed = mirror::llhls::parse::parse_media_playlist(&playlist).expect("a media playlist");
    let map = listed.maps.first().expect("map");
    let segment = &listed
        .segments
        .iter()
        .find(|s| s.msn == 2)
        .expect("segment 2")
        .uri;
    let init = client.get(&format!("/net/{map}")).await;
    let media = client.get(&format!("/net/{segment}")).await;
    let file = with_init(dir.path(), "seg.mp4", &init.body, &media.body);
    let errors = decode_errors(&file);
    assert!(errors.is_empty(), "{errors}");
    let frames = probe_frames(&file);
    let video = frames.iter().filter(|f| f.media_type == "video").count();
    let audio = frames.iter().filter(|f| f.media_type == "audio").count();
    assert_eq!(video, 25, "one second of 25 fps");
    assert!(
        audio >= 40,
        "{audio} AAC frames: the sender's tone comes through"
    );
    assert_eq!(
        server
            .state
            .streams
            .get("net")
            .expect("stream")
            .status()
            .mode,
        Some(StreamMode::Transcode)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg_ts_over_udp_is_served() {
    let port = free_port();
    served_segment_decodes(
        &format!("udp://127.0.0.1:{port}"),
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg_ts_over_srt_is_served() {
    let port = free_port();
    served_segment_decodes(
        &format!("srt://127.0.0.1:{port}?mode=listener"),
        &format!("srt://127.0.0.1:{port}?mode=caller"),
    )
    .await;
}

/// A UDP sender that stops: libav's read timeout ends the read, the stream retries with
/// backoff while its playlist stays served, and when the sender is back the stream goes
/// on with the next MSN after an EXT-X-DISCONTINUITY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_sender_that_stops_and_returns_gives_a_discontinuity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let server = RunningServer::start_with(
        &settings,
        "net",
        &SourceSpec::parse(&format!("udp://127.0.0.1:{port}")),
    )
    .await
    .expect("server starts");
    let sender_url = format!("udp://127.0.0.1:{port}?pkt_size=1316");
    let sender = Sender::start(&sender_url, "mpegts");
    let stream = server.state.streams.get("net").expect("stream").clone();
    let deadline = Instant::now() + Duration::from_secs(25);
    while stream.current().position.open_msn < 3 {
        assert!(Instant::now() < deadline, "{:?}", stream.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(sender);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.status().state != SourceState::Retrying {
        assert!(Instant::now() < deadline, "a silent sender is noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalled = stream.current().position.open_msn;
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    assert_eq!(client.get("/net/video.m3u8").await.status(), 200);

    let _sender = Sender::start(&sender_url, "mpegts");
    let deadline = Instant::now() + Duration::from_secs(40);
    while stream.current().position.open_msn < stalled + 2 {
        assert!(
            Instant::now() < deadline,
            "not resumed: {:?}",
            stream.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let playlist = client.get("/net/video.m3u8").await.text();
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    assert_eq!(stream.status().state, SourceState::Live);
}
