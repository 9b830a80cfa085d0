//! The media playlist: a model of the window of segments and parts, and a renderer.
//!
//! The media playlist is rendered by our own small writer rather than m3u8-rs: m3u8-rs 6
//! cannot express the LL-HLS tags that follow the last segment (EXT-X-PART of the
//! segment in progress, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT), nor EXT-X-PART-INF
//! and EXT-X-SERVER-CONTROL.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::iso8601::{self, EncodedConfig, Iso8601};

/// One partial segment as the playlist lists it (EXT-X-PART, RFC 8216bis 4.4.4.9).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistPart {
    /// URI relative to the playlist.
    pub uri: String,
    /// Duration (DURATION).
    pub duration: Duration,
    /// Starts with an independent frame (INDEPENDENT=YES).
    pub independent: bool,
}

/// One media segment (EXTINF, RFC 8216bis 4.4.4.1) with its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistSegment {
    /// Media sequence number.
    pub msn: u64,
    /// URI relative to the playlist.
    pub uri: String,
    /// Duration (EXTINF).
    pub duration: Duration,
    /// Capture time of its first sample (EXT-X-PROGRAM-DATE-TIME).
    pub program_date_time: SystemTime,
    /// Its parts, in order.
    pub parts: Vec<PlaylistPart>,
}

/// A media playlist. Render it with [`MediaPlaylist::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// Configured segment target; EXT-X-TARGETDURATION is at least this, rounded.
    pub segment_target: Duration,
    /// PART-TARGET (EXT-X-PART-INF).
    pub part_target: Duration,
    /// URI of the init segment (EXT-X-MAP).
    pub map_uri: String,
    /// Complete segments, oldest first; the first one's MSN is EXT-X-MEDIA-SEQUENCE.
    pub segments: Vec<PlaylistSegment>,
    /// The stream has ended (EXT-X-ENDLIST).
    pub ended: bool,
}

/// RFC 8216bis 4.4.4.9: "Partial Segments SHOULD be removed from the Playlist once they
/// are greater than three Target Durations from the end of the Playlist."
const PART_WINDOW_TARGET_DURATIONS: u64 = 3;

impl MediaPlaylist {
    /// EXT-X-TARGETDURATION: RFC 8216bis 4.4.3.1, every EXTINF rounded to the nearest
    /// integer must be ≤ it; and never below the configured segment target.
    pub fn target_duration_secs(&self) -> u64 {
        let configured = self.segment_target.as_secs_f64().round().max(1.0) as u64;
        self.segments
            .iter()
            .map(|s| s.duration.as_secs_f64().round() as u64)
            .fold(configured, u64::max)
    }

    /// EXT-X-VERSION: 6 is what EXT-X-MAP in a playlist that is not I-frames-only needs
    /// (RFC 8216bis 8, "EXT-X-MAP ... REQUIRES a compatibility version number of 6").
    pub fn version(&self) -> u8 {
        6
    }

    /// Renders the playlist text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + self.segments.len() * 160);
        let target = self.target_duration_secs();
        out.push_str("#EXTM3U\n");
        let _ = writeln!(out, "#EXT-X-VERSION:{}", self.version());
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={}",
            seconds(self.part_target)
        );
        let first_msn = self.segments.first().map_or(0, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
        // RFC 8216bis 4.4.3.11: every media segment is independently decodable from its
        // first frame (each starts with an IDR).
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.map_uri);

        // Parts are listed for the segments within the last three target durations.
        let window = Duration::from_secs(target * PART_WINDOW_TARGET_DURATIONS);
        let mut from_end = Duration::ZERO;
        let mut with_parts_from = self.segments.len();
        for (i, s) in self.segments.iter().enumerate().rev() {
            if from_end >= window {
                break;
            }
            from_end += s.duration;
            with_parts_from = i;
        }
        for (i, segment) in self.segments.iter().enumerate() {
            // RFC 8216bis 4.4.4.6: PROGRAM-DATE-TIME on every segment, since each is
            // stamped with its own capture time.
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                format_program_date_time(segment.program_date_time)
            );
            if i >= with_parts_from {
                for part in &segment.parts {
                    write_part(&mut out, part);
                }
            }
            let _ = writeln!(out, "#EXTINF:{},", seconds(segment.duration));
            let _ = writeln!(out, "{}", segment.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

fn write_part(out: &mut String, part: &PlaylistPart) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        seconds(part.duration),
        part.uri
    );
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

/// A decimal number of seconds with millisecond precision, as EXTINF and DURATION take.
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

const PDT_FORMAT: EncodedConfig = iso8601::Config::DEFAULT
    .set_time_precision(iso8601::TimePrecision::Second {
        decimal_digits: std::num::NonZeroU8::new(3),
    })
    .encode();

/// `YYYY-MM-DDThh:mm:ss.sssZ`, the ISO 8601 form EXT-X-PROGRAM-DATE-TIME takes (RFC
/// 8216bis 4.4.4.6), in UTC with milliseconds.
pub fn format_program_date_time(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Iso8601::<PDT_FORMAT>)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn segment(msn: u64, parts: u32, part_ms: u64) -> PlaylistSegment {
        PlaylistSegment {
            msn,
            uri: format!("seg{msn}.m4s"),
            duration: Duration::from_millis(part_ms * u64::from(parts)),
            program_date_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + msn * 1000),
            parts: (0..parts)
                .map(|i| PlaylistPart {
                    uri: format!("part{msn}.{i}.m4s"),
                    duration: Duration::from_millis(part_ms),
                    independent: i == 0,
                })
                .collect(),
        }
    }

    #[test]
    fn program_date_time_is_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_program_date_time(at), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn ended_recording_renders_exactly() {
        let playlist = MediaPlaylist {
            segment_target: Duration::from_secs(1),
            part_target: Duration::from_millis(500),
            map_uri: "init.mp4".into(),
            segments: (0..5).map(|m| segment(m, 2, 500)).collect(),
            ended: true,
        };
        let golden = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:1.000,
seg0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z
#EXTINF:1.000,
seg1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part2.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part2.1.m4s\"
#EXTINF:1.000,
seg2.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part3.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part3.1.m4s\"
#EXTINF:1.000,
seg3.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part4.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part4.1.m4s\"
#EXTINF:1.000,
seg4.m4s
#EXT-X-ENDLIST
";
        assert_eq!(playlist.render(), golden);
    }

    #[test]
    fn target_duration_covers_the_longest_rounded_segment() {
        let mut playlist = MediaPlaylist {
            segment_target: Duration::from_secs(1),
            part_target: Duration::from_millis(200),
            map_uri: "init.mp4".into(),
            segments: vec![segment(7, 5, 200)],
            ended: false,
        };
        assert_eq!(playlist.target_duration_secs(), 1);
        playlist.segments[0].duration = Duration::from_millis(1600);
        assert_eq!(playlist.target_duration_secs(), 2);
        playlist.segments[0].duration = Duration::from_millis(1400);
        assert_eq!(playlist.target_duration_secs(), 1);
        assert!(playlist.render().contains("#EXT-X-MEDIA-SEQUENCE:7\n"));
        assert!(!playlist.render().contains("ENDLIST"));
    }
}
