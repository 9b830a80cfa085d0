//! Behind a real cache (Debian's Varnish, on Mirror's plain-HTTP listener for a cache
//! tier): a segment still in production whose parts stop coming (here: the stream
//! stops) must end as an error the cache cannot store, so that the short bytes are
//! never served afterwards under the name the whole segment gets. The same cut is seen
//! directly on HTTP/3 (the stream is reset) and HTTP/2 (RST_STREAM).

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mirror::server::RunningServer;
use mirror_loadgen::client::H3Client;

#[path = "common/fixtures.rs"]
mod fixtures;

/// A port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// varnishd in the foreground, in a work directory of its own, in front of `backend`.
struct Varnish {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Varnish {
    fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("varnishd")
            .args(["-F", "-j", "none", "-n"])
            .arg(dir.path())
            .args(["-a", &format!("127.0.0.1:{port}")])
            .args(["-b", &backend.to_string()])
            .args(["-s", "malloc,32m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("varnishd (scripts/setup installs Debian's varnish)");
        let varnish = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "varnishd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        varnish
    }
}

impl Varnish {
    /// What the cache did with requests for `url`, from its shared-memory log: how many
    /// were served from the cache (hits) and how many fetched from the origin.
    fn hits_and_fetches(&self, url: &str) -> (usize, usize) {
        let output = Command::new("varnishlog")
            .arg("-n")
            .arg(self._dir.path())
            .args(["-d", "-g", "request", "-i", "Hit,BereqURL,ReqURL"])
            .output()
            .expect("varnishlog");
        let log = String::from_utf8_lossy(&output.stdout);
        let hits = log
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Hit"))
            .count();
        let fetches = log
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("BereqURL") && l.ends_with(url))
            .count();
        (hits, fetches)
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        // SIGTERM: the manager stops its child before it exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

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
