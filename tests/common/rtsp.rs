//! A real RTSP server for the tests: GStreamer's gst-rtsp-server, driven by
//! `tests/rtsp/server.py` with Debian's `/usr/bin/python3` (the one that sees `gi`).

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running RTSP server; killed on drop.
pub struct RtspServer {
    child: Child,
    pub port: u16,
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Keep the UDP side in mind too: RTSP over TCP only needs the TCP port.
    drop(UdpSocket::bind(("127.0.0.1", port)));
    port
}

impl RtspServer {
    /// Starts the server on `port` with `args` (`--codec h265`, `--audio none`, …) and
    /// waits until it listens.
    pub fn start(port: u16, args: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rtsp/server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (scripts/setup installs python3-gi and gst-rtsp-server)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let started = Instant::now();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server output");
        assert_eq!(
            line.trim(),
            "ready",
            "the RTSP server did not start (after {:?})",
            started.elapsed()
        );
        Self { child, port }
    }

    /// `rtsp://127.0.0.1:{port}/cam`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is sent, as with a camera
    /// that hangs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Kills it now.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the port go.
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
