//! Wake-up latency of N blocked playlist reloads: N requests for the next part wait in
//! the real handler on a live test-pattern stream; when the part completes, each is
//! answered. The figure is the time from the part's completion (the snapshot's
//! `updated_at`, stamped by the media thread when the segmenter emitted the part) to
//! the handler returning that request's response, ready to write. The network write is
//! not included (it belongs to the transport benchmark of `mirror bench viewers`).
//!
//! The baseline, measured in the same run: N tokio tasks that only wait on a `watch`
//! channel and take the time when woken, from `send_replace` on: the floor of any
//! per-request wake-up on this runtime and machine.
//!
//! `cargo bench --bench wakeup` (N = 100, 1000, 10000; three rounds each). Under
//! `cargo test` it runs one small round as a smoke test.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mirror::http::handle;
use mirror::server::RunningServer;

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

/// Latencies in nanoseconds, at three significant figures (0.1 %): all of them are
/// non-negative, which is what `hdrhistogram` records.
fn histogram(latencies: &[Duration]) -> hdrhistogram::Histogram<u64> {
    // 1 ns to 60 s; anything longer is recorded as 60 s.
    let mut histogram =
        hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    for latency in latencies {
        histogram.saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }
    histogram
}

fn at(histogram: &hdrhistogram::Histogram<u64>, quantile: f64) -> Duration {
    Duration::from_nanos(histogram.value_at_quantile(quantile))
}

async fn round(server: &RunningServer, n: usize) -> Vec<Duration> {
    let stream = server.state.streams.get("test").expect("stream");
    // Ask for the part after the last listed one, right after a part completed.
    let mut updates = stream.subscribe();
    updates.borrow_and_update();
    let _ = updates.changed().await;
    let snapshot = stream.current();
    let (msn, part) = (snapshot.position.open_msn, snapshot.position.open_parts);
    let uri = format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let state = server.state.clone();
        let uri = uri.clone();
        // Each waiter a viewer of its own (address and connection), as in the field:
        // the per-client limits do not apply across viewers.
        let [_, b, c, d] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let peer = state.peer(std::net::SocketAddr::from(([10, b, c, d], 40000)));
        tasks.push(tokio::spawn(async move {
            let request = http::Request::get(uri).body(()).expect("request");
            let response = handle(&state, &request, &peer).await;
            assert_eq!(response.status(), 200);
            SystemTime::now()
        }));
    }
    // The snapshot that first lists the part: its completion time.
    let completed = loop {
        let _ = updates.changed().await;
        let s = updates.borrow_and_update().clone();
        let p = &s.position;
        if p.open_msn > msn || p.open_parts > part {
            break s.updated_at;
        }
    };
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        let done = task.await.expect("task");
        latencies.push(done.duration_since(completed).unwrap_or_default());
    }
    latencies
}

/// The baseline: bare watch fan-out to `n` waiting tasks.
async fn bare_round(n: usize) -> Vec<Duration> {
    let (sender, receiver) = tokio::sync::watch::channel(0u64);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut receiver = receiver.clone();
        tasks.push(tokio::spawn(async move {
            let _ = receiver.changed().await;
            SystemTime::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = SystemTime::now();
    sender.send_replace(1);
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.push(
            task.await
                .expect("task")
                .duration_since(sent)
                .unwrap_or_default(),
        );
    }
    latencies
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = fixtures::loopback_settings(dir.path(), 320, 180, 400);
        let server = RunningServer::start(&settings, "test")
            .await
            .expect("server");
        let sizes: &[usize] = if full { &[100, 1000, 10_000] } else { &[100] };
        let rounds = if full { 3 } else { 1 };
        println!(
            "{:>7} {:>10} {:>10} {:>10} {:>14} {:>14}",
            "waiters", "p50", "p99", "max", "baseline p50", "baseline p99"
        );
        for &n in sizes {
            let (mut all, mut bare) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                all.extend(round(&server, n).await);
                bare.extend(bare_round(n).await);
            }
            let (all, bare) = (histogram(&all), histogram(&bare));
            println!(
                "{n:>7} {:>10.3?} {:>10.3?} {:>10.3?} {:>14.3?} {:>14.3?}",
                at(&all, 0.5),
                at(&all, 0.99),
                Duration::from_nanos(all.max()),
                at(&bare, 0.5),
                at(&bare, 0.99),
            );
        }
        drop(Arc::clone(&server.state));
    });
}
