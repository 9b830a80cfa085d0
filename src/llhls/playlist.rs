//! The media playlist: a model of the window of segments and parts, and a renderer.
//!
//! The media playlist is rendered by our own small writer rather than m3u8-rs: m3u8-rs 6
//! cannot express the LL-HLS tags that follow the last segment (EXT-X-PART of the
//! segment in progress, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT), nor EXT-X-PART-INF
//! and EXT-X-SERVER-CONTROL.

use std::collections::VecDeque;
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
    /// No media: the source was down for its time (GAP=YES, RFC 8216bis 6.2.1). Its
    /// URI is never stored, so a request for it is 404, as 6.2.1 allows.
    pub gap: bool,
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
    /// It follows a break in the source (EXT-X-DISCONTINUITY before it).
    pub discontinuity: bool,
    /// Which init segment it needs: 0 is [`MediaPlaylist::map_uri`], n the n-th of
    /// [`MediaPlaylist::later_maps`] (after a source came back with other parameters).
    pub map: u32,
    /// Its parts, in order.
    pub parts: Vec<PlaylistPart>,
    /// No media: every part is a gap (EXT-X-GAP before it).
    pub gap: bool,
}

/// What a live playlist adds: server control and the live edge.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEdge {
    /// Parts of the segment in progress, listed after the last complete segment.
    pub trailing_parts: Vec<PlaylistPart>,
    /// URI of the next part, not yet complete (EXT-X-PRELOAD-HINT:TYPE=PART).
    pub preload_hint: Option<String>,
    /// The segment in progress follows a break in the source: EXT-X-DISCONTINUITY goes
    /// before its first part (and, once complete, before the segment).
    pub open_discontinuity: bool,
    /// The init segment the segment in progress needs (see [`PlaylistSegment::map`]).
    pub open_map: u32,
    /// The other renditions' last MSN and part (EXT-X-RENDITION-REPORT).
    pub rendition_reports: Vec<RenditionReport>,
}

/// EXT-X-RENDITION-REPORT (RFC 8216bis 4.4.5.4): where another rendition's live edge is.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    /// URI of that rendition's media playlist, relative to this one.
    pub uri: String,
    /// Its last MSN.
    pub last_msn: u64,
    /// Its last part index in that segment.
    pub last_part: Option<u32>,
}

/// Delta update asked for with `_HLS_skip` (RFC 8216bis 6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Skip {
    /// The whole playlist.
    #[default]
    No,
    /// `_HLS_skip=YES`: older segments replaced by EXT-X-SKIP.
    Yes,
    /// `_HLS_skip=v2`: the same, and EXT-X-DATERANGE tags too (none are written, so
    /// RECENTLY-REMOVED-DATERANGES is empty).
    V2,
}

/// A media playlist. Render it with [`MediaPlaylist::render`].
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// Segment target; EXT-X-TARGETDURATION is at least this, rounded. The configured
    /// one, which a live playlist raises for good when a longer segment comes.
    pub segment_target: Duration,
    /// PART-TARGET (EXT-X-PART-INF).
    pub part_target: Duration,
    /// URI of the init segment (EXT-X-MAP).
    pub map_uri: String,
    /// Init segments that replaced it, in order, when the source came back with other
    /// codec parameters; a segment's `map` picks one.
    pub later_maps: Vec<String>,
    /// Complete segments, oldest first; the first one's MSN is EXT-X-MEDIA-SEQUENCE.
    pub segments: VecDeque<PlaylistSegment>,
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that have left the window.
    pub discontinuity_sequence: u64,
    /// The stream has ended (EXT-X-ENDLIST).
    pub ended: bool,
    /// The live edge and server control, for a playlist served live; `None` for a
    /// finished recording.
    pub live: Option<LiveEdge>,
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

    /// PART-HOLD-BACK: RFC 8216bis 4.4.3.8 wants at least 2× PART-TARGET and Apple's
    /// authoring spec 3×; 3× it is.
    pub fn part_hold_back(&self) -> Duration {
        self.part_target * 3
    }

    /// CAN-SKIP-UNTIL: RFC 8216bis 4.4.3.8, at least six target durations.
    pub fn can_skip_until(&self) -> Duration {
        Duration::from_secs(self.target_duration_secs() * 6)
    }

    /// EXT-X-VERSION (RFC 8216bis 8): 6 for EXT-X-MAP in a playlist that is not
    /// I-frames-only, 9 where CAN-SKIP-UNTIL offers delta updates, 10 for an EXT-X-SKIP
    /// with RECENTLY-REMOVED-DATERANGES.
    pub fn version(&self, skip: Skip) -> u8 {
        match (&self.live, skip) {
            (None, _) => 6,
            (Some(_), Skip::V2) => 10,
            (Some(_), _) => 9,
        }
    }

    /// How many leading segments a delta update replaces with EXT-X-SKIP: those that
    /// start more than CAN-SKIP-UNTIL before the end of the playlist (RFC 8216bis
    /// 6.2.5.1).
    pub fn skippable_segments(&self) -> usize {
        let boundary = self.can_skip_until();
        let mut from_end = Duration::ZERO;
        let mut keep = 0;
        for s in self.segments.iter().rev() {
            from_end += s.duration;
            if from_end > boundary {
                break;
            }
            keep += 1;
        }
        self.segments.len() - keep
    }

    /// The URI of init segment `map` (see [`PlaylistSegment::map`]).
    pub fn map_of(&self, map: u32) -> &str {
        match map.checked_sub(1) {
            None => &self.map_uri,
            Some(i) => self
                .later_maps
                .get(i as usize)
                .map_or(&self.map_uri, String::as_str),
        }
    }

    /// Renders the whole playlist.
    pub fn render(&self) -> String {
        self.render_with(Skip::No)
    }

    /// Renders the playlist, as a delta update when `skip` asks for one (only a live
    /// playlist offers them; a finished one ignores `skip`).
    pub fn render_with(&self, skip: Skip) -> String {
        let skip = if self.live.is_some() { skip } else { Skip::No };
        let mut out = String::with_capacity(512 + self.segments.len() * 200);
        let target = self.target_duration_secs();
        out.push_str("#EXTM3U\n");
        let _ = writeln!(out, "#EXT-X-VERSION:{}", self.version(skip));
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        if self.live.is_some() {
            // RFC 8216bis 4.4.3.8. HOLD-BACK at its minimum of three target durations
            // (4.4.3.8: "at least three times the Target Duration").
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={},HOLD-BACK={}",
                seconds(self.can_skip_until()),
                seconds(self.part_hold_back()),
                seconds(Duration::from_secs(target * 3)),
            );
        }
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={}",
            seconds(self.part_target)
        );
        let first_msn = self.segments.front().map_or(0, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
        if self.discontinuity_sequence > 0 {
            // 4.4.3.3: needed once a discontinuity has left the window, so players can
            // tell which timeline the first listed segment is on.
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        // RFC 8216bis 4.4.3.11: every media segment is independently decodable from its
        // first frame (each starts with an IDR).
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        let skipped = match skip {
            Skip::No => 0,
            Skip::Yes | Skip::V2 => self.skippable_segments(),
        };
        // 4.4.4.5: the map of the first segment listed; another EXT-X-MAP where a later
        // segment needs another init segment.
        let mut map = self
            .segments
            .get(skipped)
            .map(|s| s.map)
            .or_else(|| self.live.as_ref().map(|l| l.open_map))
            .unwrap_or(0);
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.map_of(map));
        if skipped > 0 {
            // 4.4.5.2: EXT-X-SKIP replaces the skipped segments, in a delta update only.
            let _ = write!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            if skip == Skip::V2 {
                out.push_str(",RECENTLY-REMOVED-DATERANGES=\"\"");
            }
            out.push('\n');
        }

        // 4.4.4.9: parts are listed for the segments within the last three target
        // durations (and for the segment in progress).
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
        for (i, segment) in self.segments.iter().enumerate().skip(skipped) {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if segment.map != map {
                map = segment.map;
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.map_of(map));
            }
            // 4.4.4.6: PROGRAM-DATE-TIME on every segment, since each is stamped with its
            // own capture time.
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
            if segment.gap {
                // 4.4.4.7: clients do not load it; the timeline goes on.
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{},", seconds(segment.duration));
            let _ = writeln!(out, "{}", segment.uri);
        }
        if let Some(live) = &self.live {
            // 4.4.5.3: one hint, for the next part, while the stream is live. The tags of
            // a break (EXT-X-DISCONTINUITY, EXT-X-MAP) go before the segment's first
            // part, or before the hint of it while it is not complete: a player that
            // preloads the hint must know it comes after a break (Shaka appended a
            // slate's first part to the camera's decoder configuration and failed).
            let hint = live.preload_hint.as_ref().filter(|_| !self.ended);
            let tags_due = !live.trailing_parts.is_empty() || hint.is_some();
            if live.open_discontinuity && tags_due {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if live.open_map != map && tags_due {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.map_of(live.open_map));
            }
            for part in &live.trailing_parts {
                write_part(&mut out, part);
            }
            if let Some(hint) = hint {
                let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
            }
            for report in &live.rendition_reports {
                let _ = write!(
                    out,
                    "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                    report.uri, report.last_msn
                );
                if let Some(part) = report.last_part {
                    let _ = write!(out, ",LAST-PART={part}");
                }
                out.push('\n');
            }
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
    if part.gap {
        out.push_str(",GAP=YES");
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
            discontinuity: false,
            map: 0,
            parts: (0..parts)
                .map(|i| PlaylistPart {
                    uri: format!("part{msn}.{i}.m4s"),
                    duration: Duration::from_millis(part_ms),
                    independent: i == 0,
                    gap: false,
                })
                .collect(),
            gap: false,
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
            later_maps: Vec::new(),
            segments: (0..5).map(|m| segment(m, 2, 500)).collect(),
            discontinuity_sequence: 0,
            ended: true,
            live: None,
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
            later_maps: Vec::new(),
            segments: VecDeque::from([segment(7, 5, 200)]),
            discontinuity_sequence: 0,
            ended: false,
            live: None,
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
