//! `source.outage` against a real RTSP camera (GStreamer's gst-rtsp-server on loopback)
//! that dies for a few seconds and comes back alike. With `"gap"` the playlists list
//! the outage as GAP=YES parts and EXT-X-GAP segments, blocking reloads go on being
//! answered, and media resumes on the same timeline without a discontinuity; an outage
//! past `outage_max_ms` ends in a discontinuity as without gaps. With `"slate"` a still
//! card with silence, at the camera's picture size, fills the outage between two
//! discontinuities.

mod common;

use std::time::{Duration, Instant};

use common::camera::{Served, decode_segment, map_uri, read, serve_camera_with};
use common::h3client::H3Client;
use common::rtsp::{RtspServer, free_port};
use mirror::ingest::OutageFill;
use mirror::llhls::parse::ListedPlaylist;
use mirror::stream::{SourceState, StreamHandle};

const CAMERA: [&str; 4] = ["--codec", "h264", "--audio", "aac"];

/// The camera, and Mirror serving it as `cam`, outages up to `max_ms` filled by `fill`.
async fn serve(port: u16, fill: OutageFill, max_ms: u32) -> Served {
    serve_camera_with(port, &CAMERA, |settings| {
        settings.source.outage = fill;
        settings.source.outage_max_ms = max_ms;
    })
    .await
}

/// The playlist once media follows the gap and `after` more segments are complete.
async fn until_resumed(client: &H3Client, after: usize) -> (String, ListedPlaylist) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client.get("/cam/video.m3u8").await.text();
        let listed = read(&text);
        let resumed = listed
            .segments
            .iter()
            .skip_while(|s| !s.gap)
            .filter(|s| !s.gap)
            .count();
        if resumed > after {
            return (text, listed);
        }
        assert!(Instant::now() < deadline, "media did not resume: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A player's blocking reloads for `during`, each for the part after the last one
/// listed: all answered, none held longer than the watchdog and a part or two take.
async fn blocking_reloads_go_on(client: &H3Client, stream: &StreamHandle, during: Duration) {
    let began = Instant::now();
    let mut longest = Duration::ZERO;
    let mut statuses = Vec::new();
    while began.elapsed() < during {
        let (msn, part) = {
            let current = stream.current();
            (current.position.open_msn, current.position.open_parts)
        };
        let asked = Instant::now();
        let reply = client
            .get(&format!("/cam/video.m3u8?_HLS_msn={msn}&_HLS_part={part}"))
            .await;
        longest = longest.max(asked.elapsed());
        statuses.push(reply.status());
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(longest < Duration::from_millis(1500), "{longest:?}");
}

/// The start time of the first video frame of `segment`, decoded with its init segment.
async fn first_picture(client: &H3Client, dir: &std::path::Path, map: &str, segment: &str) -> f64 {
    let frames = decode_segment(client, dir, "cam", map, segment).await;
    frames
        .iter()
        .filter(|f| f.media_type == "video")
        .map(|f| f.pts_time)
        .fold(f64::INFINITY, f64::min)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_outage_is_listed_as_a_gap_and_media_resumes_on_the_same_timeline() {
    let port = free_port();
    let Served {
        dir,
        camera,
        server,
        client,
    } = serve(port, OutageFill::Gap, 10_000).await;
    let client = &client;
    let stream = server.state.streams.get("cam").expect("stream").clone();
    common::camera::wait_segments(client, "/cam/video.m3u8", 3).await;
    let before = read(&client.get("/cam/video.m3u8").await.text());
    let reference = before.segments.last().expect("a segment").clone();

    camera.freeze();
    // A player's blocking reloads while the camera is gone, each answered with the part
    // after the last one listed; the watchdog notices after three part targets, and the
    // gap is listed one part target behind the clock.
    blocking_reloads_go_on(client, &stream, Duration::from_secs(4)).await;
    let during = client.get("/cam/video.m3u8").await.text();
    assert!(during.contains(",GAP=YES\n"), "{during}");
    assert!(during.contains("#EXT-X-GAP\n"), "{during}");
    assert!(!during.contains("#EXT-X-PRELOAD-HINT"), "{during}");
    let listed = read(&during);
    let gap_part = listed
        .trailing_parts
        .iter()
        .chain(listed.segments.iter().flat_map(|s| &s.parts))
        .find(|p| p.gap)
        .expect("a gap part");
    assert_eq!(
        client.get(&format!("/cam/{}", gap_part.uri)).await.status(),
        404,
        "a gap part has no media (RFC 8216bis 6.2.1 lets it be 404)"
    );
    assert_ne!(stream.status().state, SourceState::Live);
    assert_eq!(
        stream.status().filling,
        Some("gap"),
        "/streams says what fills it"
    );

    // The frozen camera is gone for good; another comes up on its port, alike.
    camera.kill();
    let camera = RtspServer::start(port, &CAMERA);
    let (text, after) = until_resumed(client, 2).await;
    assert_eq!(stream.status().filling, None);
    assert!(!text.contains("#EXT-X-DISCONTINUITY"), "{text}");
    let gaps: Vec<_> = after.segments.iter().filter(|s| s.gap).collect();
    let gap_time: Duration = gaps.iter().map(|s| s.duration).sum();
    assert!(gap_time >= Duration::from_secs(4), "{gap_time:?}: {text}");
    // Parts are listed for the last three target durations only.
    assert!(gaps.iter().all(|s| s.parts.iter().all(|p| p.gap)), "{text}");
    let resumed = after
        .segments
        .iter()
        .skip_while(|s| !s.gap)
        .find(|s| !s.gap)
        .expect("media after the gap");
    assert!(resumed.parts[0].independent, "{text}");
    // MSNs go on through the gap.
    let msns: Vec<u64> = after.segments.iter().map(|s| s.msn).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");

    // One timeline: the media after the gap starts where the playlist's durations put
    // it, and its PROGRAM-DATE-TIME agrees.
    let listed_between: Duration = after
        .segments
        .iter()
        .skip_while(|s| s.msn != reference.msn)
        .take_while(|s| s.msn != resumed.msn)
        .map(|s| s.duration)
        .sum();
    let map = map_uri(&text);
    let from = first_picture(client, dir.path(), &map, &reference.uri).await;
    let to = first_picture(client, dir.path(), &map, &resumed.uri).await;
    let media_between = to - from;
    assert!(
        (media_between - listed_between.as_secs_f64()).abs() < 0.05,
        "media {media_between:.3} s apart, the playlist says {listed_between:?}: {text}"
    );
    let dated = resumed
        .program_date_time
        .and_then(|to| to.duration_since(reference.program_date_time?).ok())
        .expect("dates");
    assert!(
        (dated.as_secs_f64() - listed_between.as_secs_f64()).abs() < 0.05,
        "dated {dated:?} apart, listed {listed_between:?}"
    );
    assert_eq!(stream.status().state, SourceState::Live);
    assert_eq!(stream.status().filling, None);
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_limit_ends_in_a_discontinuity() {
    let port = free_port();
    let Served {
        dir: _dir,
        camera,
        server: _server,
        client,
    } = serve(port, OutageFill::Gap, 1_000).await;
    let client = &client;
    common::camera::wait_segments(client, "/cam/video.m3u8", 2).await;
    camera.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let camera = RtspServer::start(port, &CAMERA);
    let (text, after) = until_resumed(client, 1).await;
    let gap_time: Duration = after
        .segments
        .iter()
        .filter(|s| s.gap)
        .map(|s| s.duration)
        .sum();
    assert!(
        gap_time <= Duration::from_secs(1) && !gap_time.is_zero(),
        "{gap_time:?}: {text}"
    );
    let resumed = after
        .segments
        .iter()
        .skip_while(|s| !s.gap)
        .find(|s| !s.gap)
        .expect("media after the gap");
    assert!(resumed.discontinuity, "{text}");
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slate_fills_a_camera_outage_between_two_discontinuities() {
    let port = free_port();
    let Served {
        dir,
        camera,
        server,
        client,
    } = serve(port, OutageFill::Slate, 10_000).await;
    let client = &client;
    let stream = server.state.streams.get("cam").expect("stream").clone();
    common::camera::wait_segments(client, "/cam/video.m3u8", 2).await;
    camera.kill();
    blocking_reloads_go_on(client, &stream, Duration::from_secs(3)).await;
    assert_ne!(stream.status().state, SourceState::Live);
    assert_eq!(stream.status().filling, Some("slate"));
    let camera = RtspServer::start(port, &CAMERA);

    // The playlist once the camera is back and a segment of it is complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (text, listed) = loop {
        let text = client.get("/cam/video.m3u8").await.text();
        let listed = read(&text);
        let breaks: Vec<usize> = (0..listed.segments.len())
            .filter(|&i| listed.segments[i].discontinuity)
            .collect();
        if breaks.len() == 2 && breaks[1] + 1 < listed.segments.len() {
            break (text, listed);
        }
        assert!(
            Instant::now() < deadline,
            "the camera did not come back: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!text.contains("GAP"), "{text}");
    let mut breaks = listed.segments.iter().filter(|s| s.discontinuity);
    let (slate, back) = (breaks.next().expect("slate"), breaks.next().expect("back"));
    let map_of = |segment: &mirror::llhls::parse::ListedSegment| {
        listed.maps[segment.map.expect("a map")].clone()
    };
    // Each side of the slate has an init segment of its own: the slate's, then the
    // camera's again.
    assert!(map_of(slate).ends_with("-init1.mp4"), "{text}");
    assert!(map_of(back).ends_with("-init2.mp4"), "{text}");

    // The slate: the camera's picture size, pictures and silence that decode.
    let frames = decode_segment(client, dir.path(), "cam", &map_of(slate), &slate.uri).await;
    assert!(
        frames
            .iter()
            .any(|f| f.media_type == "video" && f.key_frame)
    );
    assert!(frames.iter().any(|f| f.media_type == "audio"));
    let file = dir.path().join(&slate.uri);
    let size = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .expect("ffprobe");
    assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "640,360");
    let loudest = common::max_volume_db(&file);
    assert!(loudest <= -80.0, "the slate is silent: {loudest} dB");
    // The camera after it.
    let frames = decode_segment(client, dir.path(), "cam", &map_of(back), &back.uri).await;
    assert!(
        frames
            .iter()
            .any(|f| f.media_type == "video" && f.key_frame)
    );
    assert_eq!(stream.status().state, SourceState::Live);
    assert_eq!(stream.status().filling, None);
    drop(camera);
}
