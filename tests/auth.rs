//! Who may watch, on a live server: a `token` stream plays over HTTP/3 (Mirror's
//! quinn + h3 client), HTTP/2 and HTTP/1.1 (curl) with a token as a path prefix, every
//! relative URI of its playlists followed under it; playlist bodies are the same bytes
//! whatever the token; a missing, expired, tampered or wrong-stream token is refused
//! with its reason, counted in `/metrics`; a site's own JWT admits the same way; a
//! viewer already watching keeps its connection past the token's expiry; the CDN's
//! secret admits a `cdn-only` stream and is required on the plain-HTTP listener;
//! `/streams` names a stream that is not public to an operator only, and
//! `[auth] ops = "operator"` closes `/streams` and `/metrics` to everyone else.

use std::time::{Duration, Instant};

use mirror::http::admin::Secret;
use mirror::http::auth::jwt::JwtAlgorithm;
use mirror::http::auth::{JwtKeySettings, OpsAccess, Policy};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;

#[path = "common/browser.rs"]
mod browser;
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/h3client.rs"]
mod h3client;
#[path = "common/playback.rs"]
mod playback;

use h3client::H3Client;
use playback::{now, stream, token};

const CDN_SECRET: &str = "cdn-shared-secret-0123";
const JWT_SECRET: &str = "the-sites-jwt-secret-0123456789abcdef";

/// A JWT as a site's own login service would issue it (HS256, `kid` "site").
fn jwt(stream: &str, expires: u64) -> String {
    signed_jwt(&serde_json::json!({"sub": "viewer-1", "exp": expires, "stream": stream}))
}

/// `claims` signed as the site's JWTs are.
fn signed_jwt(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("site".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("signs")
}

/// curl with `args` for `url`: status and body.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let output = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (status.trim().parse().expect("a status"), body.to_string())
}

/// The URIs a playlist names (tags' `URI="…"` and plain lines), in order.
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .flat_map(|line| {
            if let Some(tag) = line.strip_prefix('#') {
                tag.split("URI=\"")
                    .skip(1)
                    .filter_map(|rest| rest.split('"').next())
                    .map(str::to_string)
                    .collect()
            } else if line.is_empty() {
                Vec::new()
            } else {
                vec![line.to_string()]
            }
        })
        .collect()
}

async fn server() -> (tempfile::TempDir, RunningServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.auth.keys = playback::keys();
    settings.auth.jwt_keys = vec![JwtKeySettings {
        id: "site".into(),
        algorithm: JwtAlgorithm::HS256,
        secret: Some(Secret(JWT_SECRET.into())),
        secret_file: None,
        public_key_file: None,
    }];
    settings.auth.cdn_secret = Some(Secret(CDN_SECRET.into()));
    settings.server.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.streams = vec![
        stream("open", Policy::Public),
        stream("paid", Policy::Token),
        stream("edge", Policy::CdnOnly),
    ];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server");
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stream_plays_with_its_token_and_refuses_the_rest() {
    let (_dir, server) = server().await;
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let valid = token("paid", now() + 600);
    let base = format!("/t/{valid}/paid");

    // Every URI the playlists give, followed under the token prefix.
    let started = Instant::now();
    let media_playlist = loop {
        let multivariant = client.get(&format!("{base}/index.m3u8")).await;
        if multivariant.response.status() == 200 {
            let media = uris(&multivariant.text());
            assert_eq!(media, ["video.m3u8"], "relative URIs");
            let fetched = client.get(&format!("{base}/{}", media[0])).await;
            assert_eq!(fetched.response.status(), 200);
            let text = fetched.text();
            if text.matches("#EXTINF").count() >= 2 {
                break text;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names = uris(&media_playlist);
    assert!(names.len() > 5, "{media_playlist}");
    for name in names.iter().filter(|n| !n.ends_with(".m3u8")) {
        let fetched = client.get(&format!("{base}/{name}")).await;
        assert_eq!(fetched.response.status(), 200, "{name}");
        assert!(!fetched.body.is_empty());
    }
    let listed = mirror::llhls::parse::parse_media_playlist(&media_playlist).expect("playlist");
    let (msn, part) = listed.next_part();
    let blocking = client
        .get(&format!(
            "{base}/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        ))
        .await;
    assert_eq!(blocking.response.status(), 200, "a blocking reload");

    // The same playlist under another valid token, and through the CDN: the same bytes.
    let other = token("pa*", now() + 900);
    let a = client
        .get(&format!(
            "{base}/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        ))
        .await;
    let b = client
        .get(&format!(
            "/t/{other}/paid/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        ))
        .await;
    assert_eq!(
        a.body, b.body,
        "playlist bodies are the same for every viewer"
    );
    let cdn = client
        .request(
            http::Method::GET,
            &format!("/paid/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
            &[("x-mirror-cdn-secret", CDN_SECRET)],
        )
        .await;
    assert_eq!(cdn.response.status(), 200);
    assert_eq!(cdn.body, a.body);

    // Refusals, each with its reason.
    let missing = client.get("/paid/index.m3u8").await;
    assert_eq!(missing.response.status(), 401);
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    let expired = token("paid", now() - 1);
    let tampered = format!("{}A", &valid[..valid.len() - 1]);
    let wrong = token("open", now() + 600);
    for (token, reason) in [
        (expired.as_str(), "expired"),
        (tampered.as_str(), "signature"),
        (wrong.as_str(), "another stream"),
        ("m1.not-a-token", "malformed"),
    ] {
        let refused = client.get(&format!("/t/{token}/paid/video.m3u8")).await;
        assert_eq!(refused.response.status(), 403, "{reason}");
        assert!(
            refused.text().contains(reason),
            "{reason}: {}",
            refused.text()
        );
    }
    let bearer = client
        .request(
            http::Method::GET,
            "/paid/index.m3u8",
            &[("authorization", &format!("Bearer {valid}"))],
        )
        .await;
    assert_eq!(bearer.response.status(), 200, "a token in Authorization");
    // Its answer is that viewer's alone: a shared cache must not reuse it (RFC 9111
    // 3.5 lets one store a `public` answer to a request with Authorization).
    let caching = bearer
        .header("cache-control")
        .unwrap_or_default()
        .to_string();
    assert!(caching.starts_with("private"), "{caching}");
    let by_path = client.get(&format!("{base}/index.m3u8")).await;
    assert!(
        by_path
            .header("cache-control")
            .is_some_and(|c| c.starts_with("public"))
    );
    // A JWT from the site's own login service, as a path prefix.
    let site = jwt("paid", now() + 600);
    let by_jwt = client.get(&format!("/t/{site}/paid/video.m3u8")).await;
    assert_eq!(by_jwt.response.status(), 200, "{}", by_jwt.text());
    assert!(by_jwt.text().contains("#EXT-X-PART:"));
    let jwt_elsewhere = jwt("open", now() + 600);
    let refused = client
        .get(&format!("/t/{jwt_elsewhere}/paid/video.m3u8"))
        .await;
    assert_eq!(refused.response.status(), 403);
    assert!(refused.text().contains("another stream"));
    let jwt_expired = jwt("paid", now() - 5);
    assert_eq!(
        client
            .get(&format!("/t/{jwt_expired}/paid/video.m3u8"))
            .await
            .response
            .status(),
        403
    );
    // A JWT whose `nbf` is an hour ahead is not valid yet.
    let early = signed_jwt(&serde_json::json!({
        "exp": now() + 7200, "nbf": now() + 3600, "stream": "paid"
    }));
    let refused = client.get(&format!("/t/{early}/paid/video.m3u8")).await;
    assert_eq!(refused.response.status(), 403);
    assert!(
        refused.text().contains("not valid yet"),
        "{}",
        refused.text()
    );
    // A public stream needs nothing; a cdn-only one the CDN's secret.
    assert_eq!(client.get("/open/index.m3u8").await.response.status(), 200);
    assert_eq!(client.get("/edge/index.m3u8").await.response.status(), 403);

    // A stranger's `/streams` names the public stream only; the CDN's names them all.
    let listed = |text: String| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        value["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(listed(client.get("/streams").await.text()), ["open"]);
    let by_cdn = client
        .request(
            http::Method::GET,
            "/streams",
            &[("x-mirror-cdn-secret", CDN_SECRET)],
        )
        .await;
    assert_eq!(listed(by_cdn.text()), ["edge", "open", "paid"]);

    // HTTP/2 and HTTP/1.1 alike.
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", server.tcp_addr.port());
    for protocol in ["--http2", "--http1.1"] {
        assert_eq!(
            curl(&[protocol], &url(&format!("{base}/video.m3u8"))).0,
            200
        );
        assert_eq!(curl(&[protocol], &url("/paid/video.m3u8")).0, 401);
        let (status, body) = curl(&[protocol], &url(&format!("/t/{expired}/paid/video.m3u8")));
        assert_eq!(status, 403, "{body}");
        let part = names.iter().find(|n| n.ends_with(".m4s")).expect("a part");
        assert_eq!(curl(&[protocol], &url(&format!("{base}/{part}"))).0, 200);
    }

    // The plain-HTTP listener (a cache tier's) serves only requests with the secret.
    let plain = server.http_addr.expect("plain listener");
    let plain_url = |path: &str| format!("http://{plain}{path}");
    let secret = format!("x-mirror-cdn-secret: {CDN_SECRET}");
    assert_eq!(curl(&[], &plain_url("/open/index.m3u8")).0, 403);
    assert_eq!(
        curl(&[], &plain_url("/streams")).0,
        403,
        "it names every stream"
    );
    assert_eq!(curl(&[], &plain_url("/metrics")).0, 403);
    assert_eq!(
        curl(&[], &plain_url("/healthz")).0,
        200,
        "a load balancer's check"
    );
    assert_eq!(
        curl(&["-H", &secret], &plain_url("/open/index.m3u8")).0,
        200
    );
    assert_eq!(
        curl(&["-H", &secret], &plain_url("/edge/index.m3u8")).0,
        200
    );
    assert_eq!(
        curl(&["-H", &secret], &plain_url("/paid/video.m3u8")).0,
        200
    );
    assert_eq!(
        curl(
            &["-H", "x-mirror-cdn-secret: wrong-secret-0000000"],
            &plain_url("/paid/video.m3u8")
        )
        .0,
        403
    );

    // Every refusal is counted by its reason.
    let metrics = client.get("/metrics").await.text();
    for reason in [
        "token_missing",
        "token_expired",
        "token_bad_signature",
        "token_wrong_stream",
        "token_malformed",
        "cdn_only",
        "cdn_secret_required",
        "token_not_yet_valid",
    ] {
        assert!(
            metrics.contains(&format!(
                "mirror_access_denied_total{{reason=\"{reason}\"}}"
            )),
            "{reason}:\n{metrics}"
        );
    }
}

/// Expiry is checked when a connection first presents the token: the viewer watching
/// goes on; a new connection with the same token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_already_watching_outlives_its_tokens_expiry() {
    let (_dir, server) = server().await;
    let short = token("paid", now() + 2);
    let path = format!("/t/{short}/paid/video.m3u8");
    let watching = H3Client::connect(server.h3_addr, &server.tls).await;
    assert_eq!(watching.get(&path).await.response.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        watching.get(&path).await.response.status(),
        200,
        "the connection that was watching"
    );
    let late = H3Client::connect(server.h3_addr, &server.tls).await;
    let refused = late.get(&path).await;
    assert_eq!(refused.response.status(), 403);
    assert!(refused.text().contains("expired"));
}

/// The player page in headless Chromium, over HTTP/3, given `query`: what it reported.
async fn play(server: &RunningServer, query: &str, samples: u32) -> serde_json::Value {
    let port = server.h3_addr.port();
    let args = [
        format!("https://127.0.0.1:{port}/?{query}"),
        port.to_string(),
        server.tls.spki_sha256.clone(),
        samples.to_string(),
        "40".into(),
    ];
    browser::run_script("play.mjs", &args).await
}

/// What the player fetched: (URL, status) of every playlist and media response.
fn fetched(result: &serde_json::Value) -> Vec<(String, u64)> {
    result["media"]
        .as_array()
        .expect("media")
        .iter()
        .map(|r| {
            let url = r["url"].as_str().expect("url").to_string();
            (url, r["status"].as_u64().expect("status"))
        })
        .collect()
}

/// hls.js, given only a tokenised multivariant URL, plays a `token` stream over HTTP/3:
/// every playlist, init segment and part it asks for carries the token and is served.
/// Without a token, with an expired one or one for another stream it gets the refusal
/// and stops with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_token_stream_with_nothing_but_a_tokenised_url() {
    let (_dir, server) = server().await;
    let valid = token("paid", now() + 600);
    let result = play(&server, &format!("stream=paid&token={valid}"), 8).await;
    assert!(result["error"].is_null(), "hls.js error: {result}");
    let media = fetched(&result);
    let prefix = format!("/t/{valid}/paid/");
    assert!(media.iter().any(|(u, _)| u.contains(".m4s")), "{result}");
    for (url, status) in &media {
        assert!(url.contains(&prefix), "without the token: {url}");
        assert!(*status == 200 || *status == 206, "{url}: {status}");
    }

    let expired = token("paid", now() - 5);
    let wrong = token("open", now() + 600);
    for (query, status) in [
        ("stream=paid".to_string(), 401),
        (format!("stream=paid&token={expired}"), 403),
        (format!("stream=paid&token={wrong}"), 403),
    ] {
        let result = play(&server, &query, 8).await;
        assert!(!result["error"].is_null(), "{query}: played? {result}");
        let media = fetched(&result);
        assert!(
            !media.is_empty() && media.iter().all(|(_, s)| *s == status),
            "{query}: {media:?}"
        );
    }
}

/// A token stream replaced by a public one (admin API): the new stream plays without a
/// token, the old stream's names (served while they retire) still need one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_streams_old_names_keep_its_policy() {
    const ADMIN: &str = "admin-token-for-the-replacement";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.auth.keys = playback::keys();
    settings.admin.token = Some(Secret(ADMIN.into()));
    settings.streams = vec![stream("paid", Policy::Token)];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let base = format!("/t/{}/paid", token("paid", now() + 600));
    let started = Instant::now();
    let old_part = loop {
        let playlist = client.get(&format!("{base}/video.m3u8")).await.text();
        if let Some(part) = uris(&playlist).into_iter().find(|u| u.ends_with(".m4s")) {
            break part;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no part");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let auth = format!("Bearer {ADMIN}");
    let replaced = client
        .send(
            http::Method::PUT,
            "/admin/streams/paid",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            r#"{"name":"paid","source":"testsrc","policy":"public"}"#,
        )
        .await;
    assert_eq!(replaced.response.status(), 200, "{}", replaced.text());
    // The new stream is public.
    assert_eq!(client.get("/paid/video.m3u8").await.response.status(), 200);
    // The old one's part, still served while it retires: only with a token.
    assert_eq!(
        client
            .get(&format!("/paid/{old_part}"))
            .await
            .response
            .status(),
        401,
        "the old token stream's names stayed closed"
    );
    assert_eq!(
        client
            .get(&format!("{base}/{old_part}"))
            .await
            .response
            .status(),
        200
    );
}

/// `[auth] ops = "operator"`: `/streams` and `/metrics` answer the admin token or the
/// CDN's secret, and refuse anyone else with 401 (media is not affected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_reads_streams_and_metrics_when_configured() {
    const ADMIN: &str = "admin-token-for-the-operator";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.admin.token = Some(Secret(ADMIN.into()));
    settings.auth.cdn_secret = Some(Secret(CDN_SECRET.into()));
    settings.auth.ops = OpsAccess::Operator;
    settings.streams = vec![stream("open", Policy::Public)];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let bearer = format!("Bearer {ADMIN}");
    for path in ["/streams", "/metrics"] {
        let stranger = client.get(path).await;
        assert_eq!(stranger.response.status(), 401, "{path}");
        assert!(
            stranger.text().contains("admin token"),
            "{}",
            stranger.text()
        );
        assert!(stranger.header("www-authenticate").is_some());
        let wrong = client
            .request(
                http::Method::GET,
                path,
                &[("authorization", "Bearer not-the-admin-token-at-all")],
            )
            .await;
        assert_eq!(wrong.response.status(), 401, "{path}: a wrong token");
        for (name, value) in [
            ("authorization", bearer.as_str()),
            ("x-mirror-cdn-secret", CDN_SECRET),
        ] {
            let operator = client
                .request(http::Method::GET, path, &[(name, value)])
                .await;
            assert_eq!(operator.response.status(), 200, "{path} with {name}");
        }
    }
    // Viewers are not operators and need not be.
    let started = Instant::now();
    while client.get("/open/index.m3u8").await.response.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "never played");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = client
        .request(http::Method::GET, "/metrics", &[("authorization", &bearer)])
        .await
        .text();
    assert!(
        metrics.contains("mirror_access_denied_total{reason=\"operator_only\"} 4"),
        "{metrics}"
    );
}
