//! A source that fails is retried with backoff while the stream stays served: a file
//! source whose file disappears mid-stream and comes back.

mod common;

use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::make_file;
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_file_is_retried_and_the_stream_resumes_with_the_next_msn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = make_file(dir.path(), "clip.mp4", 1, true);
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let server = RunningServer::start_with(&settings, "live", &SourceSpec::File(file.clone()))
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let stream = server.state.streams.get("live").expect("stream").clone();
    let mut updates = stream.subscribe();
    while updates.borrow_and_update().position.open_msn < 2 {
        updates.changed().await.expect("stream runs");
    }

    // The file goes away: the next loop cannot reopen it.
    let hidden = dir.path().join("hidden.mp4");
    std::fs::rename(&file, &hidden).expect("rename");
    let before = stream.current().position.open_msn;
    let started = Instant::now();
    let blocked = client
        .get(&format!("/live/video.m3u8?_HLS_msn={}", before + 1))
        .await;
    assert_eq!(
        blocked.status(),
        503,
        "a blocked reload ends, it does not hang"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let stalled = stream.current().position.open_msn;
    assert!(stalled <= before + 2, "no media while the file is gone");
    assert_eq!(
        client.get("/live/video.m3u8").await.status(),
        200,
        "the playlist stays served"
    );

    // It comes back: the stream resumes by itself, with the next MSNs.
    std::fs::rename(&hidden, &file).expect("rename back");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.current().position.open_msn < stalled + 2 {
        assert!(Instant::now() < deadline, "the stream did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed = client
        .get(&format!("/live/video.m3u8?_HLS_msn={}", stalled + 1))
        .await;
    assert_eq!(resumed.status(), 200);
    assert!(resumed.text().contains(&format!("-{}.m4s", stalled + 1)));
}
