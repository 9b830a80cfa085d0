//! Playback tokens through the shipped cache-tier VCL (Debian's Varnish in front of
//! Mirror's plain-HTTP listener, with the CDN's shared secret configured on both): 50
//! viewers with 50 different tokens asking the same blocking reload make one request
//! for it at the origin (and one pre-flight per token), and all get the same playlist
//! bytes; a request without a token, with an expired one or with one for another stream
//! gets Mirror's refusal through the cache; a public stream needs no token, a cdn-only
//! one is served through the tier; and the
//! origin's plain listener serves nothing to a request without the secret.

use std::time::Duration;

use mirror::http::admin::Secret;
use mirror::http::auth::Policy;
use mirror::ingest::SourceSpec;
use mirror::llhls::parse::parse_media_playlist;
use mirror::server::RunningServer;

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/playback.rs"]
mod playback;
#[path = "common/varnish.rs"]
mod varnish;

use playback::{now, stream};
use varnish::Varnish;

const CDN_SECRET: &str = "cdn-shared-secret-for-varnish-0123";

/// A token for `streams` until `expires`, numbered `n` (a viewer id, so each differs).
fn token(streams: &str, expires: u64, n: u64) -> String {
    // Seconds apart: 50 viewers, 50 different tokens.
    playback::token(streams, expires + n)
}

/// curl over HTTP/1.1 with `headers`: status and body.
async fn curl(url: String, headers: Vec<String>) -> (u16, Vec<u8>) {
    let mut command = tokio::process::Command::new("curl");
    command.args(["-s", "--max-time", "10", "-w", "\n%{http_code}"]);
    for header in &headers {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().await.expect("curl runs");
    let split = output
        .stdout
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("a status line");
    let status = String::from_utf8_lossy(&output.stdout[split + 1..])
        .trim()
        .parse()
        .expect("a status");
    (status, output.stdout[..split].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tokens_one_origin_request_through_the_shipped_vcl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.auth.keys = playback::keys();
    settings.auth.cdn_secret = Some(Secret(CDN_SECRET.into()));
    settings.server.http_listen = Some("127.0.0.1:0".parse().expect("addr"));
    settings.streams = vec![
        stream("paid", Policy::Token),
        stream("open", Policy::Public),
        stream("shield", Policy::CdnOnly),
    ];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server");
    let origin = server.http_addr.expect("plain listener");
    let varnish = Varnish::start_shipped_vcl_with_secret(origin, Some(CDN_SECRET));
    let edge = |path: &str| format!("http://127.0.0.1:{}{path}", varnish.port);

    // The live edge, through the cache, with one viewer's token.
    let first = token("paid", now() + 600, 0);
    let started = std::time::Instant::now();
    let listed = loop {
        let (status, body) = curl(edge(&format!("/t/{first}/paid/video.m3u8")), vec![]).await;
        if status == 200
            && let Some(listed) = parse_media_playlist(&String::from_utf8_lossy(&body))
            && !listed.segments.is_empty()
        {
            break listed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no playlist: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // 50 viewers, 50 tokens, the same blocking reload for the part after the next one,
    // so that it is still held when the last viewer's pre-flight is done; and not for a
    // part that ends its segment: an answer at a segment boundary is kept only 100 ms,
    // and viewers whose pre-flight took longer than that would fetch it again.
    let (msn, part) = listed.next_part();
    let per_segment = listed
        .segments
        .iter()
        .map(|s| s.parts.len() as u64)
        .filter(|&parts| parts > 0)
        .max()
        .expect("a complete segment with its parts listed");
    let mut index = msn * per_segment + u64::from(part) + 1;
    if index % per_segment == per_segment - 1 {
        index += 1;
    }
    let (msn, part) = (index / per_segment, (index % per_segment) as u32);
    let query = format!("_HLS_msn={msn}&_HLS_part={part}");
    let tokens: Vec<String> = (1..=50).map(|n| token("paid", now() + 600, n)).collect();
    let answers = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| curl(edge(&format!("/t/{t}/paid/video.m3u8?{query}")), vec![])),
    )
    .await;
    for (status, _) in &answers {
        assert_eq!(*status, 200);
    }
    assert!(
        answers.iter().all(|(_, body)| body == &answers[0].1),
        "every viewer got the same playlist bytes"
    );
    let text = String::from_utf8_lossy(&answers[0].1).to_string();
    assert!(!text.contains("m1."), "no token in the playlist");
    // Give the log a moment to have every fetch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        varnish.fetches_of(&format!("/paid/video.m3u8?{query}")),
        1,
        "one origin request for the playlist, without the token"
    );
    let preflights: Vec<usize> = tokens
        .iter()
        .map(|t| varnish.fetches_of(&format!("/t/{t}/paid/.access")))
        .collect();
    assert!(
        preflights.iter().all(|&n| n == 1),
        "one pre-flight per token: {preflights:?}"
    );

    // A part, through the cache under two tokens: one fetch.
    let part_name = listed.segments[0].parts[0].uri.clone();
    for t in &tokens[..2] {
        let (status, body) = curl(edge(&format!("/t/{t}/paid/{part_name}")), vec![]).await;
        assert_eq!(status, 200);
        assert!(!body.is_empty());
    }
    assert_eq!(varnish.fetches_of(&format!("/paid/{part_name}")), 1);

    // Refusals come through the cache as Mirror gave them.
    let (status, body) = curl(edge("/paid/video.m3u8"), vec![]).await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let expired = token("paid", now() - 100, 0);
    let (status, body) = curl(edge(&format!("/t/{expired}/paid/video.m3u8")), vec![]).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    let elsewhere = token("open", now() + 600, 0);
    let (status, _) = curl(edge(&format!("/t/{elsewhere}/paid/{part_name}")), vec![]).await;
    assert_eq!(
        status, 403,
        "a part is refused to another stream's token too"
    );
    // A client cannot claim to be admitted.
    let (status, _) = curl(
        edge("/paid/video.m3u8"),
        vec![
            "X-Mirror-Admitted: 1".into(),
            format!("X-Mirror-Original: /paid/video.m3u8"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    // A public stream needs no token; a cdn-only one is the cache tier's to serve.
    assert_eq!(curl(edge("/open/index.m3u8"), vec![]).await.0, 200);
    let started = std::time::Instant::now();
    loop {
        let (status, body) = curl(edge("/shield/video.m3u8"), vec![]).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cdn-only through the tier: {status} {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The origin's plain listener, asked directly without the secret: nothing.
    let (status, _) = curl(format!("http://{origin}/open/index.m3u8"), vec![]).await;
    assert_eq!(status, 403);
}
