//! Attacks made of requests: thousands held at once, a request rate no player makes,
//! and every malformed request a scanner tries, on all three protocols.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::{STREAM, Target, curl, source};

/// Issue 11.6: thousands of blocking reloads on one connection. Each connection may
/// hold 16 and each address 32; the rest are refused at once with 429, Retry-After and
/// no-store, and the requests held are answered as the live edge moves.
pub(crate) async fn held_requests(target: &Target) {
    let client = target.h3_from(source(30)).await;
    let started = Instant::now();
    let mut answers = Vec::new();
    // 2,000 in waves of 100 (the stream limit per connection), each for the part after
    // the live edge: held about one PART-TARGET.
    for _ in 0..20 {
        let (msn, part) = target.playlist(&client).await.next_part();
        let path = format!("/{STREAM}/video.m3u8?_HLS_msn={msn}&_HLS_part={part}");
        let wave = (0..100).map(|_| client.get(&path));
        answers.extend(join_all(wave).await);
    }
    let (mut held, mut refused) = (0, 0);
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status() {
            200 => held += 1,
            429 => {
                refused += 1;
                assert!(answer.text().contains("held"), "{}", answer.text());
                assert_eq!(answer.header("retry-after"), Some("1"));
                assert_eq!(answer.header("cache-control"), Some("no-store"));
                assert!(
                    answer.headers_after < Duration::from_millis(500),
                    "a refusal was held {:?}",
                    answer.headers_after
                );
            }
            other => panic!("held request answered {other}"),
        }
    }
    eprintln!(
        "held requests: {held} answered, {refused} refused in {:?}",
        started.elapsed()
    );
    assert!(refused >= 1000, "only {refused} of 2000 refused");
    assert!(held >= 16, "only {held} held requests were answered");
}

/// Issue 11.6: a burst of requests far above a player's rate gets 429 past the burst
/// (2,500, then 50 a second) from that address only.
pub(crate) async fn request_rate(target: &Target) {
    let client = target.h3_from(source(31)).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let wave = (0..100).map(|_| client.get("/streams"));
        statuses.extend(
            join_all(wave)
                .await
                .into_iter()
                .map(|r| r.unwrap().status()),
        );
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // Fewer than the 1,000 a second that would cut the address off.
    assert!(refused > 400, "{refused} of 3000 refused");
    assert!(statuses.iter().all(|s| [200, 429].contains(s)));
    let other = target.h3_from(source(32)).await;
    assert_eq!(other.get("/streams").await.unwrap().status(), 200);
}

/// A path, a method, extra headers and the status every protocol must answer.
type BadRequest = (String, &'static str, Vec<(&'static str, String)>, u16);

/// What a scanner sends, and what every protocol must answer. Each status is checked
/// over HTTP/3, HTTP/2 and HTTP/1.1.
pub(crate) async fn bad_requests(target: &Target) {
    let client = target.h3_from(source(33)).await;
    let playlist = target.playlist(&client).await;
    let segment = format!("/{STREAM}/{}", playlist.segments.last().unwrap().uri);
    let many_ranges = format!("bytes={}", vec!["0-0"; 500].join(","));
    let cases: Vec<BadRequest> = vec![
        ("/../../../../etc/passwd".into(), "GET", vec![], 404),
        (
            format!("/{STREAM}/..%2f..%2fetc%2fpasswd"),
            "GET",
            vec![],
            404,
        ),
        (
            format!("/{STREAM}/%2e%2e/%2e%2e/etc/passwd"),
            "GET",
            vec![],
            404,
        ),
        (format!("/{STREAM}/video.m3u8%00"), "GET", vec![], 404),
        (format!("/{STREAM}//video.m3u8"), "GET", vec![], 404),
        ("/%74est/video.m3u8".into(), "GET", vec![], 404),
        (
            format!("/{STREAM}/video.m3u8?_HLS_msn=abc"),
            "GET",
            vec![],
            400,
        ),
        (
            format!("/{STREAM}/video.m3u8?_HLS_msn=1&_HLS_msn=2"),
            "GET",
            vec![],
            400,
        ),
        (
            format!("/{STREAM}/video.m3u8?_HLS_part=-1&_HLS_msn=1"),
            "GET",
            vec![],
            400,
        ),
        (
            format!("/{STREAM}/video.m3u8?_HLS_msn=99999999999999999999999"),
            "GET",
            vec![],
            400,
        ),
        (
            format!("/{STREAM}/video.m3u8?_HLS_skip=YES&_HLS_skip=YES"),
            "GET",
            vec![],
            400,
        ),
        (format!("/{STREAM}/nothing.mp4"), "GET", vec![], 404),
        (
            format!("/{STREAM}/video-ffffffff-9-9.m4s"),
            "GET",
            vec![],
            404,
        ),
        ("/nope/index.m3u8".into(), "GET", vec![], 404),
        (format!("/{STREAM}/video.m3u8"), "POST", vec![], 405),
        (format!("/{STREAM}/video.m3u8"), "DELETE", vec![], 405),
        (segment.clone(), "GET", vec![("range", many_ranges)], 200),
        (
            segment.clone(),
            "GET",
            vec![("range", "items=0-9".into())],
            200,
        ),
        (
            segment.clone(),
            "GET",
            vec![("range", "bytes=99999999-".into())],
            416,
        ),
        (
            segment.clone(),
            "GET",
            vec![("range", "bytes=0-9".into())],
            206,
        ),
    ];
    for (path, method, headers, status) in &cases {
        let header_refs: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let over_h3 = client
            .request(method.parse().unwrap(), path, &header_refs)
            .await
            .unwrap();
        assert_eq!(over_h3.status(), *status, "HTTP/3 {method} {path}");
        if *status == 405 {
            assert_eq!(over_h3.header("allow"), Some("GET, HEAD, OPTIONS"));
        }
        for protocol in ["--http2", "--http1.1"] {
            let mut args = vec![protocol, "-X", method, "--path-as-is"];
            let lines: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            for line in &lines {
                args.extend(["-H", line.as_str()]);
            }
            let got = curl(target, source(34), &args, path).await;
            assert_eq!(
                got.status, *status,
                "{protocol} {method} {path}: {}",
                got.head
            );
        }
    }
}

/// Issue 11.6: an address that keeps asking after its 429s (more than 1,000 refused
/// within a second here) is cut off: every connection it has is closed, the idle ones
/// too, new ones are refused on both listeners, other addresses are served throughout,
/// and once the cut-off (1.5 s here) is over the address is served again.
pub(crate) async fn cut_off(target: &Target) {
    let from = source(34);
    let (_idle_endpoint, idle) = target.quic_connect(from, None).await;
    // With the idle one, the address's whole budget of 4.
    let clients = join_all((0..3).map(|_| target.h3_from(from))).await;
    let started = Instant::now();
    let mut refused = 0;
    let cut_off_at = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not cut off after {refused} refusals"
        );
        let wave = clients
            .iter()
            .flat_map(|client| (0..100).map(move |_| client.get("/streams")));
        let answers = join_all(wave).await;
        refused += answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|a| a.status() == 429))
            .count();
        if let Some(error) = answers.iter().find_map(|a| a.as_ref().err()) {
            eprintln!("cut off: {error}");
            break Instant::now();
        }
    };
    eprintln!(
        "cut off after {refused} refusals in {:?}",
        started.elapsed()
    );
    // The answers in flight when the connections closed are lost: the client sees a few
    // hundred fewer than the server counted (1,001 or more).
    assert!(refused >= 700, "cut off after only {refused} refusals");
    let closed = tokio::time::timeout(Duration::from_secs(1), idle.closed())
        .await
        .expect("the idle connection is closed too");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(0x0107)),
        "closed with H3_EXCESSIVE_LOAD: {closed:?}"
    );
    let endpoint = target.quic_endpoint(from, None);
    let again = endpoint
        .connect(target.h3_addr(), "localhost")
        .unwrap()
        .await;
    assert!(
        matches!(&again, Err(quinn::ConnectionError::ConnectionClosed(close))
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "a new QUIC connection while cut off: {again:?}"
    );
    for protocol in ["--http2", "--http1.1"] {
        let answer = curl(target, from, &[protocol], "/streams").await;
        assert_eq!(answer.status, 0, "{protocol} while cut off: {answer:?}");
    }
    let other = target.h3_from(source(35)).await;
    assert_eq!(other.get("/streams").await.unwrap().status(), 200);
    // Served again once the cut-off is over (a new token bucket by then, too).
    tokio::time::sleep_until((cut_off_at + Duration::from_millis(1600)).into()).await;
    let back = target.h3_from(from).await;
    let answer = back.get(&format!("/{STREAM}/video.m3u8")).await.unwrap();
    assert_eq!(answer.status(), 200, "after the cut-off");
}
