//! Issue 11.7: out of file descriptors. The server raises its soft limit to the hard one
//! at start-up; and when accepting fails for lack of descriptors anyway, the TCP accept
//! loop backs off (10 ms doubling to 1 s) instead of spinning on the error, and serves
//! again once descriptors are free.
//!
//! One test function: it lowers this process's own limits, for good.

use std::time::{Duration, Instant};

use rlimit::Resource;

#[path = "common/fixtures.rs"]
mod fixtures;

use mirror::server::RunningServer;

/// The stat files of this process's tokio worker threads, where the accept loops run,
/// opened beforehand: once descriptors run out, nothing new can be opened.
fn tokio_threads() -> Vec<std::fs::File> {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("tokio-r"))
        })
        .filter_map(|task| std::fs::File::open(task.path().join("stat")).ok())
        .collect()
}

/// Their CPU time, user and system.
fn cpu(threads: &mut [std::fs::File]) -> Duration {
    use std::io::{Read, Seek};
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for file in threads {
        let mut stat = String::new();
        if file.rewind().is_err() || file.read_to_string(&mut stat).is_err() {
            continue;
        }
        // After the command (in parentheses): utime is the 12th field, stime the 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_s)
}

async fn curl_status(port: u16) -> String {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("https://127.0.0.1:{port}/streams"))
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    // Start-up raises the soft limit to the hard one.
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).expect("getrlimit");
    rlimit::setrlimit(Resource::NOFILE, 512.min(hard), hard).expect("lower the soft limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    {
        let _server = RunningServer::start(&settings, "test")
            .await
            .expect("server");
        let (soft, _) = rlimit::getrlimit(Resource::NOFILE).expect("getrlimit");
        assert_eq!(soft, hard, "the soft limit was not raised");
    }

    // Now a hard limit too low for the connections that come.
    rlimit::setrlimit(Resource::NOFILE, 200, 200).expect("lower both limits");
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let port = server.tcp_addr.port();
    assert_eq!(curl_status(port).await, "200");
    let mut threads = tokio_threads();
    assert!(!threads.is_empty());
    // Connect until this process has no descriptor left: the connections wait in the
    // listener's backlog, and each accept fails with EMFILE.
    let mut held = Vec::new();
    while let Ok(stream) = tokio::net::TcpStream::connect(server.tcp_addr).await {
        held.push(stream);
        assert!(held.len() < 1000, "the limit is not in force");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu(&mut threads);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu(&mut threads) - before;
    eprintln!(
        "{} connections held; tokio threads used {spent:?} in {:?}",
        held.len(),
        started.elapsed()
    );
    assert!(
        spent < Duration::from_millis(500),
        "the accept loop spun on EMFILE: {spent:?} of CPU in 2 s"
    );
    // Descriptors free again: served again (curl is another process, under its own
    // limit).
    drop(held);
    let started = Instant::now();
    loop {
        if curl_status(port).await == "200" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not served again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
