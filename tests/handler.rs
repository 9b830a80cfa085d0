//! The request handler against hand-published snapshots: no libav, no encoder, no
//! socket, and tokio's clock paused, so every case of RFC 8216bis 6.2.5.2 (blocking
//! playlist reload) and 6.2.6 (the hinted part, a segment in production) runs in
//! milliseconds and every hold is measured in virtual time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use mirror::http::{AppState, Body, handle};
use mirror::llhls::live::{LivePlaylist, MediaNames};
use mirror::store::{Store, StoredMedia, key};
use mirror::stream::{StreamPublisher, StreamStatus, channel};

const PART: Duration = Duration::from_millis(200);
const TARGET: Duration = Duration::from_secs(1);

/// One stream, `test`, with one rendition, `video`, of 1 s segments of five 200 ms
/// parts and a window of 12 segments, published by hand.
struct Harness {
    state: Arc<AppState>,
    publisher: StreamPublisher,
    live: LivePlaylist,
    store: Store,
    inits: Arc<[StoredMedia]>,
}

impl Harness {
    fn new() -> Self {
        let names = MediaNames::new("video-0123abcd", SystemTime::UNIX_EPOCH);
        let live = LivePlaylist::new(names, TARGET, PART, 12, 0);
        let (handle, publisher) = channel("test", [("video", &live)], StreamStatus::default());
        let store = Store::new(64 << 20, Duration::from_secs(60));
        let state = Arc::new(AppState::new(
            [handle],
            store.clone(),
            Bytes::from_static(b"page"),
            None,
        ));
        let inits: Arc<[StoredMedia]> = Arc::from([StoredMedia {
            chunks: vec![Bytes::from_static(b"init")].into(),
            modified: SystemTime::now(),
        }]);
        Self {
            state,
            publisher,
            live,
            store,
            inits,
        }
    }

    /// The bytes of part `msn.index`: distinct for every part.
    fn part_bytes(msn: u64, index: u32) -> Bytes {
        Bytes::from(format!("part {msn}.{index};"))
    }

    fn publish(&mut self) {
        self.publisher.renditions[0].publish(&self.live, self.inits.clone());
    }

    /// Part `msn.index` completes.
    fn part(&mut self, msn: u64, index: u32) {
        let name = self.live.names().part(msn, index);
        self.store.insert(
            key("test", &name),
            vec![Self::part_bytes(msn, index)],
            SystemTime::now(),
        );
        self.live
            .push_part(msn, index, PART, index == 0, SystemTime::now());
        self.publish();
    }

    /// Segment `msn` completes with its parts `0..parts`.
    fn segment(&mut self, msn: u64, parts: u32) {
        let name = self.live.names().segment(msn);
        let chunks = (0..parts).map(|i| Self::part_bytes(msn, i)).collect();
        self.store
            .insert(key("test", &name), chunks, SystemTime::now());
        self.live
            .push_segment(msn, PART * parts, SystemTime::now(), SystemTime::now());
        self.publish();
    }

    /// Segments `0..count`, each of five parts, all complete.
    fn segments(&mut self, count: u64) {
        for msn in 0..count {
            for index in 0..5 {
                self.part(msn, index);
            }
            self.segment(msn, 5);
        }
    }

    fn part_name(&self, msn: u64, index: u32) -> String {
        self.live.names().part(msn, index)
    }

    fn segment_name(&self, msn: u64) -> String {
        self.live.names().segment(msn)
    }

    /// Sends `path` to the handler on a task of its own.
    fn get(&self, path: &str) -> tokio::task::JoinHandle<Response<Body>> {
        self.request(Request::get(path).body(()).expect("request"))
    }

    fn request(&self, request: Request<()>) -> tokio::task::JoinHandle<Response<Body>> {
        let state = self.state.clone();
        // Each request as its own connection from one address, as a player's would be.
        let peer = state.peer(std::net::SocketAddr::from(([192, 0, 2, 1], 40000)));
        tokio::spawn(async move { handle(&state, &request, &peer).await })
    }
}

/// Lets every task run, then `by` of virtual time pass.
async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
}

async fn body(response: Response<Body>) -> Vec<u8> {
    let mut chunks = response.into_body().into_chunks();
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk.expect("a whole body"));
    }
    out
}

async fn text(response: Response<Body>) -> String {
    String::from_utf8(body(response).await).expect("UTF-8")
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(start_paused = true)]
async fn a_blocking_reload_is_held_until_its_part_exists_then_cached_six_target_durations() {
    let mut h = Harness::new();
    h.segments(3);
    h.part(3, 0);
    let held = h.get("/test/video.m3u8?_HLS_msn=3&_HLS_part=1");
    advance(PART / 2).await;
    assert!(!held.is_finished(), "3.1 does not exist yet");
    h.part(3, 1);
    let response = held.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "public, max-age=6");
    assert_eq!(
        header(&response, "content-type"),
        "application/vnd.apple.mpegurl"
    );
    let playlist = text(response).await;
    assert!(playlist.contains(&h.part_name(3, 1)), "{playlist}");
    assert!(playlist.contains(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
        h.part_name(3, 2)
    )));
}

#[tokio::test(start_paused = true)]
async fn what_the_playlist_already_holds_is_answered_at_once() {
    let mut h = Harness::new();
    h.segments(3);
    h.part(3, 0);
    for query in [
        "_HLS_msn=2",
        "_HLS_msn=3&_HLS_part=0",
        "_HLS_msn=0&_HLS_part=4",
        // 6.2.5.2: a part index past a segment's last part is part 0 of the next.
        "_HLS_msn=2&_HLS_part=5",
        "_HLS_msn=2&_HLS_part=9",
    ] {
        let started = tokio::time::Instant::now();
        let response = h
            .get(&format!("/test/video.m3u8?{query}"))
            .await
            .expect("task");
        assert_eq!(started.elapsed(), Duration::ZERO, "{query} was held");
        assert_eq!(response.status(), StatusCode::OK, "{query}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_part_index_past_the_segment_end_waits_for_part_0_of_the_next() {
    let mut h = Harness::new();
    h.segments(3);
    let held = h.get("/test/video.m3u8?_HLS_msn=2&_HLS_part=5");
    advance(PART / 2).await;
    assert!(!held.is_finished(), "= 3.0, not yet listed");
    h.part(3, 0);
    let response = held.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains(&h.part_name(3, 0)));
}

#[tokio::test(start_paused = true)]
async fn bad_and_far_ahead_directives_are_400_at_once_and_only_malformed_ones_are_cached() {
    let mut h = Harness::new();
    h.segments(3);
    h.part(3, 0);
    // The last segment listed is 3 (it has a part); its Advance Part Limit at 200 ms
    // parts is 15.
    for (query, why) in [
        ("_HLS_part=1", "_HLS_part without _HLS_msn"),
        ("_HLS_msn=x", "not a number"),
        ("_HLS_msn=-1", "signed"),
        ("_HLS_msn=6", "last MSN + 3"),
        ("_HLS_msn=3&_HLS_part=16", "16 parts past 3.0"),
        (
            "_HLS_msn=5&_HLS_part=6",
            "16 parts past 3.0, two segments on",
        ),
        ("_HLS_skip=NO", "skip other than YES or v2"),
    ] {
        let started = tokio::time::Instant::now();
        let response = h
            .get(&format!("/test/video.m3u8?{query}"))
            .await
            .expect("task");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}: {why}");
        assert_eq!(started.elapsed(), Duration::ZERO, "{query}: held");
        // A malformed directive is never valid (Appendix B: four target durations);
        // one too far ahead names a playlist that will exist within seconds, when
        // players ask for it: a cache must not keep the refusal until then.
        let far_ahead = why.contains("past") || why.contains("+ 3");
        let caching = if far_ahead {
            "no-store"
        } else {
            "public, max-age=4"
        };
        assert_eq!(header(&response, "cache-control"), caching, "{query}");
    }
    // Just inside the limits: held, not refused.
    for query in [
        "_HLS_msn=5",
        "_HLS_msn=3&_HLS_part=15",
        "_HLS_msn=5&_HLS_part=5",
    ] {
        let held = h.get(&format!("/test/video.m3u8?{query}"));
        advance(PART / 2).await;
        assert!(!held.is_finished(), "{query} should be held");
        held.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_held_three_target_durations_gets_503_with_a_short_cache_life() {
    let mut h = Harness::new();
    h.segments(2);
    let started = tokio::time::Instant::now();
    let response = h
        .get("/test/video.m3u8?_HLS_msn=2&_HLS_part=1")
        .await
        .expect("task");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(started.elapsed(), TARGET * 3);
    assert_eq!(header(&response, "retry-after"), "1");
    assert_eq!(header(&response, "cache-control"), "public, max-age=1");
}

#[tokio::test(start_paused = true)]
async fn after_endlist_directives_are_ignored() {
    let mut h = Harness::new();
    h.segments(2);
    h.live.end(SystemTime::now());
    h.publish();
    let response = h
        .get("/test/video.m3u8?_HLS_msn=100&_HLS_part=50")
        .await
        .expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.ends_with("#EXT-X-ENDLIST\n"));
}

#[tokio::test(start_paused = true)]
async fn delta_updates_and_gzip_are_the_prepared_forms() {
    let mut h = Harness::new();
    h.segments(12);
    let delta = h
        .get("/test/video.m3u8?_HLS_msn=11&_HLS_skip=YES")
        .await
        .expect("task");
    assert_eq!(delta.status(), StatusCode::OK);
    let etag = header(&delta, "etag").to_string();
    let delta = text(delta).await;
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{delta}");
    let request = Request::get("/test/video.m3u8")
        .header("accept-encoding", "br, gzip")
        .body(())
        .expect("request");
    let gzip = h.request(request).await.expect("task");
    assert_eq!(header(&gzip, "content-encoding"), "gzip");
    assert_eq!(
        header(&gzip, "cache-control"),
        "public, max-age=1, stale-while-revalidate=1"
    );
    assert_ne!(header(&gzip, "etag"), etag, "each form has its own tag");
    let packed = body(gzip).await;
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut plain)
        .expect("gzip");
    assert!(plain.starts_with("#EXTM3U\n") && !plain.contains("EXT-X-SKIP"));
}

#[tokio::test(start_paused = true)]
async fn the_hinted_part_is_held_until_complete_then_sent_whole() {
    let mut h = Harness::new();
    h.segments(2);
    h.part(2, 0);
    let name = h.part_name(2, 1);
    let held = h.get(&format!("/test/{name}"));
    advance(PART / 2).await;
    assert!(!held.is_finished(), "no byte before the part is complete");
    h.part(2, 1);
    let response = held.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "video/iso.segment");
    assert_eq!(
        header(&response, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        header(&response, "content-length"),
        Harness::part_bytes(2, 1).len().to_string()
    );
    assert_eq!(body(response).await, Harness::part_bytes(2, 1));
}

/// iOS 16.1.1 asked for the preload hint's URI with its last character cut off; the
/// cut name is held and answered as the part itself, as MediaMTX does.
#[tokio::test(start_paused = true)]
async fn the_hinted_part_asked_for_with_its_last_character_cut_off_is_the_part() {
    let mut h = Harness::new();
    h.segments(2);
    h.part(2, 0);
    let name = h.part_name(2, 1);
    let cut = name.strip_suffix('s').expect("a part's name ends in .m4s");
    let held = h.get(&format!("/test/{cut}"));
    advance(PART / 2).await;
    assert!(!held.is_finished(), "held like the whole name");
    h.part(2, 1);
    let response = held.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "video/iso.segment");
    assert_eq!(body(response).await, Harness::part_bytes(2, 1));
    let segment = h.live.names().segment(1);
    let response = h
        .get(&format!("/test/{}", &segment[..segment.len() - 1]))
        .await;
    assert_eq!(
        response.expect("task").status(),
        StatusCode::NOT_FOUND,
        "only parts are ever hinted"
    );
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_hint_is_404_and_a_name_further_ahead_is_404_at_once() {
    let mut h = Harness::new();
    h.segments(2);
    h.part(2, 0);
    let hinted = h.get(&format!("/test/{}", h.part_name(2, 1)));
    advance(PART / 2).await;
    assert!(!hinted.is_finished());
    // The source breaks off: segment 2 closes with its one part, and the stream
    // resumes at 3 after a discontinuity. Part 2.1 will never exist.
    h.segment(2, 1);
    h.live.resume(3, true, SystemTime::now());
    h.publish();
    h.part(3, 0);
    let response = hinted.await.expect("task");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, "cache-control"), "public, max-age=1");
    // Three past the last listed part (3.0): not hinted, not listed.
    let started = tokio::time::Instant::now();
    let ahead = h
        .get(&format!("/test/{}", h.part_name(3, 3)))
        .await
        .expect("task");
    assert_eq!(ahead.status(), StatusCode::NOT_FOUND);
    assert_eq!(started.elapsed(), Duration::ZERO);
    // It will exist in a moment, when players ask for it: no cache may keep the 404.
    assert_eq!(header(&ahead, "cache-control"), "no-store");
    let segment_ahead = h
        .get(&format!("/test/{}", h.segment_name(5)))
        .await
        .expect("task");
    assert_eq!(segment_ahead.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&segment_ahead, "cache-control"), "no-store");
}

#[tokio::test(start_paused = true)]
async fn a_segment_in_production_is_sent_part_by_part() {
    let mut h = Harness::new();
    h.segments(2);
    h.part(2, 0);
    let response = h
        .get(&format!("/test/{}", h.segment_name(2)))
        .await
        .expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-length"),
        "",
        "length not known yet"
    );
    let mut chunks = response.into_body().into_chunks();
    assert_eq!(chunks.next().await, Some(Ok(Harness::part_bytes(2, 0))));
    let next = tokio::spawn(async move {
        let second = chunks.next().await;
        (second, chunks)
    });
    advance(PART / 2).await;
    assert!(!next.is_finished(), "part 2.1 is not complete");
    h.part(2, 1);
    let (second, mut chunks) = next.await.expect("task");
    assert_eq!(second, Some(Ok(Harness::part_bytes(2, 1))));
    h.segment(2, 2);
    assert_eq!(chunks.next().await, None, "the body ends with the segment");
    // Complete now: from the store, whole, with its length.
    let whole = h
        .get(&format!("/test/{}", h.segment_name(2)))
        .await
        .expect("task");
    assert_eq!(header(&whole, "content-length"), "18");
    assert_eq!(
        body(whole).await,
        [Harness::part_bytes(2, 0), Harness::part_bytes(2, 1)].concat()
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stops_answers_held_requests_503_at_once() {
    let mut h = Harness::new();
    h.segments(2);
    let held = h.get("/test/video.m3u8?_HLS_msn=3");
    advance(PART).await;
    assert!(!held.is_finished());
    let started = tokio::time::Instant::now();
    drop(h.publisher);
    let response = held.await.expect("task");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn before_the_source_opens_playlists_wait_and_the_multivariant_is_503() {
    let mut h = Harness::new();
    let multivariant = h.get("/test/index.m3u8").await.expect("task");
    assert_eq!(multivariant.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&multivariant, "retry-after"), "1");
    let plain = h.get("/test/video.m3u8");
    advance(PART).await;
    assert!(
        !plain.is_finished(),
        "a playlist listing nothing is not served"
    );
    h.part(0, 0);
    let response = plain.await.expect("task");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control"),
        "public, max-age=1, stale-while-revalidate=1"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_names_methods_and_ranges_are_refused_with_a_reason() {
    let mut h = Harness::new();
    h.segments(1);
    for path in [
        "/nope/video.m3u8",
        "/test/other.m3u8",
        "/test/video-0123abcd-9.m4s",
        "/x",
    ] {
        let response = h.get(path).await.expect("task");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(text(response).await, "not found\n");
    }
    let post = Request::post("/test/video.m3u8").body(()).expect("request");
    let response = h.request(post).await.expect("task");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), "GET, HEAD, OPTIONS");
    let segment = format!("/test/{}", h.segment_name(0));
    let range = Request::get(&segment)
        .header("range", "bytes=3-7")
        .body(())
        .expect("request");
    let response = h.request(range).await.expect("task");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body(response).await, b"t 0.0");
    let range = Request::get(&segment)
        .header("range", "bytes=900-")
        .body(())
        .expect("request");
    let response = h.request(range).await.expect("task");
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "content-range"), "bytes */45");
}

/// A segment in production whose middle part left the store before it was sent (a
/// slow client, a full budget): the body ends as cut, never as the whole segment.
#[tokio::test(start_paused = true)]
async fn a_segment_missing_a_part_ends_cut_not_whole() {
    let mut h = Harness::new();
    h.segments(2);
    h.part(2, 0);
    let response = h
        .get(&format!("/test/{}", h.segment_name(2)))
        .await
        .expect("task");
    let mut chunks = response.into_body().into_chunks();
    assert_eq!(chunks.next().await, Some(Ok(Harness::part_bytes(2, 0))));
    // Part 2.1 is listed but never in the store; then the segment completes.
    h.live.push_part(2, 1, PART, false, SystemTime::now());
    h.publish();
    h.segment(2, 2);
    assert_eq!(
        chunks.next().await,
        Some(Err(mirror::http::body::BodyCut)),
        "a segment without its part 2.1 went out as whole"
    );
}
