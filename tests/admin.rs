//! The admin API on a live server, over HTTP/3 (Mirror's quinn + h3 client) and HTTP/2
//! (curl): the token is asked for, a stream is added, replaced and deleted while another
//! stream plays untouched, bad bodies get 400s naming the field, a deleted stream's held
//! reload ends 503 at once and its names 404 once its window has passed, and its series
//! leave `/metrics`. A replacement whose source does not play leaves the running stream
//! in place; the plain-HTTP listener of a cache tier has no admin API.

use std::time::{Duration, Instant};

use http::Method;
use mirror::http::admin::Secret;
use mirror::server::RunningServer;

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/h3client.rs"]
mod h3client;

use h3client::{Fetched, H3Client};

const TOKEN: &str = "test-admin-token-0123456789";

fn json(fetched: &Fetched) -> serde_json::Value {
    serde_json::from_slice(&fetched.body).unwrap_or_else(|e| {
        panic!(
            "{e}: {:?} {}",
            fetched.response.status(),
            String::from_utf8_lossy(&fetched.body)
        )
    })
}

fn status(fetched: &Fetched) -> u16 {
    fetched.response.status().as_u16()
}

/// The init segment a media playlist maps.
fn init_of(playlist: &str) -> String {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no EXT-X-MAP in\n{playlist}"))
        .to_string()
}

/// The last part a media playlist lists.
fn last_part(playlist: &str) -> String {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .next_back()
        .unwrap_or_else(|| panic!("no part in\n{playlist}"))
        .to_string()
}

fn media_sequence_end(playlist: &str) -> u64 {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MEDIA-SEQUENCE");
    first
        + playlist
            .lines()
            .filter(|l| l.starts_with("#EXTINF"))
            .count() as u64
}

struct Admin<'a> {
    client: &'a H3Client,
}

impl Admin<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Fetched {
        let auth = format!("Bearer {TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        match body {
            Some(body) => self.client.send(method, path, &headers, body).await,
            None => self.client.request(method, path, &headers).await,
        }
    }
}

/// curl over HTTP/2 with the token: status and body.
fn curl_h2(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sk", "--http2", "-X", method, "-w", "\n%{http_code}"])
        .args(["-H", &format!("authorization: Bearer {TOKEN}")])
        .args(["-H", "content-type: application/json"]);
    if let Some(body) = body {
        command.args(["--data-binary", body]);
    }
    let output = command
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_added_replaced_and_deleted_while_another_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    settings.admin.token = Some(Secret(TOKEN.into()));
    settings.server.window_segments = 6;
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let admin = Admin { client: &client };
    let played = client.get("/test/video.m3u8").await;
    assert_eq!(status(&played), 200);
    let test_init = init_of(&played.text());

    // The token is asked for.
    let anonymous = client.get("/admin/streams").await;
    assert_eq!(status(&anonymous), 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let wrong = client
        .request(
            Method::GET,
            "/admin/streams",
            &[("authorization", "Bearer not-the-token-at-all")],
        )
        .await;
    assert_eq!(status(&wrong), 401);
    let listed = json(&admin.call(Method::GET, "/admin/streams", None).await);
    assert_eq!(listed["streams"][0]["name"], "test");
    assert_eq!(listed["streams"][0]["origin"], "config");

    // Added: served at once under its name.
    let added = admin
        .call(
            Method::POST,
            "/admin/streams",
            Some(r#"{"name":"extra","source":"testsrc"}"#),
        )
        .await;
    assert_eq!(status(&added), 201, "{}", added.text());
    assert_eq!(added.header("location"), Some("/admin/streams/extra"));
    assert_eq!(json(&added)["origin"], "api");
    let extra = client.get("/extra/video.m3u8").await;
    assert_eq!(status(&extra), 200);
    let part = last_part(&extra.text());
    assert_eq!(status(&client.get(&format!("/extra/{part}")).await), 200);

    // Refused, each with its field.
    let again = admin
        .call(
            Method::POST,
            "/admin/streams",
            Some(r#"{"name":"extra","source":"testsrc"}"#),
        )
        .await;
    assert_eq!(status(&again), 409);
    assert_eq!(json(&again)["error"], "exists");
    for (body, field) in [
        (
            r#"{"name":"bad","source":"testsrc","renditions":[{"name":"low","width":"wide"}]}"#,
            "renditions[0].width",
        ),
        (r#"{"name":"admin","source":"testsrc"}"#, "name"),
        (r#"{"name":"bad"}"#, ""),
        (r#"{"name":"bad","source":"/no/such/file.mp4"}"#, "source"),
        (
            r#"{"name":"bad","source":"testsrc","renditions":[{"name":"c","codec":"copy"}]}"#,
            "renditions.codec",
        ),
    ] {
        let refused = admin.call(Method::POST, "/admin/streams", Some(body)).await;
        assert_eq!(status(&refused), 400, "{body}: {}", refused.text());
        let error = json(&refused);
        assert_eq!(
            error["field"].as_str().unwrap_or(""),
            field,
            "{body}: {error}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let unknown = admin
        .call(
            Method::POST,
            "/admin/streams",
            Some(r#"{"name":"bad","source":"testsrc","colour":1}"#),
        )
        .await;
    assert_eq!(status(&unknown), 400);
    assert!(
        json(&unknown)["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour"))
    );
    assert_eq!(
        status(&client.get("/bad/index.m3u8").await),
        404,
        "nothing refused was started"
    );

    // Replaced: started anew with a ladder; the other stream is not touched.
    let replaced = admin
        .call(
            Method::PUT,
            "/admin/streams/extra",
            Some(r#"{"name":"extra","source":"testsrc","renditions":[{"name":"low","width":160,"height":90,"video_bitrate_kbps":200}]}"#),
        )
        .await;
    assert_eq!(status(&replaced), 200, "{}", replaced.text());
    let low = client.get("/extra/low.m3u8").await;
    assert_eq!(status(&low), 200);
    let test_now = client.get("/test/video.m3u8").await;
    assert_eq!(
        init_of(&test_now.text()),
        test_init,
        "the other stream kept its names"
    );
    let mismatch = admin
        .call(
            Method::PUT,
            "/admin/streams/extra",
            Some(r#"{"name":"other","source":"testsrc"}"#),
        )
        .await;
    assert_eq!(status(&mismatch), 400);
    assert_eq!(json(&mismatch)["field"], "name");

    // Deleted: a held reload ends 503 at once; its names are served until its window
    // has passed, then 404.
    let low_text = low.text();
    let next = media_sequence_end(&low_text) + 1;
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answered = client
                .get(&format!("/extra/low.m3u8?_HLS_msn={next}"))
                .await;
            (status(&answered), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = Instant::now();
    let gone = admin
        .call(Method::DELETE, "/admin/streams/extra", None)
        .await;
    assert_eq!(status(&gone), 204);
    let (held_status, held_for) = held.await.expect("held request");
    assert_eq!(held_status, 503, "a deleted stream's held reload");
    assert!(held_for < Duration::from_secs(3), "held {held_for:?}");
    let listed = admin.call(Method::GET, "/admin/streams/extra", None).await;
    assert_eq!(status(&listed), 404);
    let part = last_part(&low_text);
    assert_eq!(
        status(&client.get(&format!("/extra/{part}")).await),
        200,
        "served while it retires"
    );
    let retired = loop {
        if status(&client.get(&format!("/extra/{part}")).await) == 404 {
            break deleted.elapsed();
        }
        assert!(deleted.elapsed() < Duration::from_secs(20), "never retired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // TD 1 s × (6 segments of window + 3).
    assert!(
        retired >= Duration::from_secs(8),
        "retired after {retired:?}"
    );
    assert_eq!(status(&client.get("/extra/low.m3u8").await), 404);
    let twice = admin
        .call(Method::DELETE, "/admin/streams/extra", None)
        .await;
    assert_eq!(status(&twice), 404);

    // The TCP front end reads bodies too.
    let port = server.tcp_addr.port();
    let (code, body) = curl_h2(
        port,
        "POST",
        "/admin/streams",
        Some(r#"{"name":"viah2","source":"testsrc"}"#),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(curl_h2(port, "DELETE", "/admin/streams/viah2", None).0, 204);
    let (code, _) = curl_h2(port, "POST", "/admin/streams", Some(&"x".repeat(100 << 10)));
    assert_eq!(code, 413, "a body past 64 KiB");

    // Through all of it the first stream kept playing.
    let playing = client.get("/test/video.m3u8").await;
    let next = media_sequence_end(&playing.text());
    let blocking = client
        .get(&format!("/test/video.m3u8?_HLS_msn={next}"))
        .await;
    assert_eq!(status(&blocking), 200);
    assert_eq!(init_of(&blocking.text()), test_init);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_there_is_no_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    assert!(std::env::var(mirror::http::admin::TOKEN_ENV).is_err());
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    for path in ["/admin/streams", "/admin/openapi.json"] {
        let fetched = client
            .request(
                Method::GET,
                path,
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await;
        assert_eq!(status(&fetched), 404, "{path}");
    }
    let posted = client
        .send(
            Method::POST,
            "/admin/streams",
            &[],
            r#"{"name":"x","source":"testsrc"}"#,
        )
        .await;
    assert_eq!(status(&posted), 404);
}

/// `/metrics` over HTTP/3.
async fn metrics(client: &H3Client) -> String {
    client.get("/metrics").await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_that_cannot_play_leaves_the_stream_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.admin.token = Some(Secret(TOKEN.into()));
    settings.source.open_timeout_ms = 1000;
    settings.server.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let admin = Admin { client: &client };
    let test_init = init_of(&client.get("/test/video.m3u8").await.text());

    // Nothing listens on port 9: the replacement never publishes, so it does not take
    // the name, and its credentials are not in the answer.
    let started = Instant::now();
    let refused = admin
        .call(
            Method::PUT,
            "/admin/streams/test",
            Some(r#"{"name":"test","source":"rtsp://viewer:hunter2@127.0.0.1:9/cam"}"#),
        )
        .await;
    assert_eq!(status(&refused), 400, "{}", refused.text());
    assert_eq!(json(&refused)["error"], "cannot_start");
    assert!(
        refused.text().contains("the running one stays"),
        "{}",
        refused.text()
    );
    assert!(!refused.text().contains("hunter2"), "{}", refused.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    let still = client.get("/test/video.m3u8").await;
    assert_eq!(status(&still), 200);
    assert_eq!(
        init_of(&still.text()),
        test_init,
        "the running stream stayed"
    );
    let listed = admin.call(Method::GET, "/admin/streams/test", None).await;
    assert_eq!(json(&listed)["source"], "testsrc");

    // A stream deleted: its series leave /metrics once it has stopped.
    let added = admin
        .call(
            Method::POST,
            "/admin/streams",
            Some(r#"{"name":"brief","source":"testsrc"}"#),
        )
        .await;
    assert_eq!(status(&added), 201, "{}", added.text());
    let series = "mirror_parts_total{stream=\"brief\"";
    let started = Instant::now();
    while !metrics(&client).await.contains(series) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "brief never published"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted = admin
        .call(Method::DELETE, "/admin/streams/brief", None)
        .await;
    assert_eq!(status(&deleted), 204);
    let started = Instant::now();
    while metrics(&client).await.contains(series) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "brief is still reported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metrics(&client)
            .await
            .contains("mirror_parts_total{stream=\"test\"")
    );

    // The plain-HTTP listener (a cache tier's) answers media but not the admin API,
    // token or not: the token would cross the network in the clear.
    let plain = server.http_addr.expect("plain listener");
    let curl = |path: &str| {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", &format!("authorization: Bearer {TOKEN}")])
            .arg(format!("http://{plain}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert_eq!(curl("/test/video.m3u8"), "200");
    assert_eq!(curl("/admin/streams"), "404");
    assert_eq!(curl("/admin/openapi.json"), "404");
}
