//! The playlist reader: arbitrary text never panics it; and a playlist Mirror renders
//! from an arbitrary history of parts, segments, gaps and discontinuities reads back
//! with the same segments and parts (render, then parse: a round trip).
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mirror::llhls::live::{LivePlaylist, MediaNames};
use mirror::llhls::parse::parse_media_playlist;

#[derive(Debug, Arbitrary)]
enum Step {
    /// A part of `ms` (clamped to 1..=200) completes.
    Part { ms: u8, independent: bool },
    /// The segment in production completes.
    Segment,
    /// The source breaks off and resumes after a discontinuity.
    Discontinuity,
}

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    Text(&'a str),
    History(Vec<Step>),
}

fuzz_target!(|input: Input| {
    match input {
        Input::Text(text) => {
            let _ = parse_media_playlist(text);
        }
        Input::History(steps) => round_trip(&steps),
    }
});

fn round_trip(steps: &[Step]) {
    let part_target = Duration::from_millis(200);
    let names = MediaNames::new("video-0123abcd", SystemTime::UNIX_EPOCH);
    let mut live = LivePlaylist::new(names, Duration::from_secs(1), part_target, 6, 0);
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (mut msn, mut index) = (0u64, 0u32);
    let mut segment_ms = 0u64;
    for step in steps.iter().take(200) {
        now += Duration::from_millis(200);
        match step {
            Step::Part { ms, independent } => {
                let ms = u64::from(*ms).clamp(1, 200);
                live.push_part(
                    msn,
                    index,
                    Duration::from_millis(ms),
                    *independent || index == 0,
                    now,
                );
                index += 1;
                segment_ms += ms;
            }
            Step::Segment if index > 0 => {
                live.push_segment(msn, Duration::from_millis(segment_ms), now, now);
                msn += 1;
                index = 0;
                segment_ms = 0;
            }
            Step::Segment => {}
            Step::Discontinuity => {
                if index > 0 {
                    live.push_segment(msn, Duration::from_millis(segment_ms), now, now);
                    msn += 1;
                    index = 0;
                    segment_ms = 0;
                }
                live.mark_discontinuity(msn, now);
            }
        }
    }
    let text = live.playlist().render();
    let listed = parse_media_playlist(&text).expect("a playlist Mirror rendered reads back");
    assert_eq!(listed.open_msn(), msn, "{text}");
    assert_eq!(listed.trailing_parts.len(), index as usize, "{text}");
    for (i, segment) in listed.segments.iter().enumerate() {
        if i > 0 {
            assert_eq!(segment.msn, listed.segments[i - 1].msn + 1, "{text}");
        }
    }
}
