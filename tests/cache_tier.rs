//! Behind a real cache (Debian's Varnish, on Mirror's plain-HTTP listener for a cache
//! tier): a segment still in production whose parts stop coming (here: the stream
//! stops) must end as an error the cache cannot store, so that the short bytes are
//! never served afterwards under the name the whole segment gets. The same cut is seen
//! directly on HTTP/3 (the stream is reset) and HTTP/2 (RST_STREAM).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mirror::server::RunningServer;
use mirror_loadgen::client::H3Client;

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/varnish.rs"]
mod varnish;

use varnish::Varnish;

/// curl `url` (extra `args`): the status (0 for none), the body's length, curl's exit.
async fn curl(args: &[&str], url: &str) -> (u16, usize, i32) {
    let output = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    let stdout = output.stdout;
    let split = stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&stdout[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    (status, split, output.status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_cut_short_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fixtures::loopback_settings(dir.path(), 320, 180, 400);
    settings.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = RunningServer::start(&settings, "test").await.unwrap();
    let varnish = Varnish::start(server.http_addr.unwrap());
    let tls = mirror::tls::client_config_trusting(&server.tls, &[b"h3"]).unwrap();
    let client = H3Client::connect(server.h3_addr, "localhost", tls)
        .await
        .unwrap();

    // The segment in production, once the stream has a few behind it.
    let started = Instant::now();
    let playlist = loop {
        let text = client.get("/test/video.m3u8").await.unwrap().text();
        let playlist = mirror::llhls::parse::parse_media_playlist(&text).unwrap();
        if playlist.segments.len() >= 2 && playlist.trailing_parts.len() <= 1 {
            break playlist;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no media");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = &playlist.segments.last().unwrap().uri;
    let (prefix, _) = last.rsplit_once('-').unwrap();
    let open = format!("/test/{prefix}-{}.m4s", playlist.open_msn());
    let through_cache = format!("http://127.0.0.1:{}{open}", varnish.port);
    let over_h2 = format!("https://127.0.0.1:{}{open}", server.tcp_addr.port());

    // Three viewers of that segment: through the cache, over HTTP/2 and over HTTP/3.
    let first = tokio::spawn({
        let url = through_cache.clone();
        async move { curl(&[], &url).await }
    });
    let h2 = tokio::spawn(async move { curl(&["--http2"], &over_h2).await });
    let h3 = tokio::spawn({
        let client = client.clone();
        let open = open.clone();
        async move { client.get(&open).await }
    });
    // A part or two of it arrive; then its stream stops, the segment unfinished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.stop_stream("test"));

    let (first_status, short_len, first_exit) = first.await.unwrap();
    eprintln!("through the cache: {first_status}, {short_len} bytes, curl exit {first_exit}");
    // Asked again through the cache: the short bytes were not kept under the
    // segment's name, so the cache asks the origin again instead of answering from its
    // storage (which, before, it did: a 200 of the short bytes, as whole).
    let (status, len, exit) = curl(&[], &through_cache).await;
    eprintln!("again through the cache: {status}, {len} bytes, curl exit {exit}");
    let (hits, fetches) = varnish.hits_and_fetches(&open);
    assert_eq!(hits, 0, "the cache served the cut segment from its storage");
    assert_eq!(fetches, 2, "each request went to the origin");
    assert!(
        first_exit != 0 || first_status != 200,
        "the cut segment reached the viewer as a whole one"
    );
    let (status, len, exit) = h2.await.unwrap();
    assert!(
        exit != 0 || status != 200,
        "HTTP/2: the cut segment ended cleanly ({status}, {len} bytes)"
    );
    let over_h3 = h3.await.unwrap();
    assert!(
        over_h3.is_err(),
        "HTTP/3: the cut segment ended cleanly ({:?})",
        over_h3.map(|f| (f.status(), f.body.len()))
    );
}
