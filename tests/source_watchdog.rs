//! Sources that misbehave without going silent: one that never finishes opening, one
//! whose timestamps jump back (every frame after would be dropped) or forward (the gap
//! would be filled with copies of a frame, gigabytes of them). Each must fail loudly,
//! say so in its status, and come back as a discontinuity.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::rtsp::free_port;
use common::sender::Sender;
use mirror::ingest::{OpenLimits, SourceSpec, UrlSource};
use mirror::server::RunningServer;

/// An HTTP server that answers 200 and then trickles a byte every 300 ms, for `for_`:
/// every read succeeds, so only an open deadline ends the probe.
fn trickling_server(for_: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 100000000\r\n\r\n",
                );
                let started = Instant::now();
                while started.elapsed() < for_ {
                    if stream.write_all(&[0x47]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
    });
    port
}

/// Issue 11.14: before, an open that never finished (every read succeeding) kept the
/// stream "starting" forever.
#[test]
fn an_open_that_never_finishes_gives_up_in_time() {
    let port = trickling_server(Duration::from_secs(30));
    let limits = OpenLimits {
        open_timeout: Duration::from_secs(1),
        ..OpenLimits::default()
    };
    let started = Instant::now();
    let result = UrlSource::open(&format!("http://127.0.0.1:{port}/live.ts"), None, &limits);
    let Err(error) = result else {
        panic!("a source that never finishes opening opened");
    };
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("open timeout"), "{error}");
}

/// Stopping the stream ends an open at once, whatever its deadline.
#[test]
fn stopping_ends_an_open_at_once() {
    let port = trickling_server(Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let limits = OpenLimits {
        stop: stop.clone(),
        open_timeout: Duration::from_secs(600),
        ..OpenLimits::default()
    };
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    let started = Instant::now();
    let result = UrlSource::open(&format!("http://127.0.0.1:{port}/live.ts"), None, &limits);
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    stopper.join().expect("stopper");
}

/// Issue 11.14 and 11.15: a sender restarted with its timestamps 100 s back (every
/// later frame would have been dropped, the stream "live" with nothing coming out),
/// then again 60 s forward (the gap filled with 1,500 copies of a picture). Each jump
/// is a discontinuity the stream comes back from within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_jumps_either_way_are_discontinuities() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let server = RunningServer::start_with(
        &settings,
        "net",
        &SourceSpec::parse(&format!("udp://127.0.0.1:{port}")),
    )
    .await
    .expect("server starts");
    let stream = server.state.streams.get("net").expect("stream").clone();
    let sender_url = format!("udp://127.0.0.1:{port}?pkt_size=1316");
    let wait_for_msn = |msn: u64, within: u64, what: &'static str| {
        let stream = stream.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(within);
            while stream.current().position.open_msn < msn {
                assert!(Instant::now() < deadline, "{what}: {:?}", stream.status());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let first = Sender::start_with(&sender_url, "mpegts", &["-output_ts_offset", "100"]);
    wait_for_msn(3, 25, "no media from the first sender").await;
    drop(first);
    // Back by about 100 s, with no silence long enough for the read timeout.
    let back = Sender::start(&sender_url, "mpegts");
    let msn = stream.current().position.open_msn;
    wait_for_msn(msn + 2, 12, "not back after a jump back").await;
    let status = stream.status();
    assert!(status.restarts >= 1, "{status:?}");
    assert!(
        // libav may read 100 s back in MPEG-TS as a wrap of its 33-bit clock forward.
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("jumped")),
        "{status:?}"
    );
    drop(back);
    let forward = Sender::start_with(&sender_url, "mpegts", &["-output_ts_offset", "60"]);
    let msn = stream.current().position.open_msn;
    wait_for_msn(msn + 2, 12, "not back after a jump forward").await;
    let status = stream.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("jumped forward")),
        "{status:?}"
    );
    drop(forward);
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let playlist = client.get("/net/video.m3u8").await.text();
    assert!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count() >= 2,
        "{playlist}"
    );
}
