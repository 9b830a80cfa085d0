//! Reading a media playlist back, as a player does: the one reader of LL-HLS playlists
//! in Mirror, used by the load generator and by the tests that check what the server
//! writes. Sans-IO, and forgiving only where RFC 8216bis lets a client be: unknown tags
//! are skipped; a tag Mirror relies on that is malformed makes the whole read fail.

use std::time::{Duration, SystemTime};

use super::RenditionReport;

/// One EXT-X-PART as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    /// Its URI.
    pub uri: String,
    /// DURATION.
    pub duration: Duration,
    /// INDEPENDENT=YES.
    pub independent: bool,
    /// GAP=YES: no media, not to be loaded.
    pub gap: bool,
}

/// One media segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    /// Media sequence number.
    pub msn: u64,
    /// Its URI.
    pub uri: String,
    /// EXTINF.
    pub duration: Duration,
    /// EXT-X-PROGRAM-DATE-TIME, when given for it.
    pub program_date_time: Option<SystemTime>,
    /// EXT-X-DISCONTINUITY before it.
    pub discontinuity: bool,
    /// The EXT-X-MAP in effect for it, as an index into [`ListedPlaylist::maps`] (an
    /// index, not a copy: a load generator reads thousands of playlists a second).
    pub map: Option<usize>,
    /// Its parts (only for the last few segments).
    pub parts: Vec<ListedPart>,
    /// EXT-X-GAP: no media, not to be loaded.
    pub gap: bool,
}

/// A media playlist as a player reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListedPlaylist {
    /// EXT-X-VERSION.
    pub version: u32,
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: u64,
    /// PART-TARGET (EXT-X-PART-INF).
    pub part_target: Option<Duration>,
    /// The EXT-X-SERVER-CONTROL attribute list, as written.
    pub server_control: Option<String>,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// Every EXT-X-MAP URI, in order.
    pub maps: Vec<String>,
    /// EXT-X-SKIP's SKIPPED-SEGMENTS (a delta update).
    pub skipped: u64,
    /// Complete segments (after any EXT-X-SKIP).
    pub segments: Vec<ListedSegment>,
    /// Parts after the last segment: the segment in progress.
    pub trailing_parts: Vec<ListedPart>,
    /// PROGRAM-DATE-TIME given before the trailing parts, if any.
    pub trailing_program_date_time: Option<SystemTime>,
    /// EXT-X-PRELOAD-HINT:TYPE=PART URI.
    pub hint: Option<String>,
    /// EXT-X-RENDITION-REPORT: where the other renditions are.
    pub rendition_reports: Vec<RenditionReport>,
    /// How many EXT-X-PROGRAM-DATE-TIME tags it has.
    pub program_date_times: usize,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

impl ListedPlaylist {
    /// MSN of the segment in progress (one past the last complete one).
    pub fn open_msn(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.media_sequence + self.skipped, |s| s.msn + 1)
    }

    /// The `(msn, part)` to block for next: the part after the last listed one.
    pub fn next_part(&self) -> (u64, u32) {
        (
            self.open_msn(),
            u32::try_from(self.trailing_parts.len()).unwrap_or(u32::MAX),
        )
    }

    /// Every part listed, oldest first.
    pub fn parts(&self) -> impl Iterator<Item = &ListedPart> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.trailing_parts.iter())
    }

    /// The attribute `name` of EXT-X-SERVER-CONTROL, in seconds or as a count.
    pub fn server_control_value(&self, name: &str) -> Option<f64> {
        attribute(self.server_control.as_deref()?, name)?
            .parse()
            .ok()
    }

    /// The EXT-X-MAP URI in effect for `segment`.
    pub fn map_of(&self, segment: &ListedSegment) -> Option<&str> {
        self.maps.get(segment.map?).map(String::as_str)
    }

    /// The report of the rendition whose playlist is `uri`.
    pub fn report_of(&self, uri: &str) -> Option<&RenditionReport> {
        self.rendition_reports.iter().find(|r| r.uri == uri)
    }

    /// Media end time of every part listed, by URI: the segment's PDT plus the durations
    /// of the parts before it and its own. Parts of a segment without PDT are left out.
    pub fn part_media_ends(&self) -> Vec<(&str, SystemTime)> {
        let mut out = Vec::new();
        let mut next_start = None;
        for s in &self.segments {
            let start = s.program_date_time.or(next_start);
            if let Some(start) = start {
                let mut end = start;
                for p in &s.parts {
                    end += p.duration;
                    out.push((p.uri.as_str(), end));
                }
                next_start = Some(start + s.duration);
            } else {
                next_start = None;
            }
        }
        if let Some(start) = self.trailing_program_date_time.or(next_start) {
            let mut end = start;
            for p in &self.trailing_parts {
                end += p.duration;
                out.push((p.uri.as_str(), end));
            }
        }
        out
    }
}

/// The value of attribute `name` in an attribute list (RFC 8216bis 4.2): it starts the
/// list or follows a comma (PART-HOLD-BACK is not HOLD-BACK); quotes are removed.
pub fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let start = list.match_indices(name).map(|(i, _)| i).find(|&i| {
        (i == 0 || list.as_bytes()[i - 1] == b',')
            && list.as_bytes().get(i + name.len()) == Some(&b'=')
    })? + name.len()
        + 1;
    let rest = &list[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(',').next(),
    }
}

fn seconds(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        // Not `from_secs_f64`, which panics past u64::MAX seconds (found by fuzzing).
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

fn date(text: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(SystemTime::from(parsed))
}

fn part(list: &str) -> Option<ListedPart> {
    Some(ListedPart {
        uri: attribute(list, "URI")?.to_string(),
        duration: attribute(list, "DURATION").and_then(seconds)?,
        independent: attribute(list, "INDEPENDENT") == Some("YES"),
        gap: attribute(list, "GAP") == Some("YES"),
    })
}

/// Reads a media playlist; `None` if it is not one, or a tag it relies on is malformed.
pub fn parse_media_playlist(text: &str) -> Option<ListedPlaylist> {
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let mut p = ListedPlaylist::default();
    let mut parts = Vec::new();
    let mut duration = None;
    let mut pdt = None;
    let mut discontinuity = false;
    let mut gap = false;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            p.discontinuity_sequence = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = Some(attribute(v, "PART-TARGET").and_then(seconds)?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            p.server_control = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            p.maps.push(attribute(v, "URI")?.to_string());
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            p.skipped = attribute(v, "SKIPPED-SEGMENTS")?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(date(v)?);
            p.program_date_times += 1;
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-GAP" {
            gap = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push(part(v)?);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = Some(seconds(v.split(',').next()?)?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attribute(v, "TYPE") == Some("PART") {
                p.hint = Some(attribute(v, "URI")?.to_string());
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-RENDITION-REPORT:") {
            p.rendition_reports.push(RenditionReport {
                uri: attribute(v, "URI")?.to_string(),
                last_msn: attribute(v, "LAST-MSN")?.parse().ok()?,
                last_part: attribute(v, "LAST-PART").and_then(|v| v.parse().ok()),
            });
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let msn = p.media_sequence + p.skipped + p.segments.len() as u64;
            p.segments.push(ListedSegment {
                msn,
                uri: line.to_string(),
                duration: duration.take()?,
                program_date_time: pdt.take(),
                discontinuity: std::mem::take(&mut discontinuity),
                map: p.maps.len().checked_sub(1),
                parts: std::mem::take(&mut parts),
                gap: std::mem::take(&mut gap),
            });
        }
    }
    p.trailing_parts = parts;
    p.trailing_program_date_time = pdt;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the playlist fuzz target: a duration past u64::MAX seconds panicked.
    #[test]
    fn an_absurd_duration_is_refused_not_a_panic() {
        assert_eq!(seconds("1e300"), None);
        assert_eq!(seconds("-1"), None);
        assert_eq!(seconds("0.2"), Some(Duration::from_millis(200)));
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=1e300\n";
        assert!(parse_media_playlist(text).is_none());
    }

    #[test]
    fn reads_the_live_edge_and_part_media_ends() {
        let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,HOLD-BACK=3.000\n\
#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-MAP:URI=\"i.mp4\"\n\
#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-DISCONTINUITY\n\
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:06.000Z\n\
#EXT-X-PART:DURATION=0.500,URI=\"a.0\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.500,URI=\"a.1\"\n\
#EXTINF:1.000,\nseg6.m4s\n#EXT-X-PART:DURATION=0.200,URI=\"b.0\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b.1\"\n\
#EXT-X-RENDITION-REPORT:URI=\"low.m3u8\",LAST-MSN=7,LAST-PART=0\n";
        let p = parse_media_playlist(text).expect("reads");
        assert_eq!(p.version, 9);
        assert_eq!(p.segments[0].msn, 6);
        assert!(p.segments[0].discontinuity);
        assert_eq!(p.map_of(&p.segments[0]), Some("i.mp4"));
        assert!(p.segments[0].parts[0].independent && !p.segments[0].parts[1].independent);
        assert_eq!(p.next_part(), (7, 1));
        assert_eq!(p.hint.as_deref(), Some("b.1"));
        assert_eq!(p.part_target, Some(Duration::from_millis(200)));
        assert_eq!(p.server_control_value("HOLD-BACK"), Some(3.0));
        assert_eq!(p.server_control_value("PART-HOLD-BACK"), Some(0.6));
        assert_eq!(p.report_of("low.m3u8").map(|r| r.last_msn), Some(7));
        let ends = p.part_media_ends();
        let base = date("2026-01-01T00:00:06.000Z").expect("date");
        assert_eq!(ends[1], ("a.1", base + Duration::from_secs(1)));
        assert_eq!(ends[2], ("b.0", base + Duration::from_millis(1200)));
    }

    #[test]
    fn what_is_not_a_playlist_or_is_malformed_is_refused() {
        assert!(parse_media_playlist("not a playlist").is_none());
        assert!(parse_media_playlist("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n").is_none());
        assert!(
            parse_media_playlist("#EXTM3U\nseg.m4s\n").is_none(),
            "no EXTINF"
        );
        assert!(parse_media_playlist("#EXTM3U\n#EXT-X-PART:URI=\"a\"\n").is_none());
    }

    /// What Mirror renders, Mirror reads back the same.
    #[test]
    fn the_renderer_and_the_reader_agree() {
        use crate::llhls::live::{LivePlaylist, MediaNames};
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
        let mut live = LivePlaylist::new(
            MediaNames::new("video", at(0)),
            Duration::from_secs(1),
            Duration::from_millis(500),
            6,
            0,
        );
        for msn in 0..8u64 {
            for i in 0..2u32 {
                live.push_part(msn, i, Duration::from_millis(500), i == 0, at(msn * 1000));
            }
            live.push_segment(msn, Duration::from_secs(1), at(msn * 1000), at(msn * 1000));
        }
        live.push_part(8, 0, Duration::from_millis(500), true, at(8000));
        let p = parse_media_playlist(&live.playlist().render()).expect("reads");
        let position = live.position();
        assert_eq!(p.media_sequence, position.first_msn);
        assert_eq!(p.open_msn(), position.open_msn);
        assert_eq!(p.trailing_parts.len() as u32, position.open_parts);
        assert_eq!(p.segments.len(), 6);
        assert_eq!(p.segments[5].uri, live.names().segment(7));
        assert_eq!(p.segments[5].program_date_time, Some(at(7000)));
        assert_eq!(p.hint, Some(live.names().part(8, 1)));
        assert_eq!(p.maps, [live.names().init()]);
    }
}
