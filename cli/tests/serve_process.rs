//! `mirror serve` as a process, from a fresh working directory. The access log: with
//! `[log] format = "json"` every response is one JSON line on stderr with its
//! protocol, path, status, bytes, stream and rendition (HTTP/3 from `mirror bench
//! viewers`, HTTP/2 and HTTP/1.1 from curl); with `access_sample_every = 3`, one in
//! three. The player page's hls.js, served from the binary itself. And a config file
//! reloaded on SIGHUP: a stream added, the unchanged one kept, an invalid file refused
//! with its field named while the server goes on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server whose stderr is collected line by line; killed when dropped.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

/// The config these tests start with: a small test pattern, `log` as the `[log]`
/// section.
fn config_with_log(log: &str) -> String {
    format!("[source]\nwidth = 320\nheight = 180\n[log]\n{log}\n")
}

impl Server {
    fn start(log: &str) -> Self {
        Self::with_config(&config_with_log(log))
    }

    /// `mirror serve --config` with `text` as the file, waiting for stream `test`.
    fn with_config(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("mirror.toml");
        std::fs::write(&config, text).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirror"))
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(&config)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs mirror");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                collected.lock().expect("lines").push(line);
            }
        });
        let server = Self {
            child,
            lines,
            port,
            dir,
            config,
        };
        let started = Instant::now();
        while server.curl("--http2", "/test/video.m3u8") != 200 {
            assert!(started.elapsed() < Duration::from_secs(30), "no playlist");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn curl(&self, protocol: &str, path: &str) -> u16 {
        self.fetch(protocol, path).0
    }

    /// Status and body of `path`.
    fn fetch(&self, protocol: &str, path: &str) -> (u16, String) {
        let output = Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}", protocol])
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&output.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Sends the process SIGHUP, as `systemctl reload` does with the shipped unit.
    fn hang_up(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Waits up to 30 s for a log line containing `text`, and returns it.
    fn wait_for_line(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no log line with {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The access log's lines so far, parsed.
    fn access_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "mirror::access")
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the lines of responses just made to be written.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn every_response_is_one_json_line_with_what_it_was() {
    let server = Server::start("format = \"json\"");
    assert_eq!(server.curl("--http1.1", "/test/video.m3u8"), 200);
    assert_eq!(server.curl("--http1.1", "/test/nothing.m4s"), 404);
    let viewers = Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["bench", "viewers", "--mode", "live", "--viewers", "1"])
        .args(["--seconds", "2", "--ca"])
        .arg(server.dir.path().join("certs/cert.pem"))
        .arg("--url")
        .arg(format!("https://127.0.0.1:{}/test/video.m3u8", server.port))
        .stdout(Stdio::null())
        .status()
        .expect("runs mirror bench viewers");
    assert!(viewers.success());
    settle();
    let lines = server.access_lines();
    let find = |protocol: &str, status: u64, path_part: &str| {
        lines.iter().find(|l| {
            l["protocol"] == protocol
                && l["status"] == status
                && l["path"].as_str().is_some_and(|p| p.contains(path_part))
        })
    };
    let h2 = find("h2", 200, "/test/video.m3u8").expect("the HTTP/2 playlist");
    assert_eq!(h2["method"], "GET");
    assert_eq!(h2["stream"], "test");
    assert_eq!(h2["rendition"], "video");
    assert_eq!(h2["complete"], true);
    assert!(h2["bytes"].as_u64().is_some_and(|b| b > 100), "{h2}");
    assert!(
        h2["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:"))
    );
    let h1 = find("h1", 200, "/test/video.m3u8").expect("the HTTP/1.1 playlist");
    assert_eq!(h1["complete"], true, "{h1}");
    let missing = find("h1", 404, "/test/nothing.m4s").expect("the 404");
    assert_eq!(missing["stream"], "test");
    assert_eq!(missing["rendition"], "");
    // The viewer's blocking reloads were held until their part (up to a PART-TARGET of
    // 200 ms; the first may be answered at once), and its parts are bytes of the
    // rendition.
    assert!(
        find("h3", 200, "_HLS_msn=").is_some(),
        "an HTTP/3 blocking reload"
    );
    let longest_held = lines
        .iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.contains("_HLS_msn=")))
        .filter_map(|l| l["ready_ms"].as_f64())
        .fold(0.0, f64::max);
    assert!(longest_held > 50.0, "held at most {longest_held} ms");
    let part = lines
        .iter()
        .find(|l| l["protocol"] == "h3" && l["path"].as_str().is_some_and(|p| p.ends_with(".m4s")))
        .expect("an HTTP/3 part");
    assert_eq!(part["rendition"], "video");
    assert!(part["bytes"].as_u64().is_some_and(|b| b > 100), "{part}");
}

#[test]
fn one_response_in_n_is_logged() {
    let server = Server::start("format = \"json\"\naccess_sample_every = 3");
    settle();
    let before = server.access_lines().len();
    for _ in 0..9 {
        assert_eq!(server.curl("--http1.1", "/healthz"), 200);
    }
    settle();
    let logged = server.access_lines().len() - before;
    assert_eq!(logged, 3, "one in three of 9");
}

/// The player page plays wherever the binary runs: started in a directory with no
/// `node_modules`, the server answers `/hls.js` with the hls.js the build embedded.
#[test]
fn the_player_script_is_built_in() {
    let server = Server::start("format = \"text\"");
    assert!(!server.dir.path().join("node_modules").exists());
    let output = Command::new("curl")
        .args(["-sk", "--http2"])
        .arg(format!("https://127.0.0.1:{}/hls.js", server.port))
        .output()
        .expect("curl");
    let installed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../node_modules/hls.js/dist/hls.min.js"
    ))
    .expect("scripts/setup installs hls.js");
    assert!(
        output.stdout == installed,
        "{} bytes, not hls.js",
        output.stdout.len()
    );
}

/// The init segment's name in a media playlist: it carries the stream's epoch, so an
/// unchanged name means the stream was not restarted.
fn map_uri(playlist: &str) -> String {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no EXT-X-MAP in {playlist}"))
        .to_string()
}

#[test]
fn sighup_reloads_the_config_file() {
    let stream = |name: &str| format!("[[streams]]\nname = \"{name}\"\nsource = \"testsrc\"\n");
    let first = config_with_log("format = \"json\"") + &stream("test");
    let server = Server::with_config(&first);
    let (_, before) = server.fetch("--http2", "/test/video.m3u8");
    assert_eq!(server.curl("--http2", "/two/video.m3u8"), 404);

    // A stream added to the file: started; the one that did not change: kept, same names.
    std::fs::write(&server.config, first.clone() + &stream("two")).expect("config");
    server.hang_up();
    let line = server.wait_for_line("config reloaded");
    let reloaded: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(reloaded["started"], "[\"two\"]", "{line}");
    assert_eq!(reloaded["kept"], "[\"test\"]", "{line}");
    let started = Instant::now();
    while server.curl("--http2", "/two/video.m3u8") != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stream two never played"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, after) = server.fetch("--http2", "/test/video.m3u8");
    assert_eq!(status, 200);
    assert_eq!(
        map_uri(&after),
        map_uri(&before),
        "stream test was restarted"
    );

    // An invalid file: refused with its field named, both streams go on.
    std::fs::write(
        &server.config,
        first.replace("width = 320", "width = \"wide\""),
    )
    .expect("config");
    server.hang_up();
    let refused = server.wait_for_line("config not reloaded");
    assert!(refused.contains("source.width"), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.curl("--http2", "/two/video.m3u8"), 200);
    assert_eq!(server.curl("--http1.1", "/test/video.m3u8"), 200);
    let (_, still) = server.fetch("--http2", "/test/video.m3u8");
    assert_eq!(map_uri(&still), map_uri(&before));
}
