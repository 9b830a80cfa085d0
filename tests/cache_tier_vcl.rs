//! The shipped cache-tier VCL (`deploy/varnish/mirror.vcl`, read from the repository,
//! its backend pointed at Mirror's plain-HTTP listener) in Debian's Varnish, in front of
//! a running Mirror, does what the VCL and `deploy/README.md` promise for LL-HLS:
//!
//! - 50 concurrent HTTP/1.1 clients of one blocking playlist reload (the part after the
//!   last listed one), with the directives in either order, with junk parameters and
//!   with and without gzip, reach the origin as exactly one request, and all get a 200
//!   with the same playlist;
//! - a part fetched twice through the cache is a hit the second time, and its bytes
//!   are the origin's;
//! - a blocking reload through the cache never answers with a playlist older than the
//!   one asked for: over successive reloads, each answer holds the part it asked for (a
//!   plain playlist may be stale by design, within its grace: that bound is checked
//!   too);
//! - the cache adds little latency: for successive next-part reloads asked at the same
//!   moment through the cache and directly, the median of the difference is under
//!   20 ms;
//! - hls.js in headless Chromium plays through the cache (plain HTTP/1.1) without a
//!   stall and with a glass-to-glass latency, once settled, within 100 ms of the same
//!   player talking to the origin's listener directly (a run that stalled is played
//!   once more: see [`play`]).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};
use mirror::server::RunningServer;

#[path = "common/browser.rs"]
mod browser;
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/varnish.rs"]
mod varnish;

use varnish::Varnish;

/// One response as a client got it: the body decoded (gunzipped if it came gzipped).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// From the moment it was asked to its last byte.
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn playlist(&self) -> ListedPlaylist {
        let text = std::str::from_utf8(&self.body).expect("a UTF-8 playlist");
        parse_media_playlist(text).unwrap_or_else(|| panic!("not a media playlist: {text}"))
    }
}

/// An HTTP/1.1 connection (hyper's client, keep-alive) to `addr`.
struct Http1 {
    addr: SocketAddr,
    send: http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Self { addr, send }
    }

    /// GET `path` with `headers`; the whole body read.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let started = Instant::now();
        let mut request = http::Request::get(path).header("host", self.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send.ready().await.unwrap();
        let response = self
            .send
            .send_request(request.body(Empty::new()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("GET {path} from {}: {e}", self.addr));
        let (parts, body) = response.into_parts();
        let raw = body.collect().await.unwrap().to_bytes();
        let took = started.elapsed();
        let body = if parts.headers.get("content-encoding").map(|v| v.as_bytes()) == Some(b"gzip") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                .unwrap();
            out
        } else {
            raw.to_vec()
        };
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            took,
        }
    }
}

/// A blocking reload of `(msn, part)` of the test stream's video playlist.
fn blocking(msn: u64, part: u32) -> String {
    format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}")
}

/// Whether `playlist` lists part `part` of segment `msn` (or anything after it: a
/// segment that closed with fewer parts rolls a request on to the next one).
fn holds(playlist: &ListedPlaylist, (msn, part): (u64, u32)) -> bool {
    playlist.next_part() > (msn, part)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// `varnish.fetches_of(url)`, once the log has it: a fetch whose response the clients
/// already read may be written to the log a moment later.
async fn settled_fetches(varnish: &Varnish, url: &str) -> usize {
    let started = Instant::now();
    while varnish.fetches_of(url) == 0 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    varnish.fetches_of(url)
}

/// 50 clients, each on its own connection, ask the cache for the next part's blocking
/// reload at once (with `at_boundary`, for the last part of the segment in progress,
/// whose answer ends at a segment boundary and which Mirror marks `max-age=0`): the
/// origin sees one request, they all get the same playlist.
async fn fifty_clients_one_origin_request(
    varnish: &Varnish,
    origin: &mut Http1,
    at_boundary: bool,
) -> ListedPlaylist {
    let cache: SocketAddr = ([127, 0, 0, 1], varnish.port).into();
    // Right after a part arrives, so that the 50 requests are all in before the next
    // one: they are held (at the cache, and one at the origin), not answered from a
    // part that already exists.
    let now = origin.get("/test/video.m3u8", &[]).await.playlist();
    let (msn, part) = now.next_part();
    let fresh = origin.get(&blocking(msn, part), &[]).await;
    assert_eq!(fresh.status, 200);
    let fresh = fresh.playlist();
    let next = if at_boundary {
        let parts_per_segment = fresh.segments.last().expect("a segment").parts.len();
        (
            fresh.open_msn(),
            u32::try_from(parts_per_segment).unwrap() - 1,
        )
    } else {
        fresh.next_part()
    };
    let (msn, part) = next;
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let path = match i % 5 {
                0 => format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
                1 => format!("/test/video.m3u8?_HLS_part={part}&_HLS_msn={msn}"),
                2 => format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}&t=123"),
                3 => format!("/test/video.m3u8?t={i}&_HLS_msn={msn}&session=a{i}&_HLS_part={part}"),
                _ => format!("/test/video.m3u8?_HLS_msn={msn}&_HLS_part={part}&_={i}"),
            };
            let gzip = i % 2 == 0;
            tokio::spawn(async move {
                let mut client = Http1::connect(cache).await;
                let headers: &[(&str, &str)] = if gzip {
                    &[("accept-encoding", "gzip")]
                } else {
                    &[]
                };
                let answer = client.get(&path, headers).await;
                (path, answer, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.unwrap());
    }
    let canonical = blocking(msn, part);
    let fetches = settled_fetches(varnish, &canonical).await;
    // How many of them waited on the cache's busy object (the one request held at the
    // origin) rather than arriving after it was stored.
    let waited = varnish
        .log(&[
            "-g",
            "request",
            "-q",
            &format!("ReqURL eq \"{canonical}\""),
            "-i",
            "Timestamp",
        ])
        .lines()
        .filter(|l| l.contains("Waitinglist:"))
        .count();
    let mut done: Vec<f64> = answers
        .iter()
        .map(|(_, _, at)| at.as_secs_f64() * 1000.0)
        .collect();
    done.sort_by(f64::total_cmp);
    eprintln!(
        "50 clients of {canonical} through the cache: {fetches} origin request(s), {waited} \
         waited for it on the cache's waiting list; answered {:.1} ms (first) to {:.1} ms \
         (last) after they asked",
        done[0],
        done[done.len() - 1]
    );
    // Every origin request for this part's reload, however its query was written: one,
    // in the canonical form (directives only, in order).
    let all_fetches = varnish.log(&["-g", "raw", "-i", "BereqURL"]);
    let msn_param = format!("_HLS_msn={msn}");
    let part_param = format!("_HLS_part={part}");
    let of_this_reload: Vec<&str> = all_fetches
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|url| {
            url.split_once('?').is_some_and(|(path, query)| {
                let pairs: Vec<&str> = query.split('&').collect();
                path == "/test/video.m3u8"
                    && pairs.contains(&msn_param.as_str())
                    && pairs.contains(&part_param.as_str())
            })
        })
        .collect();
    assert_eq!(
        (fetches, of_this_reload.as_slice()),
        (1, [canonical.as_str()].as_slice()),
        "50 clients of one blocking reload make one origin request, without their junk \
         parameters"
    );
    assert!(
        waited >= 25,
        "the requests were collapsed while the origin held the reload: {waited} of 50 waited"
    );
    let first = &answers[0].1.body;
    for (path, answer, _) in &answers {
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(
            &answer.body, first,
            "{path}: another playlist than the others"
        );
    }
    let playlist = answers[0].1.playlist();
    assert!(
        holds(&playlist, next),
        "the answer to {canonical} holds that part"
    );
    if at_boundary {
        assert!(playlist.trailing_parts.is_empty(), "it ends at a boundary");
        assert_eq!(answers[0].1.header("cache-control"), "public, max-age=0");
    }
    playlist
}

/// Every part and init segment `playlist` names, twice through the cache: a miss, then
/// a hit; the same bytes as the origin's.
async fn parts_are_cached(varnish: &Varnish, origin: &mut Http1, playlist: &ListedPlaylist) {
    let mut cache = Http1::connect(([127, 0, 0, 1], varnish.port).into()).await;
    let names: Vec<String> = playlist
        .maps
        .iter()
        .chain(playlist.parts().map(|p| &p.uri))
        .map(|uri| format!("/test/{uri}"))
        .collect();
    assert!(names.len() >= 6, "parts listed: {names:?}");
    for name in &names {
        let first = cache.get(name, &[]).await;
        let second = cache.get(name, &[]).await;
        let direct = origin.get(name, &[]).await;
        for answer in [&first, &second, &direct] {
            assert_eq!(answer.status, 200, "{name}: {answer:?}");
        }
        assert!(!direct.body.is_empty(), "{name}");
        assert!(
            first.body == direct.body,
            "{name}: the cache changed its bytes"
        );
        assert!(
            second.body == direct.body,
            "{name}: the cache changed its bytes"
        );
        // X-Varnish: one transaction id on a miss, this one and the stored object's on
        // a hit.
        assert_eq!(
            first.header("x-varnish").split_whitespace().count(),
            1,
            "{name}: the first fetch is a miss ({:?})",
            first.headers
        );
        assert_eq!(
            second.header("x-varnish").split_whitespace().count(),
            2,
            "{name}: the second fetch is a hit ({:?})",
            second.headers
        );
    }
    for name in &names {
        assert_eq!(
            varnish.fetches_of(name),
            1,
            "{name}: fetched from the origin once"
        );
    }
    eprintln!(
        "{} parts and init segments: each a miss then a hit, bytes identical to the origin's",
        names.len()
    );
}

/// Successive next-part blocking reloads, asked at the same moment through the cache
/// and directly: each answer through the cache holds the part it asked for, and the
/// cache adds little time. Plain playlists through the cache, asked between them, are
/// at most their max-age plus grace behind.
async fn successive_reloads(varnish: &Varnish, origin: &mut Http1, start: ListedPlaylist) {
    let cache_addr: SocketAddr = ([127, 0, 0, 1], varnish.port).into();
    let mut cache = Http1::connect(cache_addr).await;
    let mut plain = Http1::connect(cache_addr).await;
    let part_target = start.part_target.unwrap().as_secs_f64();
    let mut next = start.next_part();
    let mut added = Vec::new();
    let mut plain_lag = Vec::new();
    for round in 0..20u32 {
        let (msn, part) = next;
        // The directives in either order and a cache buster, as players send them.
        let through_cache = match round % 3 {
            0 => blocking(msn, part),
            1 => format!("/test/video.m3u8?_HLS_part={part}&_HLS_msn={msn}"),
            _ => format!("{}&t={round}", blocking(msn, part)),
        };
        let direct_path = blocking(msn, part);
        let (cached, direct) = tokio::join!(
            cache.get(&through_cache, &[]),
            origin.get(&direct_path, &[])
        );
        assert_eq!(cached.status, 200, "{through_cache}: {cached:?}");
        assert_eq!(direct.status, 200, "{direct_path}: {direct:?}");
        let cached_playlist = cached.playlist();
        let direct_playlist = direct.playlist();
        assert!(
            holds(&cached_playlist, next),
            "round {round}: {through_cache} through the cache answered without that part: \
             next part {:?}",
            cached_playlist.next_part()
        );
        assert!(holds(&direct_playlist, next), "round {round}: direct");
        added.push((cached.took.as_secs_f64() - direct.took.as_secs_f64()) * 1000.0);

        // A plain playlist through the cache may be stale (grace), but no more than its
        // max-age (1 s) plus the VCL's grace (3 s): counted in parts behind the origin's
        // newest.
        let newest = direct_playlist.next_part().max(cached_playlist.next_part());
        let listed = plain.get("/test/video.m3u8", &[]).await;
        assert_eq!(listed.status, 200);
        let stale = listed.playlist().next_part();
        let parts_per_segment = (1.0 / part_target).round() as i64;
        let behind = (newest.0 as i64 - stale.0 as i64) * parts_per_segment
            + (i64::from(newest.1) - i64::from(stale.1));
        plain_lag.push(behind as f64 * part_target);

        next = cached_playlist.next_part();
    }
    let mut sorted = added.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p90, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        sorted[sorted.len() - 1],
    );
    eprintln!(
        "20 next-part reloads, added by the cache (through it minus direct, same moment): \
         p50 {p50:.2} ms, p90 {p90:.2} ms, max {max:.2} ms; all: {:?}",
        added.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>()
    );
    let worst_plain = plain_lag.iter().copied().fold(f64::MIN, f64::max);
    eprintln!(
        "plain playlists through the cache: at most {worst_plain:.1} s behind the origin \
         (by design: max-age 1 s + grace 3 s)"
    );
    assert!(p50 < 20.0, "the cache adds {p50:.2} ms at the median");
    assert!(
        worst_plain <= 4.0 + 2.0 * part_target,
        "a plain playlist through the cache was {worst_plain:.1} s behind"
    );
}

/// Latency samples per browser run (the page takes one every 250 ms): 15 s of play,
/// enough for the page's catch-up (1.1× speed) to bring a player that starts up to
/// 1.8 s behind down to hls.js's target latency (PART-HOLD-BACK).
const SAMPLES: usize = 60;
/// The samples at the end of a run that are compared: the last 3 s.
const SETTLED: usize = 12;

/// hls.js in headless Chromium on `url` (plain HTTP, so HTTP/1.1) for [`SAMPLES`]
/// latency samples: the page's report.
async fn play_once(url: &str) -> serde_json::Value {
    let args = [url, "-", "-", &SAMPLES.to_string(), "40"].map(String::from);
    let result = browser::run_script("play.mjs", &args).await;
    assert!(result["error"].is_null(), "{url}: hls.js error: {result}");
    // Plain HTTP: every request over HTTP/1.1 (an entry answered from the browser's
    // own cache has no protocol).
    let protocols: Vec<&str> = result["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(protocols, ["http/1.1"], "{url}: {result}");
    result
}

/// [`play_once`], again if the player stalled: on two busy cores hls.js now and then
/// skips the part after a hinted one early in a run and stalls for seconds, through
/// the cache and directly alike, which leaves nothing to compare. Two stalled runs in a
/// row fail.
async fn play(url: &str) -> serde_json::Value {
    let first = play_once(url).await;
    if first["stalls"].as_u64() == Some(0) {
        return first;
    }
    eprintln!(
        "{url}: the player stalled ({} times), playing again: {}",
        first["stalls"], first["latencies"]
    );
    let second = play_once(url).await;
    assert_eq!(
        second["stalls"].as_u64(),
        Some(0),
        "{url}: the player stalled in two runs in a row: {first}\n{second}"
    );
    second
}

/// The median of the last [`SETTLED`] latency samples of a run, once the page has
/// caught up with hls.js's target latency, and the first sample.
fn settled_median(result: &serde_json::Value) -> (f64, f64) {
    let latencies: Vec<f64> = result["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert!(latencies.len() >= SAMPLES, "{result}");
    let mut settled = latencies[latencies.len() - SETTLED..].to_vec();
    settled.sort_by(f64::total_cmp);
    (settled[SETTLED / 2], latencies[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_vcl_collapses_caches_and_adds_little_latency() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fixtures::loopback_settings(dir.path(), 320, 180, 300);
    settings.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = RunningServer::start(&settings, "test").await.unwrap();
    let origin_addr = server.http_addr.unwrap();
    let varnish = Varnish::start_shipped_vcl(origin_addr);
    let mut origin = Http1::connect(origin_addr).await;

    // A stream with a few segments behind it, as a viewer joins one.
    fixtures::until_segment(&server, "test", 3).await;

    // Varnish gives an object of no TTL to none of the requests waiting for it: the
    // VCL keeps a boundary answer 100 ms so that they share it (without, all 50 went
    // to the origin one after another).
    fifty_clients_one_origin_request(&varnish, &mut origin, true).await;
    let playlist = fifty_clients_one_origin_request(&varnish, &mut origin, false).await;
    parts_are_cached(&varnish, &mut origin, &playlist).await;
    let now = origin.get("/test/video.m3u8", &[]).await.playlist();
    successive_reloads(&varnish, &mut origin, now).await;

    // The player page, hls.js and the stream: directly from the origin's plain
    // listener, then through the cache.
    let direct = play(&format!("http://{origin_addr}/?stream=test")).await;
    let before = varnish.fetches_of("/test/index.m3u8");
    let cached = play(&format!("http://127.0.0.1:{}/?stream=test", varnish.port)).await;
    assert!(
        varnish.fetches_of("/test/index.m3u8") > before,
        "the player went through the cache"
    );
    let (direct_median, direct_first) = settled_median(&direct);
    let (cached_median, cached_first) = settled_median(&cached);
    eprintln!(
        "glass-to-glass (hls.js, median of the last {SETTLED} samples): direct {:.0} ms, \
         through the cache {:.0} ms (first samples {:.0} / {:.0} ms, hls.js target {} s, \
         first frame {:.0} / {:.0} ms)",
        direct_median * 1000.0,
        cached_median * 1000.0,
        direct_first * 1000.0,
        cached_first * 1000.0,
        cached["targetLatency"],
        direct["firstFrameMs"].as_f64().unwrap_or(f64::NAN),
        cached["firstFrameMs"].as_f64().unwrap_or(f64::NAN),
    );
    assert!(
        (cached_median - direct_median).abs() < 0.1,
        "through the cache {cached_median:.3} s against {direct_median:.3} s directly: \
         {cached}\ndirectly: {direct}"
    );
    eprintln!("run time {:.1} s", test_started.elapsed().as_secs_f64());
}
