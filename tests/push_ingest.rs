//! Encoders pushing to Mirror over RTMP: the ffmpeg CLI publishes H.264 + AAC
//! (`-f flv rtmp://…/live/KEY`) to a `publish` stream; what is served over HTTP/3
//! decodes with ffmpeg with the frames expected; a wrong key is refused and the stream
//! waits on; a publisher that stops and comes back gives EXT-X-DISCONTINUITY; `/streams`
//! names the publisher while it publishes; a second publisher, the admin API, hostile
//! clients, wall-clock timestamps. SRT is `tests/push_srt.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::push::{
    KEY, decoded_segment, ends, listed, publish, publish_stream, publisher_bitrate, url,
    wait_segments,
};
use mirror::config::{Settings, StreamSettings};
use mirror::http::admin::Secret;
use mirror::ingest::SourceSpec;
use mirror::ingest::push::{PublisherClock, SecondPublisher};
use mirror::llhls::parse::parse_media_playlist;
use mirror::server::RunningServer;

/// A server with stream `live` published over RTMP with [`KEY`].
async fn server(dir: &std::path::Path) -> RunningServer {
    server_with(dir, |_| {}).await
}

/// The same, with `[push]` (or anything else) changed by `change` first.
async fn server_with(dir: &std::path::Path, change: impl FnOnce(&mut Settings)) -> RunningServer {
    let mut settings = loopback_settings(dir, 320, 240, 400);
    settings.push.rtmp_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.streams = vec![publish_stream("live", Some(KEY), None)];
    change(&mut settings);
    settings.validate().expect("valid");
    RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmp_and_what_is_served_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let rtmp = server.rtmp_addr.expect("RTMP listens");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    assert_eq!(listed(&client).await["status"]["state"], "waiting");

    // A wrong key: ffmpeg is refused and gives up; the stream waits on.
    let mut wrong = publish(&url(rtmp, "not-the-key-at-all-000"), 5, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = wrong.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still publishing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "a wrong key is refused");
    assert_eq!(listed(&client).await["status"]["state"], "waiting");

    // The right key, with B-frames (x264's default; OBS's too).
    let mut first = publish(&url(rtmp, KEY), 8, 2);
    let playlist = wait_segments(&client, 3, Duration::from_secs(20)).await;
    let multivariant = client.get("/live/index.m3u8").await.text();
    assert!(
        multivariant.contains("CODECS=\"avc1.") && multivariant.contains(",mp4a.40.2\""),
        "{multivariant}"
    );
    assert!(
        multivariant.contains("RESOLUTION=320x240"),
        "{multivariant}"
    );
    let entry = listed(&client).await;
    assert_eq!(entry["status"]["state"], "live", "{entry}");
    assert_eq!(entry["status"]["publisher"]["protocol"], "rtmp", "{entry}");
    assert!(
        entry["status"]["publisher"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{entry}"
    );
    publisher_bitrate(&client).await;
    let metrics = client.get("/metrics").await.text();
    assert!(
        metrics.contains("mirror_publisher_connected{stream=\"live\",protocol=\"rtmp\"} 1"),
        "{metrics}"
    );

    // A complete segment decodes: one 1 s GOP of 30 frames, and its sound.
    let listed_playlist = parse_media_playlist(&playlist).expect("playlist");
    let (_, frames, video, audio) =
        decoded_segment(&client, dir.path(), "live", &listed_playlist, 1).await;
    assert_eq!(video, 30, "one GOP of the publisher's");
    assert!(frames[0].key_frame || frames.iter().any(|f| f.key_frame));
    // 48 kHz AAC: 1024 samples a frame, about 47 a second.
    assert!((44..=50).contains(&audio), "{audio} audio frames");

    // A second publisher on a live key is refused; the first goes on.
    let mut second = publish(&url(rtmp, KEY), 5, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "two publishers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "the key is in use");
    assert!(
        first.try_wait().expect("wait").is_none(),
        "the first goes on"
    );

    // The publisher leaves and comes back: the playlist goes on after a discontinuity.
    let ended = first.wait().expect("ffmpeg ends");
    assert!(ended.success(), "the first publisher ran to its end");
    let before = parse_media_playlist(&client.get("/live/video.m3u8").await.text())
        .expect("playlist")
        .segments
        .last()
        .map(|s| s.uri.clone())
        .expect("a segment");
    let mut again = publish(&url(rtmp, KEY), 6, 0);
    let deadline = Instant::now() + Duration::from_secs(25);
    let playlist = loop {
        let text = client.get("/live/video.m3u8").await.text();
        let after = text.split(&before).nth(1).unwrap_or("");
        if after.contains("#EXT-X-DISCONTINUITY") && after.matches("#EXTINF").count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "no discontinuity: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(playlist.contains("#EXT-X-DISCONTINUITY"), "{playlist}");
    let _ = again.kill();
    let _ = again.wait();
}

/// A `publish` stream added through the admin API: refused, naming the setting, when no
/// RTMP listener runs; taken and published to when one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_streams_added_through_the_api_need_a_listener() {
    const ADMIN: &str = "admin-token-of-the-push-test";
    let body = format!(r#"{{"name":"late","source":"publish","publish_key":"{KEY}"}}"#);
    let headers = [
        ("authorization", format!("Bearer {ADMIN}")),
        ("content-type", "application/json".to_string()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    for listening in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = loopback_settings(dir.path(), 320, 240, 400);
        settings.admin.token = Some(Secret(ADMIN.into()));
        if listening {
            settings.push.rtmp_listen = Some("127.0.0.1:0".parse().expect("addr"));
        }
        let server = RunningServer::start_with(&settings, "test", &SourceSpec::TestPattern)
            .await
            .expect("server starts");
        assert_eq!(server.rtmp_addr.is_some(), listening);
        let client = H3Client::connect(server.h3_addr, &server.tls).await;
        let added = client
            .send(http::Method::POST, "/admin/streams", &headers, &body)
            .await;
        if !listening {
            assert_eq!(added.status(), 400, "{}", added.text());
            assert!(added.text().contains("rtmp_listen"), "{}", added.text());
            continue;
        }
        assert_eq!(added.status(), 201, "{}", added.text());
        assert!(!added.text().contains(KEY), "the key is never written out");
        let rtmp = server.rtmp_addr.expect("RTMP listens");
        let mut publisher = publish(&url(rtmp, KEY), 6, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get("/late/video.m3u8").await.status() != 200
            || !client
                .get("/late/video.m3u8")
                .await
                .text()
                .contains("#EXTINF")
        {
            assert!(Instant::now() < deadline, "the added stream never played");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = publisher.kill();
        let _ = publisher.wait();
    }
}

/// `[push] second_publisher = "replace"`: an encoder that comes back before the server
/// noticed it left takes its stream over; the first is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_replaces_the_first_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with(dir.path(), |s| {
        s.push.second_publisher = SecondPublisher::Replace
    })
    .await;
    let rtmp = server.rtmp_addr.expect("RTMP listens");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let mut first = publish(&url(rtmp, KEY), 30, 0);
    wait_segments(&client, 2, Duration::from_secs(20)).await;
    let first_address = listed(&client).await["status"]["publisher"]["address"].clone();
    let mut second = publish(&url(rtmp, KEY), 30, 0);
    assert!(
        !ends(&mut first, Duration::from_secs(20)).await,
        "the first publisher is disconnected"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entry = listed(&client).await;
        let publisher = &entry["status"]["publisher"]["address"];
        if entry["status"]["state"] == "live"
            && publisher.is_string()
            && *publisher != first_address
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second never took over: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        second.try_wait().expect("wait").is_none(),
        "the second goes on"
    );
    let _ = second.kill();
    let _ = second.wait();
}

/// Hostile RTMP clients: connections beyond the limit are closed at once, idle ones and
/// ones sending garbage are closed by the server, and an encoder publishes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_garbage_rtmp_clients_are_closed_and_publishing_goes_on() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let rtmp = server.rtmp_addr.expect("RTMP listens");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;

    /// Whether the server closes `socket` within `within` (reads reach end of file).
    async fn closed(socket: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
        let mut sink = [0u8; 4096];
        let read_to_end = async {
            loop {
                match socket.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, read_to_end).await.is_ok()
    }

    // Garbage instead of a handshake: closed.
    let mut garbage = tokio::net::TcpStream::connect(rtmp)
        .await
        .expect("connects");
    let noise: Vec<u8> = (0..1_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = garbage.write_all(&noise).await;
    assert!(
        closed(&mut garbage, Duration::from_secs(5)).await,
        "garbage is closed"
    );

    // Past the handshake, one message larger than the server holds before publishing
    // (16 MiB declared, 1 MiB taken): closed as soon as it passes the bound, long before
    // the set-up timeout would close it (without the bound, rml_rtmp buffers the message
    // while the client sends it).
    let mut oversized = tokio::net::TcpStream::connect(rtmp)
        .await
        .expect("connects");
    let mut c0_c1 = vec![3u8];
    c0_c1.extend_from_slice(&[0u8; 1536]);
    oversized.write_all(&c0_c1).await.expect("C0 and C1");
    let mut s0_s1_s2 = vec![0u8; 1 + 2 * 1536];
    tokio::time::timeout(Duration::from_secs(5), oversized.read_exact(&mut s0_s1_s2))
        .await
        .expect("the server answers the handshake")
        .expect("S0, S1 and S2");
    oversized
        .write_all(&s0_s1_s2[1..1537])
        .await
        .expect("C2 (the original handshake: S1 echoed)");
    let started = Instant::now();
    let (mut reader, mut writer) = oversized.into_split();
    let sending = tokio::spawn(async move {
        // Chunk stream 3, a type-0 header: an AMF0 command of 16 MiB - 1, then its
        // payload in 128-byte chunks (type-3 headers), 8 MiB in all.
        let header = [0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0];
        let mut chunks = Vec::with_capacity(1 << 16);
        while chunks.len() + 129 <= 1 << 16 {
            chunks.push(0xc3);
            chunks.extend_from_slice(&[0x05; 128]);
        }
        let sent = async {
            writer.write_all(&header).await?;
            writer.write_all(&chunks[1..129]).await?;
            for _ in 0..128 {
                writer.write_all(&chunks).await?;
            }
            std::io::Result::Ok(())
        };
        let _ = sent.await;
        // Still open (a half-close would end the connection for another reason).
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(writer);
    });
    let bound = mirror::ingest::push::rtmp::SETUP_TIMEOUT / 2;
    assert!(
        closed(&mut reader, bound).await,
        "an oversized message before publishing was held for {:?}",
        started.elapsed()
    );
    sending.abort();

    // More idle connections than the limit: the excess closed at once, the rest after
    // the set-up timeout.
    let limit = mirror::ingest::push::rtmp::MAX_CONNECTIONS;
    let mut idle = Vec::new();
    for _ in 0..limit + 6 {
        idle.push(
            tokio::net::TcpStream::connect(rtmp)
                .await
                .expect("connects"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut at_once = 0;
    for socket in &mut idle {
        if closed(socket, Duration::from_millis(50)).await {
            at_once += 1;
        }
    }
    assert!(at_once >= 6, "{at_once} closed at once");
    let within = mirror::ingest::push::rtmp::SETUP_TIMEOUT + Duration::from_secs(3);
    for socket in &mut idle {
        assert!(
            closed(socket, within).await,
            "an idle client outlived the set-up timeout"
        );
    }

    // The server went on: an encoder publishes.
    let mut publisher = publish(&url(rtmp, KEY), 6, 0);
    wait_segments(&client, 2, Duration::from_secs(20)).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// `[push] publisher_clock = "wallclock"`: the encoder's timestamps are its clock
/// (ffmpeg stamping each frame with the wall clock as it is made, here 10 s slow), and
/// PROGRAM-DATE-TIME follows them instead of the arrival time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallclock_timestamps_set_program_date_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with(dir.path(), |s| {
        s.push.publisher_clock = PublisherClock::Wallclock
    })
    .await;
    let rtmp = server.rtmp_addr.expect("RTMP listens");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    // RTCTIME is microseconds of Unix time; 10 s are taken off.
    let mut publisher = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-t", "8"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-vf", "settb=1/1000,setpts=RTCTIME/1000-10000", "-an"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-g",
            "30",
            "-f",
            "flv",
            &url(rtmp, KEY),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg runs");
    let playlist = wait_segments(&client, 2, Duration::from_secs(20)).await;
    let now = std::time::SystemTime::now();
    let newest = playlist
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .expect("PROGRAM-DATE-TIME");
    let at = time::OffsetDateTime::parse(newest, &time::format_description::well_known::Rfc3339)
        .expect("a date");
    let behind = time::OffsetDateTime::from(now) - at;
    assert!(
        (9.0..12.5).contains(&behind.as_seconds_f64()),
        "the newest segment started {behind} ago: the encoder's clock is 10 s slow"
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A reload that changes only a stream's publish key applies it: the stream is kept
/// (its viewers and names stay), the old key no longer opens it, the new one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_new_publish_key_applies_it() {
    use mirror::config::Overrides;
    const NEW_KEY: &str = "the-new-publish-key-02";
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, certs) = (dir.path().join("mirror.toml"), dir.path().join("certs"));
    let write = |key: &str| {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncerts_dir = {certs:?}\nwatch_config = false\n\
             [push]\nrtmp_listen = \"127.0.0.1:0\"\n\
             [[streams]]\nname = \"live\"\nsource = \"publish\"\npublish_key = \"{key}\"\n"
        );
        std::fs::write(&config, text).expect("config written");
    };
    write(KEY);
    let settings = Settings::load(Some(&config), &Overrides::default()).expect("valid");
    let default = StreamSettings {
        name: "unused".into(),
        source: "testsrc".into(),
        renditions: Vec::new(),
        policy: None,
        publish_key: None,
        publish_key_sha256: None,
        srt_passphrase: None,
    };
    let server = RunningServer::start_from(
        &settings,
        default,
        Some(config.clone()),
        Overrides::default(),
    )
    .await
    .expect("server");
    let rtmp = server.rtmp_addr.expect("RTMP listens");
    write(NEW_KEY);
    let summary = server.reload().await.expect("reloaded");
    assert_eq!(summary.kept, ["live"], "only the key changed");
    let mut old = publish(&url(rtmp, KEY), 4, 0);
    assert!(
        !ends(&mut old, Duration::from_secs(15)).await,
        "the old key no longer opens the stream"
    );
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let mut new = publish(&url(rtmp, NEW_KEY), 8, 0);
    wait_segments(&client, 2, Duration::from_secs(20)).await;
    let _ = new.kill();
    let _ = new.wait();
}
