//! `mirror serve` end to end over loopback: a real HTTP/3 client (quinn + h3) follows the
//! stream like an LL-HLS player, every playlist is checked against the rules, media is
//! decoded with ffmpeg; the TCP path is checked with curl over HTTP/1.1 and HTTP/2.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::fixtures::loopback_settings;
use common::h3client::{Fetched, H3Client};
use common::{decode_errors, probe_frames, with_init};
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};
use mirror::server::RunningServer;

const STREAM: &str = "test";

struct Harness {
    server: RunningServer,
    client: H3Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    start_at(400).await
}

/// The test pattern with `video_kbps` asked of its encoder.
async fn start_at(video_kbps: u32) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    // A small picture keeps several servers in parallel light on a 2-core machine.
    let settings = loopback_settings(dir.path(), 320, 180, video_kbps);
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

/// The playlist, read as a player reads it.
fn parse(text: &str) -> ListedPlaylist {
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    parse_media_playlist(text).unwrap_or_else(|| panic!("a media playlist: {text}"))
}

/// The init segment the playlist maps last, without its suffix: the prefix of every
/// media name.
fn prefix(p: &ListedPlaylist) -> &str {
    p.maps
        .last()
        .expect("EXT-X-MAP")
        .trim_end_matches("-init.mp4")
}

/// The rules every live media playlist keeps (RFC 8216bis, DESIGN.md).
fn check_rules(p: &ListedPlaylist) {
    assert!(
        p.version >= 9,
        "EXT-X-VERSION {} with CAN-SKIP-UNTIL",
        p.version
    );
    let control = p.server_control.as_deref().unwrap_or("");
    assert!(control.contains("CAN-BLOCK-RELOAD=YES"), "{control}");
    let field = |name: &str| p.server_control_value(name).expect(name);
    let part_target = p.part_target.expect("PART-TARGET").as_secs_f64();
    assert!(field("PART-HOLD-BACK") >= 3.0 * part_target - 1e-9);
    assert!(field("HOLD-BACK") >= 3.0 * p.target_duration as f64);
    assert!(field("CAN-SKIP-UNTIL") >= 6.0 * p.target_duration as f64);
    assert!((part_target - 0.2).abs() < 1e-9);
    assert!(!p.maps.is_empty());
    assert!(p.hint.is_some(), "a live playlist hints the next part");
    assert!(p.program_date_times >= p.segments.len());
    for part in p.parts() {
        let duration = part.duration.as_secs_f64();
        assert!(
            duration <= part_target + 1e-9,
            "{} lasts {duration}",
            part.uri
        );
    }
    for s in &p.segments {
        let duration = s.duration.as_secs_f64();
        assert!(
            duration.round() as u64 <= p.target_duration,
            "segment {} of {duration} s",
            s.msn
        );
        if !s.parts.is_empty() {
            assert!(
                s.parts[0].independent,
                "segment {} ({}) starts with an independent part",
                s.msn, s.uri
            );
            let sum: f64 = s.parts.iter().map(|x| x.duration.as_secs_f64()).sum();
            assert!(
                (sum - duration).abs() < 0.01,
                "parts of {} add up to its EXTINF",
                s.msn
            );
        }
    }
}

/// The (msn, part) a player asks for next: the one after the last listed part.
fn next_request(p: &ListedPlaylist) -> (u64, u32) {
    p.next_part()
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
    let mut at_boundary = 0;
    while Instant::now() < until {
        let (msn, part) = next_request(&playlist);
        let fetched = h
            .client
            .get(&format!("{media_path}?_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        assert_eq!(fetched.status(), 200, "reload for {msn}.{part}");
        // Six target durations in any cache, but for an answer that ends at a segment
        // boundary: a state that lasts one part, kept by no cache (VHS asks for it again).
        let answer = parse(&fetched.text());
        let expected = if answer.trailing_parts.is_empty() {
            at_boundary += 1;
            "public, max-age=0"
        } else {
            "public, max-age=6"
        };
        assert_eq!(fetched.header("cache-control"), Some(expected));
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
            .filter(|s| s.msn == msn)
            .flat_map(|s| s.parts.iter())
            .chain(if next_request(&next).0 == msn {
                next.trailing_parts.iter()
            } else {
                [].iter()
            })
            .count();
        assert!(
            listed > part as usize
                || next.segments.iter().any(|s| s.msn > msn)
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
    assert!(
        (2..reloads).contains(&at_boundary),
        "{at_boundary} of {reloads} answers at a segment boundary: one segment in 5 parts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_init_parts_and_segments_decode_with_ffmpeg() {
    let h = start().await;
    let media = format!("/{STREAM}/video.m3u8");
    // Wait until two complete segments exist.
    let fetched = h.client.get(&format!("{media}?_HLS_msn=1")).await;
    let playlist = parse(&fetched.text());
    let init = h
        .client
        .get(&format!("/{STREAM}/{}", playlist.maps[0]))
        .await;
    assert_eq!(init.status(), 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    let dir = tempfile::tempdir().expect("tempdir");
    let listed = &playlist.segments[1];
    let (msn, seg_uri, parts) = (listed.msn, &listed.uri, &listed.parts);
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
    for uri in parts.iter().map(|p| &p.uri) {
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
    assert_eq!(too_far.header("cache-control"), Some("no-store"));
    assert_eq!(
        status(h.client.get(&format!("{media}?_HLS_skip=maybe")).await),
        400
    );
    assert_eq!(status(h.client.get("/nope/video.m3u8").await), 404);
    assert_eq!(
        status(h.client.get(&format!("/{STREAM}/nothing.m4s")).await),
        404
    );
    let map = prefix(&playlist);
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
    assert!(h.server.stop_stream(STREAM), "the stream");
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
    let map = prefix(&playlist);
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
    let map = prefix(&playlist);
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
        delta.segments.first().map(|s| s.msn),
        full.segments.get(delta.skipped as usize).map(|s| s.msn)
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
            .map_or(&playlist.trailing_parts[0].uri, |s| &s.parts[0].uri)
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

/// BANDWIDTH and AVERAGE-BANDWIDTH are the segments' own bit rates once there are
/// segments (RFC 8216bis 4.4.6.2: the peak and the average segment bit rate), not the
/// configured estimate: players pick renditions by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multivariant_bit_rates_are_measured_from_the_segments() {
    // 3 Mbit/s asked of a 320x180 test pattern: the encoder needs far less, so the
    // configured estimate (3.1 Mbit/s with the sound) is far from what is sent.
    let h = start_at(3000).await;
    let media = format!("/{STREAM}/video.m3u8");
    let mut playlist = parse(&h.client.get(&media).await.text());
    while playlist.segments.len() < 6 {
        let next = playlist.open_msn();
        playlist = parse(
            &h.client
                .get(&format!("{media}?_HLS_msn={next}"))
                .await
                .text(),
        );
    }
    let multivariant = h.client.get(&format!("/{STREAM}/index.m3u8")).await;
    let master = m3u8_rs::parse_master_playlist_res(&multivariant.body).expect("multivariant");
    let variant = &master.variants[0];
    let (mut bits, mut seconds, mut peak) = (0.0, 0.0, 0.0f64);
    for segment in &playlist.segments {
        let fetched = h.client.get(&format!("/{STREAM}/{}", segment.uri)).await;
        assert_eq!(fetched.status(), 200, "{}", segment.uri);
        let segment_bits = fetched.body.len() as f64 * 8.0;
        let duration = segment.duration.as_secs_f64();
        peak = peak.max(segment_bits / duration);
        bits += segment_bits;
        seconds += duration;
    }
    let average = bits / seconds;
    let advertised_average = variant.average_bandwidth.expect("AVERAGE-BANDWIDTH") as f64;
    let advertised_peak = variant.bandwidth as f64;
    eprintln!(
        "segments: average {average:.0} bit/s, peak {peak:.0}; advertised \
         {advertised_average} and {advertised_peak}"
    );
    // The advertised average moves only when the measurement does by more than a
    // tenth; the peak never stays below a segment's rate.
    assert!(
        (advertised_average - average).abs() <= average * 0.15,
        "AVERAGE-BANDWIDTH {advertised_average} against {average:.0} measured"
    );
    assert!(
        advertised_peak >= peak && advertised_peak <= peak * 1.15,
        "BANDWIDTH {advertised_peak} against a peak of {peak:.0}"
    );
}
