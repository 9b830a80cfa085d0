//! Encoders pushing to Mirror over SRT: the ffmpeg CLI (libsrt's caller) publishes
//! MPEG-TS to a `publish` stream with its passphrase; what is served decodes; wrong or
//! missing passphrases and unknown streams are refused in the handshake, and a caller
//! without the passphrase cannot take a stream from its publisher.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::push::{decoded_segment, ends, listed, publish_srt, publish_stream};
use mirror::ingest::SourceSpec;
use mirror::ingest::push::SecondPublisher;
use mirror::llhls::parse::parse_media_playlist;
use mirror::server::RunningServer;

const PASSPHRASE: &str = "srt-passphrase-of-cam";

/// A server with stream `cam` published over SRT with [`PASSPHRASE`].
async fn server(dir: &std::path::Path, second: SecondPublisher) -> RunningServer {
    let mut settings = loopback_settings(dir, 320, 240, 400);
    settings.push.srt_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.push.second_publisher = second;
    settings.streams = vec![publish_stream("cam", None, Some(PASSPHRASE))];
    settings.validate().expect("valid");
    RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_srt_with_its_passphrase_and_what_is_served_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), SecondPublisher::Refuse).await;
    assert!(server.rtmp_addr.is_none(), "no stream has an RTMP key");
    let port = server.srt_addr.expect("SRT listens").port();
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let srt = |query: &str| format!("srt://127.0.0.1:{port}?{query}");

    // A wrong passphrase, none, and a stream that is not there: refused in the handshake.
    for query in [
        "streamid=cam&passphrase=not-the-passphrase".to_string(),
        "streamid=cam".to_string(),
        format!("streamid=other&passphrase={PASSPHRASE}"),
    ] {
        let mut refused = publish_srt(&srt(&query), 4);
        assert!(
            !ends(&mut refused, Duration::from_secs(20)).await,
            "{query}"
        );
    }
    assert_eq!(listed(&client).await["status"]["state"], "waiting");

    // The access-control syntax (ffmpeg's libsrt takes the `#` as it is), and the
    // passphrase.
    let stream_id = "#!::r=cam,m=publish";
    let mut publisher = publish_srt(
        &srt(&format!("streamid={stream_id}&passphrase={PASSPHRASE}")),
        8,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let playlist = loop {
        let fetched = client.get("/cam/video.m3u8").await;
        if fetched.status() == 200
            && let Some(playlist) = parse_media_playlist(&fetched.text())
            && playlist.segments.len() >= 3
        {
            break playlist;
        }
        assert!(Instant::now() < deadline, "no segments: {}", fetched.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entry = listed(&client).await;
    assert_eq!(entry["status"]["publisher"]["protocol"], "srt", "{entry}");
    let multivariant = client.get("/cam/index.m3u8").await.text();
    assert!(
        multivariant.contains("CODECS=\"avc1.") && multivariant.contains(",mp4a.40.2\""),
        "{multivariant}"
    );
    let (_, _, video, audio) = decoded_segment(&client, dir.path(), "cam", &playlist, 1).await;
    assert_eq!(video, 30, "one GOP of the publisher's");
    assert!((44..=50).contains(&audio), "{audio} audio frames");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// With `second_publisher = "replace"`, a caller that knows the stream's name but not
/// its passphrase is refused without disturbing the publisher (before the fix, it
/// claimed the stream before the handshake checked the passphrase, which disconnected
/// the publisher).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_the_passphrase_cannot_take_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), SecondPublisher::Replace).await;
    let port = server.srt_addr.expect("SRT listens").port();
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let srt =
        |passphrase: &str| format!("srt://127.0.0.1:{port}?streamid=cam&passphrase={passphrase}");
    let mut publisher = publish_srt(&srt(PASSPHRASE), 30);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listed(&client).await["status"]["state"] != "live" {
        assert!(Instant::now() < deadline, "never live");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        let mut intruder = publish_srt(&srt("not-the-passphrase"), 4);
        assert!(!ends(&mut intruder, Duration::from_secs(20)).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        publisher.try_wait().expect("wait").is_none(),
        "the publisher was disconnected by a caller without the passphrase"
    );
    assert_eq!(listed(&client).await["status"]["state"], "live");
    let _ = publisher.kill();
    let _ = publisher.wait();
}
