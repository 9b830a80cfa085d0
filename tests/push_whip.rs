//! WHIP publishers (RFC 9725): headless Chromium publishes its fake camera and
//! microphone from Mirror's publish page over WebRTC, H.264 preferred; hls.js in a
//! second page plays the stream over HTTP/3; a served segment decodes with ffmpeg;
//! `/streams` names the publisher; its DELETE ends the publication. And what WHIP
//! refuses, over HTTP/3: no key, a wrong key, not SDP, a bad offer, other methods.

mod common;

use std::time::{Duration, Instant};

use common::browser;
use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::push::{
    KEY, decoded_segment, listed, publish_stream, publisher_bitrate, wait_segments,
};
use mirror::ingest::SourceSpec;
use mirror::llhls::parse::parse_media_playlist;
use mirror::server::RunningServer;

/// A server with stream `live` published with [`KEY`], WHIP on loopback.
async fn server(dir: &std::path::Path) -> RunningServer {
    let mut settings = loopback_settings(dir, 320, 240, 400);
    settings.push.rtmp_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.push.whip_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.streams = vec![publish_stream("live", Some(KEY), None)];
    settings.validate().expect("valid");
    RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts")
}

/// An SDP offer as a browser makes one, minus what a server needs to connect (enough
/// to be parsed and answered).
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=msid:- v\r\na=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:1111 cname:x\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refuses_what_it_must() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let sdp = ("content-type", "application/sdp");
    let bearer = format!("Bearer {KEY}");
    let post = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let client = client.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            client
                .send(http::Method::POST, "/whip/live", &headers, body)
                .await
        }
    };
    // No key: 401 with the scheme to use.
    let refused = post(vec![(sdp.0, sdp.1.into())], OFFER).await;
    assert_eq!(refused.status(), 401, "{}", refused.text());
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{refused:?}"
    );
    // A wrong key: 401, the stream still waits for its publisher.
    let wrong = post(
        vec![
            (sdp.0, sdp.1.into()),
            ("authorization", "Bearer not-the-key-at-all-000".into()),
        ],
        OFFER,
    )
    .await;
    assert_eq!(wrong.status(), 401, "{}", wrong.text());
    assert!(!wrong.text().contains(KEY));
    // The right key for another stream's URL: 401 too.
    let elsewhere = client
        .send(
            http::Method::POST,
            "/whip/other",
            &[sdp, ("authorization", &bearer)],
            OFFER,
        )
        .await;
    assert_eq!(elsewhere.status(), 401);
    // Not SDP: 415.
    let json = post(
        vec![
            ("content-type", "application/json".into()),
            ("authorization", bearer.clone()),
        ],
        "{}",
    )
    .await;
    assert_eq!(json.status(), 415, "{}", json.text());
    // SDP that is no offer: 400, and the stream is not taken by it.
    let garbage = post(
        vec![(sdp.0, sdp.1.into()), ("authorization", bearer.clone())],
        "v=0\r\nthis is not SDP\r\n",
    )
    .await;
    assert_eq!(garbage.status(), 400, "{}", garbage.text());
    assert!(listed(&client).await["status"]["publisher"].is_null());
    // Methods: OPTIONS says what is accepted; PATCH (trickle ICE) and GET are 405.
    let options = client
        .request(http::Method::OPTIONS, "/whip/live", &[])
        .await;
    assert_eq!(options.status(), 204);
    assert_eq!(options.header("accept-post"), Some("application/sdp"));
    // A page on another origin may publish: one Access-Control-Allow-Origin (two make
    // browsers refuse the response), and the session's URL exposed to its script.
    let cors = |fetched: &common::h3client::Fetched, name: &str| -> Vec<String> {
        fetched
            .response
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    assert_eq!(cors(&options, "access-control-allow-origin"), ["*"]);
    for method in [http::Method::GET, http::Method::PATCH] {
        let refused = client.request(method.clone(), "/whip/live", &[]).await;
        assert_eq!(refused.status(), 405, "{method}");
        assert_eq!(refused.header("allow"), Some("POST, OPTIONS"), "{method}");
    }
    // A session that does not exist: 404.
    let key = [("authorization", bearer.as_str())];
    let unknown = client
        .request(http::Method::DELETE, "/whip/live/0123456789abcdef", &key)
        .await;
    assert_eq!(unknown.status(), 404);

    // An offer that parses: 201 with an answer and the session's URL; the stream is
    // claimed until the session ends; a second offer while it lasts is refused (409).
    let created = post(
        vec![(sdp.0, sdp.1.into()), ("authorization", bearer.clone())],
        OFFER,
    )
    .await;
    assert_eq!(created.status(), 201, "{}", created.text());
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    assert!(created.text().contains("a=ice-lite"), "{}", created.text());
    let location = created.header("location").expect("Location").to_string();
    assert_eq!(cors(&created, "access-control-allow-origin"), ["*"]);
    assert!(
        cors(&created, "access-control-expose-headers")
            .iter()
            .any(|v| v.contains("location")),
        "{created:?}"
    );
    assert!(location.starts_with("/whip/live/"), "{location}");
    let busy = post(
        vec![(sdp.0, sdp.1.into()), ("authorization", bearer.clone())],
        OFFER,
    )
    .await;
    assert_eq!(busy.status(), 409, "{}", busy.text());
    // Its URL alone ends nothing: the key is asked for again.
    let keyless = client.request(http::Method::DELETE, &location, &[]).await;
    assert_eq!(keyless.status(), 401);
    let ended = client.request(http::Method::DELETE, &location, &key).await;
    assert_eq!(ended.status(), 200);
    let again = client.request(http::Method::DELETE, &location, &key).await;
    assert_eq!(again.status(), 404, "a session ends once");
    // The DELETE freed the stream: the next offer is taken.
    let deadline = Instant::now() + Duration::from_secs(5);
    let next = loop {
        let next = post(
            vec![(sdp.0, sdp.1.into()), ("authorization", bearer.clone())],
            OFFER,
        )
        .await;
        if next.status() != 409 || Instant::now() > deadline {
            break next;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(next.status(), 201, "{}", next.text());
    assert_ne!(next.header("location"), Some(location.as_str()));
    // A session whose peer never connects (this offer's candidates lead nowhere) is
    // dropped after 15 s, and the stream with it: a publisher that tried and failed
    // does not hold the stream for ever.
    let started = Instant::now();
    let after_timeout = loop {
        let offer = post(
            vec![(sdp.0, sdp.1.into()), ("authorization", bearer.clone())],
            OFFER,
        )
        .await;
        if offer.status() != 409 || started.elapsed() > Duration::from_secs(25) {
            break offer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(after_timeout.status(), 201, "{}", after_timeout.text());
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "held until the connect timeout, not dropped at once"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_over_whip_and_hls_js_plays_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path()).await;
    let port = server.h3_addr.port();
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let args = vec![
        format!("https://127.0.0.1:{port}"),
        port.to_string(),
        server.tls.spki_sha256.clone(),
        "live".into(),
        KEY.into(),
        "24".into(),
        "60".into(),
    ];
    let browser = tokio::spawn(async move { browser::run_script("whip.mjs", &args).await });

    // While Chromium publishes: the stream is live from a WHIP publisher, and a
    // complete segment decodes, H.264 at the fake camera's size.
    let playlist = wait_segments(&client, 3, Duration::from_secs(40)).await;
    let entry = listed(&client).await;
    assert_eq!(entry["status"]["state"], "live", "{entry}");
    assert_eq!(entry["status"]["publisher"]["protocol"], "whip", "{entry}");
    let listed_playlist = parse_media_playlist(&playlist).expect("playlist");
    let (segment, frames, video, audio) =
        decoded_segment(&client, dir.path(), "live", &listed_playlist, 1).await;
    assert!(
        frames
            .iter()
            .find(|f| f.media_type == "video")
            .is_some_and(|f| f.key_frame),
        "a segment starts with a keyframe"
    );
    assert!(video >= 5, "{video} pictures in {segment}");
    // A segment is one keyframe interval, which Mirror asks for each segment target
    // (1 s here): a little more, by the time the browser takes to answer (up to half
    // a second while its bandwidth estimate ramps up and its encoder skips frames).
    // Unasked, Chromium's keyframes are minutes apart.
    let duration = listed_playlist.segments[1].duration.as_secs_f64();
    assert!(
        (0.95..2.0).contains(&duration),
        "{segment} lasts {duration} s: {playlist}"
    );
    // The browser's Opus, made AAC: 48 kHz, 1024 samples a frame, ~47 a second.
    let expected_audio = duration * 48_000.0 / 1024.0;
    assert!(
        (audio as f64 - expected_audio).abs() <= 3.0,
        "{audio} AAC frames in {duration} s"
    );
    publisher_bitrate(&client).await;
    let multivariant = client.get("/live/index.m3u8").await.text();
    assert!(
        multivariant.contains("mp4a.40.2") && multivariant.contains("RESOLUTION=1280x720"),
        "{multivariant}"
    );

    let result = browser.await.expect("browser run");
    assert!(result["publish"]["error"].is_null(), "{result}");
    assert_eq!(result["publish"]["codec"], "video/H264", "{result}");
    assert!(result["player"]["error"].is_null(), "hls.js: {result}");
    let latencies = result["player"]["latencies"].as_array().expect("latencies");
    assert!(latencies.len() >= 24, "{result}");
    assert!(
        result["player"]["protocols"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p == "h3")),
        "{result}"
    );
    assert_eq!(result["stopped"]["state"], "stopped", "{result}");
    // Its DELETE ended the publication: the stream waits for the next publisher.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed(&client).await["status"]["publisher"].is_null() {
        assert!(Instant::now() < deadline, "the publisher is gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown(Duration::from_secs(1)).await;
}
