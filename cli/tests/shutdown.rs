//! Issue 11.18: `mirror serve` on SIGTERM, as a process: a download in flight (a slow
//! client, curl at a limited rate) finishes whole, a held blocking reload is answered
//! 503 with Retry-After at once, an HTTP/3 connection is closed with H3_NO_ERROR, new
//! connections are refused, and the process exits 0. Before, SIGTERM killed it
//! mid-response.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// curl over HTTP/2 to `url` with `args`: status, body length, exit code, head.
fn curl(args: &[&str], url: &str) -> (u16, usize, i32, String) {
    let output = Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "--max-time",
            "30",
            "-D",
            "/dev/stderr",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let stdout = output.stdout;
    let split = stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&stdout[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&output.stderr).to_lowercase();
    (status, split, output.status.code().unwrap_or(-1), head)
}

/// The server process, killed if the test ends early (it holds the test's stderr).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_finishes_responses_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mirror.toml");
    std::fs::write(
        &config,
        "[source]\nwidth = 320\nheight = 180\n[encoder]\nvideo_bitrate_kbps = 400\n",
    )
    .expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = Command::new(env!("CARGO_BIN_EXE_mirror"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("runs mirror");
    let mut server = KillOnDrop(server);
    let base = format!("https://127.0.0.1:{port}/test");

    // A complete segment, and where the live edge is.
    let started = Instant::now();
    let (segment, next_msn) = loop {
        let output = Command::new("curl")
            .args(["-sk", "--http2", "--max-time", "5"])
            .arg(format!("{base}/video.m3u8"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if let Some(playlist) = mirror::llhls::parse::parse_media_playlist(&text)
            && let Some(last) = playlist.segments.last()
            && playlist.segments.len() >= 2
        {
            // The furthest a blocking reload may ask for (6.2.5.2: the last listed
            // segment plus two), so that it is still held at SIGTERM. The open segment
            // is listed once it has a part; asking past that is a 400.
            let last_listed = if playlist.trailing_parts.is_empty() {
                playlist.open_msn() - 1
            } else {
                playlist.open_msn()
            };
            break (last.uri.clone(), last_listed + 2);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no segments: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, length, _, _) = curl(&[], &format!("{base}/{segment}"));
    assert!(length > 1000, "segment of {length} bytes");

    // An HTTP/3 viewer, to see how its connection is closed.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tls = mirror::tls::load_or_generate(None, None, &dir.path().join("certs")).expect("cert");
    let closed = runtime.spawn(async move {
        let client = mirror::tls::client_config_trusting(&tls, &[b"h3"]).expect("tls");
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(client).expect("quic");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = endpoint
            .connect(([127, 0, 0, 1], port).into(), "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        connection.closed().await
    });

    // A slow download (about 3 s) and a held reload, then SIGTERM.
    let rate = (length / 3).max(1000).to_string();
    let slow = std::thread::spawn({
        let url = format!("{base}/{segment}");
        move || curl(&["--limit-rate", &rate], &url)
    });
    let held = std::thread::spawn({
        let url = format!("{base}/video.m3u8?_HLS_msn={next_msn}");
        move || {
            let (status, _, _, head) = curl(&[], &url);
            (status, head, Instant::now())
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let terminated = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let (status, head, answered) = held.join().expect("held");
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        answered - terminated < Duration::from_secs(1),
        "held {:?}",
        answered - terminated
    );

    std::thread::sleep(Duration::from_millis(300));
    let refused = Command::new("curl")
        .args(["-sk", "--http2", "--max-time", "3", "-o", "/dev/null"])
        .arg(format!("{base}/video.m3u8"))
        .status()
        .expect("curl");
    assert!(
        !refused.success(),
        "a new connection was accepted while shutting down"
    );

    let (status, received, exit, head) = slow.join().expect("slow");
    assert_eq!((status, exit), (200, 0), "{head}");
    assert_eq!(received, length, "the download in flight was cut");

    let close = runtime.block_on(closed).expect("viewer task");
    match close {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 0x100, "{close:?}");
        }
        other => panic!("closed as {other}"),
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status:?}");
}
