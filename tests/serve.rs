//! `mirror serve` end to end over loopback: a real HTTP/3 client (quinn + h3) follows the
//! stream like an LL-HLS player, every playlist is checked against the rules, media is
//! decoded with ffmpeg; the TCP path is checked with curl over HTTP/1.1 and HTTP/2.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::fixtures::loopback_settings;
use common::h3client::{Fetched, H3Client};
use common::{decode_errors, probe_frames, with_init};
use mirror::server::RunningServer;

const STREAM: &str = "test";

struct Harness {
    server: RunningServer,
    client: H3Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    // A small picture keeps several servers in parallel light on a 2-core machine.
    let settings = loopback_settings(dir.path(), 320, 180, 400);
    let server = RunningServer::start(&settings, STREAM)
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    Harness {
        server,
        client,
        _dir: dir,
    }
}

/// A listed part: URI, DURATION, INDEPENDENT.
type ListedPart = (String, f64, bool);
/// A listed segment: MSN, URI, EXTINF, its parts.
type ListedSegment = (u64, String, f64, Vec<ListedPart>);

/// A media playlist as a player reads it.
#[derive(Debug, Default)]
struct Playlist {
    version: u32,
    target_duration: u64,
    part_target: f64,
    server_control: String,
    media_sequence: u64,
    map: String,
    skipped: usize,
    segments: Vec<ListedSegment>,
    trailing_parts: Vec<ListedPart>,
    hint: Option<String>,
    ended: bool,
    pdt_count: usize,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    // The attribute starts the list or follows a comma: PART-HOLD-BACK is not HOLD-BACK.
    let key = format!("{name}=");
    let start = line
        .match_indices(&key)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || line.as_bytes()[i - 1] == b',')?
        + key.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        rest.split(',').next()
    }
}

fn parse(text: &str) -> Playlist {
    let mut p = Playlist::default();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let mut parts = Vec::new();
    let mut pending_duration = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = v.parse().expect("version");
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().expect("target");
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = attr(v, "PART-TARGET")
                .expect("PART-TARGET")
                .parse()
                .expect("number");
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            p.server_control = v.to_string();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().expect("sequence");
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            p.map = attr(v, "URI").expect("URI").to_string();
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            p.skipped = attr(v, "SKIPPED-SEGMENTS")
                .expect("count")
                .parse()
                .expect("number");
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push((
                attr(v, "URI").expect("URI").to_string(),
                attr(v, "DURATION")
                    .expect("DURATION")
                    .parse()
                    .expect("number"),
                attr(v, "INDEPENDENT") == Some("YES"),
            ));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            pending_duration = Some(v.trim_end_matches(',').parse::<f64>().expect("EXTINF"));
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(v, "TYPE"), Some("PART"));
            p.hint = Some(attr(v, "URI").expect("URI").to_string());
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            p.pdt_count += 1;
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let msn = p.media_sequence + (p.skipped + p.segments.len()) as u64;
            let duration = pending_duration.take().expect("EXTINF before URI");
            p.segments
                .push((msn, line.to_string(), duration, std::mem::take(&mut parts)));
        }
    }
    p.trailing_parts = parts;
    p
}

/// The rules every live media playlist keeps (RFC 8216bis, DESIGN.md).
fn check_rules(p: &Playlist) {
    assert!(
        p.version >= 9,
        "EXT-X-VERSION {} with CAN-SKIP-UNTIL",
        p.version
    );
    assert!(p.server_control.contains("CAN-BLOCK-RELOAD=YES"));
    let field = |name: &str| {
        attr(&p.server_control, name)
            .expect(name)
            .parse::<f64>()
            .expect("number")
    };
    assert!(field("PART-HOLD-BACK") >= 3.0 * p.part_target - 1e-9);
    assert!(field("HOLD-BACK") >= 3.0 * p.target_duration as f64);
    assert!(field("CAN-SKIP-UNTIL") >= 6.0 * p.target_duration as f64);
    assert!((p.part_target - 0.2).abs() < 1e-9);
    assert!(!p.map.is_empty());
    assert!(p.hint.is_some(), "a live playlist hints the next part");
    assert!(p.pdt_count >= p.segments.len());
    let all_parts = p
        .segments
        .iter()
        .flat_map(|s| s.3.iter())
        .chain(p.trailing_parts.iter());
    for (uri, duration, _) in all_parts {
        assert!(*duration <= p.part_target + 1e-9, "{uri} lasts {duration}");
    }
    for (msn, uri, duration, parts) in &p.segments {
        assert!(
            duration.round() as u64 <= p.target_duration,
            "segment {msn} of {duration} s"
        );
        if !parts.is_empty() {
            assert!(
                parts[0].2,
                "segment {msn} ({uri}) starts with an independent part"
            );
            let sum: f64 = parts.iter().map(|x| x.1).sum();
            assert!(
                (sum - duration).abs() < 0.01,
                "parts of {msn} add up to its EXTINF"
            );
        }
    }
}

/// The (msn, part) a player asks for next: the one after the last listed part.
fn next_request(p: &Playlist) -> (u64, u32) {
    let open_msn = p.segments.last().map_or(p.media_sequence, |s| s.0 + 1);
    (open_msn, p.trailing_parts.len() as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_follows_the_live_edge_part_by_part_with_blocking_reloads() {
    let h = start().await;
    let multivariant = h.client.get(&format!("/{STREAM}/index.m3u8")).await;
    assert_eq!(multivariant.status(), 200);
    let master = m3u8_rs::parse_master_playlist_res(&multivariant.body).expect("multivariant");
    let variant = &master.variants[0];
    assert_eq!(variant.codecs.as_deref(), Some("avc1.64000d,mp4a.40.2"));
    let media_path = format!("/{STREAM}/{}", variant.uri);

    let first = h.client.get(&media_path).await;
    assert_eq!(first.status(), 200);
    let mut playlist = parse(&first.text());
    check_rules(&playlist);

    // Four seconds at the live edge, one blocking reload per part, like hls.js.
    let until = Instant::now() + Duration::from_secs(4);
    let mut reloads = 0;
    while Instant::now() < until {
        let (msn, part) = next_request(&playlist);
        let fetched = h
            .client
            .get(&format!("{media_path}?_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        assert_eq!(fetched.status(), 200, "reload for {msn}.{part}");
        assert_eq!(fetched.header("cache-control"), Some("public, max-age=6"));
        // It blocked until the part existed, which takes at most about one part.
        assert!(
            fetched.headers_after < Duration::from_millis(800),
            "held {:?}",
            fetched.headers_after
        );
        let next = parse(&fetched.text());
        check_rules(&next);
        let listed = next
            .segments
            .iter()
            .filter(|s| s.0 == msn)
            .flat_map(|s| s.3.iter())
            .chain(if next_request(&next).0 == msn {
                next.trailing_parts.iter()
            } else {
                [].iter()
            })
            .count();
        assert!(
            listed > part as usize
                || next.segments.iter().any(|s| s.0 > msn)
                || next_request(&next).0 > msn,
            "the reload answered before {msn}.{part} was listed"
        );
        playlist = next;
        reloads += 1;
    }
    assert!(
        reloads >= 12,
        "only {reloads} reloads in 4 s of 200 ms parts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_init_parts_and_segments_decode_with_ffmpeg() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    // Wait until two complete segments exist.
    let fetched = h.client.get(&format!("{media}?_HLS_msn=1")).await;
    let playlist = parse(&fetched.text());
    let init = h.client.get(&format!("/{STREAM}/{}", playlist.map)).await;
    assert_eq!(init.status(), 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (msn, seg_uri, _, parts) = &playlist.segments[1];
    let segment = h.client.get(&format!("/{STREAM}/{seg_uri}")).await;
    assert_eq!(segment.status(), 200);
    assert_eq!(segment.header("content-type"), Some("video/iso.segment"));
    assert_eq!(
        segment.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let file = with_init(dir.path(), "seg.mp4", &init.body, &segment.body);
    assert_eq!(decode_errors(&file), "", "segment {msn}");
    let frames = probe_frames(&file);
    let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
    assert_eq!(video.len(), 30);
    assert!(video[0].key_frame);
    let mut joined = Vec::new();
    for (uri, _, _) in parts {
        let part = h.client.get(&format!("/{STREAM}/{uri}")).await;
        assert_eq!(part.status(), 200);
        let file = with_init(dir.path(), "part.mp4", &init.body, &part.body);
        assert_eq!(decode_errors(&file), "", "part {uri}");
        joined.extend_from_slice(&part.body);
    }
    assert_eq!(
        joined,
        segment.body.to_vec(),
        "a segment is its parts' bytes"
    );
    // A byte range of a segment spanning parts.
    let ranged = h
        .client
        .request(
            http::Method::GET,
            &format!("/{STREAM}/{seg_uri}"),
            &[("range", "bytes=100-199")],
        )
        .await;
    assert_eq!(ranged.status(), 206);
    assert_eq!(&ranged.body[..], &segment.body[100..200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_impossible_requests_get_the_right_errors() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    let playlist = parse(&h.client.get(&media).await.text());
    let (msn, _) = next_request(&playlist);
    let status = |f: Fetched| f.status();
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_part=1")).await),
        400,
        "_HLS_part alone"
    );
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_msn=abc")).await),
        400
    );
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_msn=-1")).await),
        400
    );
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_msn={}", msn + 3)).await),
        400,
        "MSN > last + 2"
    );
    assert_eq!(
        status(
            h.client
                .get(&format!("{media}?_HLS_msn={msn}&_HLS_part=40"))
                .await
        ),
        400,
        "beyond the Advance Part Limit"
    );
    let too_far = h.client.get(&format!("{media}?_HLS_msn={}", msn + 3)).await;
    assert_eq!(too_far.header("cache-control"), Some("public, max-age=4"));
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_skip=maybe")).await),
        400
    );
    assert_eq!(status(h.client.get("/nope/video.m3u8").await), 404);
    assert_eq!(
        status(h.client.get(&format!("/{STREAM}/nothing.m4s")).await),
        404
    );
    let map = playlist.map.trim_end_matches("-init.mp4");
    assert_eq!(
        status(
            h.client
                .get(&format!("/{STREAM}/{map}-{}.0.m4s", msn + 5))
                .await
        ),
        404,
        "far-future part"
    );
    assert_eq!(
        status(h.client.request(http::Method::POST, &media, &[]).await),
        405
    );
    // The stream still serves after all that.
    assert_eq!(status(h.client.get(&media).await), 200);

    // A source that stops: blocked reloads end with 503 instead of hanging.
    h.server.state.streams[STREAM].stop();
    let started = Instant::now();
    let blocked = h.client.get(&format!("{media}?_HLS_msn={}", msn + 2)).await;
    assert_eq!(blocked.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within 3 target durations"
    );
    assert_eq!(blocked.header("cache-control"), Some("public, max-age=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_part_is_held_until_complete_then_sent_whole() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    let playlist = parse(
        &h.client
            .get(&format!("{media}?_HLS_msn=0&_HLS_part=1"))
            .await
            .text(),
    );
    let hint = playlist.hint.clone().expect("hint");
    // Ask for it at once, as hls.js does in parallel with the next reload.
    let held = h.client.get(&format!("/{STREAM}/{hint}")).await;
    assert_eq!(held.status(), 200);
    assert!(
        held.headers_after > Duration::from_millis(20),
        "answered before the part existed"
    );
    let length: usize = held
        .header("content-length")
        .expect("length known: sent whole")
        .parse()
        .expect("number");
    assert_eq!(length, held.body.len());
    // Every byte arrived right after the headers: no trickle over the part's duration.
    let last = held.chunks.last().expect("body").0;
    assert!(
        last - held.headers_after < Duration::from_millis(100),
        "body trickled over {:?}",
        last - held.headers_after
    );
    let again = h.client.get(&format!("/{STREAM}/{hint}")).await;
    assert_eq!(again.body, held.body, "the same bytes from the store");
    // A hint for a part that will never exist (past the end of a finished segment).
    let map = playlist.map.trim_end_matches("-init.mp4");
    assert_eq!(
        h.client
            .get(&format!("/{STREAM}/{map}-0.7.m4s"))
            .await
            .status(),
        404,
        "abandoned name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_segment_is_delivered_part_by_part() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    // As soon as part 0 of segment 1 is listed, ask for segment 1 whole.
    let playlist = parse(
        &h.client
            .get(&format!("{media}?_HLS_msn=1&_HLS_part=0"))
            .await
            .text(),
    );
    let map = playlist.map.trim_end_matches("-init.mp4");
    let uri = format!("/{STREAM}/{map}-1.m4s");
    let live = h.client.get(&uri).await;
    assert_eq!(live.status(), 200);
    assert!(
        live.header("content-length").is_none(),
        "length unknown while produced"
    );
    let span = live.chunks.last().expect("chunks").0 - live.chunks[0].0;
    assert!(
        span >= Duration::from_millis(500),
        "parts arrived as produced, over {span:?}"
    );
    let complete = h.client.get(&uri).await;
    assert_eq!(
        complete.header("content-length").map(str::to_string),
        Some(complete.body.len().to_string())
    );
    assert_eq!(
        live.body, complete.body,
        "the same bytes as the finished segment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_gzip_and_delta_updates() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    let plain = h.client.get(&media).await;
    assert_eq!(
        plain.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        plain.header("cache-control"),
        Some("public, max-age=1, stale-while-revalidate=1")
    );
    assert_eq!(plain.header("access-control-allow-origin"), Some("*"));
    assert!(
        plain
            .header("access-control-expose-headers")
            .expect("expose")
            .contains("age")
    );
    assert_eq!(plain.header("priority"), Some("u=1"));
    assert!(plain.header("etag").is_some());
    let date = httpdate(plain.header("date").expect("date"));
    let modified = httpdate(plain.header("last-modified").expect("last-modified"));
    assert!(
        date.duration_since(modified).unwrap_or_default() <= Duration::from_secs(3),
        "Last-Modified within 3 TD"
    );

    let gz = h
        .client
        .request(http::Method::GET, &media, &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
        .expect("gunzip");
    check_rules(&parse(&text));

    // Once the playlist is longer than CAN-SKIP-UNTIL (6 s), a delta update skips.
    // (Step by step: asking for a segment more than two ahead is a 400.)
    for msn in 0..7 {
        assert_eq!(
            h.client
                .get(&format!("{media}?_HLS_msn={msn}"))
                .await
                .status(),
            200
        );
    }
    let full = parse(&h.client.get(&format!("{media}?_HLS_msn=7")).await.text());
    let (msn, part) = next_request(&full);
    let delta_text = h
        .client
        .get(&format!(
            "{media}?_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES"
        ))
        .await
        .text();
    let delta = parse(&delta_text);
    assert!(delta.skipped >= 1, "{delta_text}");
    assert_eq!(
        delta.media_sequence, full.media_sequence,
        "EXT-X-MEDIA-SEQUENCE unchanged"
    );
    assert!(delta_text.contains("#EXT-X-VERSION:9"));
    assert_eq!(
        delta.segments.first().map(|s| s.0),
        full.segments.get(delta.skipped).map(|s| s.0)
    );
    let v2 = h.client.get(&format!("{media}?_HLS_skip=v2")).await.text();
    assert!(v2.contains("RECENTLY-REMOVED-DATERANGES=\"\""), "{v2}");
}

fn httpdate(value: &str) -> SystemTime {
    let format = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .expect("format");
    let t = time::PrimitiveDateTime::parse(value, &format)
        .expect("HTTP-date")
        .assume_utc();
    SystemTime::from(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_path_serves_the_same_bytes_over_http1_and_http2_with_alt_svc() {
    let h = start().await;
    let playlist = parse(
        &h.client
            .get(&format!("/{STREAM}/video.m3u8?_HLS_msn=0&_HLS_part=2"))
            .await
            .text(),
    );
    let part_uri = format!(
        "/{STREAM}/{}",
        playlist
            .segments
            .first()
            .map_or(&playlist.trailing_parts[0].0, |s| &s.3[0].0)
    );
    let over_h3 = h.client.get(&part_uri).await;
    let port = h.server.tcp_addr.port();
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = dir.path().join("body");
        let output = tokio::process::Command::new("curl")
            .args(["-sk", flag, "-D", "-", "-o"])
            .arg(&body)
            .arg(format!("https://127.0.0.1:{port}{part_uri}"))
            .output()
            .await
            .expect("curl runs");
        let head = String::from_utf8_lossy(&output.stdout).to_lowercase();
        assert!(
            head.starts_with(&format!("{} 200", version.to_lowercase())),
            "{head}"
        );
        assert!(
            head.contains(&format!("alt-svc: h3=\":{}\"", h.server.h3_addr.port())),
            "{head}"
        );
        assert_eq!(
            std::fs::read(&body).expect("body"),
            over_h3.body.to_vec(),
            "{version} bytes"
        );
    }
}
