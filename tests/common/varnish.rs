//! Debian's Varnish for the cache-tier tests: varnishd in the foreground, in a work
//! directory of its own, in front of Mirror's plain-HTTP listener (`server.http_listen`),
//! either with a bare `-b` backend or with the shipped `deploy/varnish/mirror.vcl`
//! pointed at it; and what its shared-memory log says it did.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The shipped VCL (`deploy/varnish/mirror.vcl`) with its backend pointed at `backend`,
/// the way `deploy/README.md` does it with sed: the value of the `.host = "…";` and
/// `.port = "…";` lines replaced. Panics if either line is not there exactly once.
pub fn shipped_vcl_for(backend: SocketAddr) -> String {
    shipped_vcl_with_secret(backend, None)
}

/// The shipped VCL pointed at `backend`, and sending `secret` (Mirror's `[auth]
/// cdn_secret`) in place of its placeholder, as `deploy/README.md` does with sed.
pub fn shipped_vcl_with_secret(backend: SocketAddr, secret: Option<&str>) -> String {
    let vcl = shipped_vcl_backend(backend);
    match secret {
        Some(secret) => {
            assert_eq!(vcl.matches(CDN_SECRET_PLACEHOLDER).count(), 1);
            vcl.replace(CDN_SECRET_PLACEHOLDER, secret)
        }
        None => vcl,
    }
}

/// What the shipped VCL sends until the operator puts Mirror's CDN secret in its place.
pub const CDN_SECRET_PLACEHOLDER: &str = "CHANGE-ME-CDN-SECRET";

fn shipped_vcl_backend(backend: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/varnish/mirror.vcl");
    let vcl = std::fs::read_to_string(&path).expect("deploy/varnish/mirror.vcl");
    let mut hosts = 0;
    let mut ports = 0;
    let mut out = String::with_capacity(vcl.len());
    for line in vcl.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with(".host = \"") && trimmed.ends_with("\";") {
            hosts += 1;
            out.push_str(&format!("{indent}.host = \"{}\";", backend.ip()));
        } else if trimmed.starts_with(".port = \"") && trimmed.ends_with("\";") {
            ports += 1;
            out.push_str(&format!("{indent}.port = \"{}\";", backend.port()));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        (hosts, ports),
        (1, 1),
        "the VCL names its backend on one `.host` and one `.port` line"
    );
    out
}

/// varnishd in the foreground, in a work directory of its own.
pub struct Varnish {
    child: Child,
    /// Where it listens for clients, on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Varnish {
    /// A bare cache (`-b`, the built-in VCL) in front of `backend`.
    pub fn start(backend: SocketAddr) -> Self {
        Self::start_with(&["-b", &backend.to_string(), "-s", "malloc,32m"], None)
    }

    /// The shipped VCL, its backend set to `backend`, written into the work directory.
    pub fn start_shipped_vcl(backend: SocketAddr) -> Self {
        Self::start_shipped_vcl_with_secret(backend, None)
    }

    /// The shipped VCL, its backend set to `backend`, sending the CDN's `secret`.
    pub fn start_shipped_vcl_with_secret(backend: SocketAddr, secret: Option<&str>) -> Self {
        let vcl = shipped_vcl_with_secret(backend, secret);
        Self::start_with(&["-s", "malloc,64m"], Some(vcl))
    }

    fn start_with(args: &[&str], vcl: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut command = Command::new("varnishd");
        command
            .args(["-F", "-j", "none", "-n"])
            .arg(dir.path())
            .args(["-a", &format!("127.0.0.1:{port}")])
            .args(args);
        if let Some(vcl) = vcl {
            // Outside the work directory: varnishd empties that one as it starts.
            let file: PathBuf = dir.path().with_extension("vcl");
            std::fs::write(&file, vcl).expect("write the VCL");
            command.arg("-f").arg(&file);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("varnishd (scripts/setup installs Debian's varnish)");
        let mut varnish = Self { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = varnish.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = varnish.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("varnishd exited ({status}): {stderr}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "varnishd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its stderr is not read from here on: let it go nowhere instead of filling a
        // pipe nobody reads.
        drop(varnish.child.stderr.take());
        varnish
    }

    /// Its work directory (`-n`), for varnishlog and varnishstat.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `varnishlog -d` (everything still in the shared-memory log) with `args`.
    pub fn log(&self, args: &[&str]) -> String {
        let output = Command::new("varnishlog")
            .arg("-n")
            .arg(self.dir.path())
            .arg("-d")
            .args(args)
            .output()
            .expect("varnishlog");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// How many backend requests (fetches from the origin) were for exactly `url`,
    /// from the raw log records (no grouping: a fetch still in progress counts too).
    pub fn fetches_of(&self, url: &str) -> usize {
        self.log(&["-g", "raw", "-i", "BereqURL"])
            .lines()
            .filter(|l| {
                let mut fields = l.split_whitespace();
                fields.nth(1) == Some("BereqURL") && fields.nth(1) == Some(url)
            })
            .count()
    }

    /// What the cache did with requests for `url`, from its shared-memory log: how many
    /// were served from the cache (hits) and how many fetched from the origin.
    pub fn hits_and_fetches(&self, url: &str) -> (usize, usize) {
        let log = self.log(&["-g", "request", "-i", "Hit,BereqURL,ReqURL"]);
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
        let _ = std::fs::remove_file(self.dir.path().with_extension("vcl"));
    }
}
