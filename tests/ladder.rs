//! A two-rendition ladder from one decoded source: both renditions decodable, their
//! keyframes at the same times, the multivariant playlist describing each, and every
//! media playlist reporting where the other rendition is.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::fixtures::{loopback_settings, public_stream, rendition};
use common::h3client::H3Client;
use common::{average_bandwidth, probe_frames, with_init};
use mirror::ingest::SourceSpec;
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};
use mirror::server::RunningServer;

fn read(playlist: &str) -> ListedPlaylist {
    parse_media_playlist(playlist).unwrap_or_else(|| panic!("a media playlist: {playlist}"))
}

/// `(uri, PDT)` of each complete segment.
fn segments(playlist: &str) -> Vec<(String, Option<SystemTime>)> {
    read(playlist)
        .segments
        .into_iter()
        .map(|s| (s.uri, s.program_date_time))
        .collect()
}

fn msn_of(uri: &str) -> u64 {
    uri.rsplit('-')
        .next()
        .and_then(|s| s.strip_suffix(".m4s"))
        .and_then(|s| s.parse().ok())
        .expect("segment MSN")
}

/// The `(LAST-MSN, LAST-PART)` a playlist reports for `uri`.
fn report(playlist: &str, uri: &str) -> (u64, u32) {
    let read = read(playlist);
    let report = read
        .report_of(uri)
        .unwrap_or_else(|| panic!("no report of {uri}: {playlist}"));
    (report.last_msn, report.last_part.expect("LAST-PART"))
}

/// The `(MSN, part)` of a playlist's own last listed part.
fn own_edge(playlist: &str) -> (u64, u32) {
    let read = read(playlist);
    let (open_msn, next) = read.next_part();
    match next.checked_sub(1) {
        Some(last) => (open_msn, last),
        None => {
            let last = read.segments.last().expect("parts");
            (
                last.msn,
                u32::try_from(last.parts.len()).expect("count") - 1,
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_rendition_ladder_is_aligned_decodable_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = loopback_settings(dir.path(), 640, 360, 800);
    settings.streams = vec![public_stream(
        "ladder",
        "testsrc",
        vec![
            rendition("high", 640, 360, 800),
            rendition("low", 320, 180, 250),
        ],
    )];
    settings.validate().expect("valid");
    let server = RunningServer::start_with(&settings, "", &SourceSpec::TestPattern)
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;

    let multivariant = client.get("/ladder/index.m3u8").await.text();
    let variants: Vec<&str> = multivariant
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(variants.len(), 2, "{multivariant}");
    let mut averages = Vec::new();
    for (line, resolution, configured) in [
        (variants[0], "RESOLUTION=640x360", 800_000 + 128_000),
        (variants[1], "RESOLUTION=320x180", 250_000 + 128_000),
    ] {
        assert!(line.contains(resolution), "{line}");
        assert!(line.contains("CODECS=\"avc1."), "{line}");
        assert!(line.contains(",mp4a.40.2\""), "{line}");
        assert!(line.contains("FRAME-RATE=30"), "{line}");
        // The configured rate until a segment is complete, then the measured one.
        let average = average_bandwidth(line);
        assert!(
            (configured / 4..=configured * 3 / 2).contains(&average),
            "{line}"
        );
        averages.push(average);
    }
    assert!(averages[0] > averages[1], "{multivariant}");
    assert!(multivariant.contains("\nhigh.m3u8\n") && multivariant.contains("\nlow.m3u8\n"));

    // Wait for three complete segments in both.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (high, low) = loop {
        // 400 while MSN 3 is more than two segments ahead of the live edge.
        let high = client.get("/ladder/high.m3u8?_HLS_msn=3").await;
        let low = client.get("/ladder/low.m3u8?_HLS_msn=3").await;
        let (high_ok, low_ok) = (high.status() == 200, low.status() == 200);
        let (high, low) = (high.text(), low.text());
        if high_ok && low_ok && segments(&high).len() >= 3 && segments(&low).len() >= 3 {
            break (high, low);
        }
        assert!(Instant::now() < deadline, "no segments: {high}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Each reports the other, within one part of where the other says it is.
    for (playlist, other_uri, other) in [(&high, "low.m3u8", &low), (&low, "high.m3u8", &high)] {
        let reported = report(playlist, other_uri);
        let actual = own_edge(other);
        let parts_apart = |a: (u64, u32), b: (u64, u32)| -> i64 {
            (a.0 as i64 - b.0 as i64) * 5 + (a.1 as i64 - b.1 as i64)
        };
        assert!(
            parts_apart(actual, reported).abs() <= 2,
            "report {reported:?} vs {other_uri} at {actual:?}"
        );
        assert_eq!(
            playlist.matches("#EXT-X-RENDITION-REPORT:").count(),
            1,
            "only the other rendition is reported"
        );
    }

    // Segments with the same MSN start at the same time with an IDR in both.
    let high_segments = segments(&high);
    let low_segments = segments(&low);
    let (high_uri, high_pdt) = &high_segments[high_segments.len() - 2];
    let (low_uri, low_pdt) = low_segments
        .iter()
        .find(|(uri, _)| msn_of(uri) == msn_of(high_uri))
        .expect("same MSN in both");
    assert_eq!(high_pdt, low_pdt, "same capture time");
    let mut starts = Vec::new();
    for (playlist, uri, size) in [(&high, high_uri, (640, 360)), (&low, low_uri, (320, 180))] {
        let map = read(playlist).maps.pop().expect("map");
        let init = client.get(&format!("/ladder/{map}")).await;
        let media = client.get(&format!("/ladder/{uri}")).await;
        assert_eq!((init.status(), media.status()), (200, 200));
        let file = with_init(dir.path(), uri, &init.body, &media.body);
        let errors = common::decode_errors(&file);
        assert!(errors.is_empty(), "{uri}: {errors}");
        let frames = probe_frames(&file);
        let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
        assert_eq!(video.len(), 30, "{uri}: one second at 30 fps");
        assert!(video[0].key_frame, "{uri} starts with an IDR");
        assert_eq!(video.iter().filter(|f| f.key_frame).count(), 1);
        starts.push(video[0].pts_time);
        let dims = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-show_entries"])
            .args(["stream=width,height", "-of", "csv=p=0"])
            .arg(&file)
            .output()
            .expect("ffprobe");
        assert_eq!(
            String::from_utf8_lossy(&dims.stdout).trim(),
            format!("{},{}", size.0, size.1)
        );
    }
    assert!(
        (starts[0] - starts[1]).abs() < 1e-6,
        "keyframes aligned: {starts:?}"
    );
    // Names carry the profile hash: different renditions, different names.
    assert_ne!(
        high_uri.split('-').nth(1),
        low_uri.split('-').nth(1),
        "{high_uri} / {low_uri}"
    );
}
