//! What a viewer reads from an LL-HLS media playlist: the segments with their parts and
//! PROGRAM-DATE-TIME, the trailing parts, the preload hint, PART-TARGET.

use std::time::{Duration, SystemTime};

/// One part as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPart {
    /// Its URI.
    pub uri: String,
    /// DURATION.
    pub duration: Duration,
}

/// One segment as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    /// Media sequence number.
    pub msn: u64,
    /// EXTINF.
    pub duration: Duration,
    /// EXT-X-PROGRAM-DATE-TIME, when given.
    pub program_date_time: Option<SystemTime>,
    /// Its parts (only for the last few segments).
    pub parts: Vec<ListedPart>,
}

/// A media playlist as a viewer follows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewerPlaylist {
    /// EXT-X-RENDITION-REPORT: where the other renditions are.
    pub rendition_reports: Vec<RenditionReport>,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// PART-TARGET.
    pub part_target: Option<Duration>,
    /// Complete segments (after any EXT-X-SKIP).
    pub segments: Vec<ListedSegment>,
    /// Parts after the last segment: the segment in progress.
    pub trailing_parts: Vec<ListedPart>,
    /// PROGRAM-DATE-TIME given before the trailing parts, if any.
    pub trailing_program_date_time: Option<SystemTime>,
    /// EXT-X-PRELOAD-HINT URI.
    pub hint: Option<String>,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

impl ViewerPlaylist {
    /// MSN of the segment in progress (one past the last complete one).
    pub fn open_msn(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.media_sequence, |s| s.msn + 1)
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

fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let start = list
        .match_indices(&key)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || list.as_bytes()[i - 1] == b',')?
        + key.len();
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
        .map(Duration::from_secs_f64)
}

fn date(text: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some(SystemTime::from(parsed))
}

/// One EXT-X-RENDITION-REPORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// The other rendition's media playlist, relative to this one.
    pub uri: String,
    /// Its last MSN.
    pub last_msn: u64,
    /// Its last part in that segment.
    pub last_part: Option<u32>,
}

/// Reads a media playlist; `None` if it is not one.
pub fn read(text: &str) -> Option<ViewerPlaylist> {
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let mut p = ViewerPlaylist::default();
    let mut parts = Vec::new();
    let mut skipped = 0u64;
    let mut duration = None;
    let mut pdt = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = attribute(v, "PART-TARGET").and_then(seconds);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
            skipped = attribute(v, "SKIPPED-SEGMENTS")?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = date(v);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push(ListedPart {
                uri: attribute(v, "URI")?.to_string(),
                duration: attribute(v, "DURATION").and_then(seconds)?,
            });
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = seconds(v.split(',').next()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            p.hint = attribute(v, "URI").map(str::to_string);
        } else if let Some(v) = line.strip_prefix("#EXT-X-RENDITION-REPORT:") {
            p.rendition_reports.push(RenditionReport {
                uri: attribute(v, "URI")?.to_string(),
                last_msn: attribute(v, "LAST-MSN")?.parse().ok()?,
                last_part: attribute(v, "LAST-PART").and_then(|v| v.parse().ok()),
            });
        } else if line.starts_with("#EXT-X-ENDLIST") {
            p.ended = true;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let msn = p.media_sequence + skipped + p.segments.len() as u64;
            p.segments.push(ListedSegment {
                msn,
                duration: duration.take()?,
                program_date_time: pdt.take(),
                parts: std::mem::take(&mut parts),
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

    #[test]
    fn reads_the_live_edge_and_part_media_ends() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.200\n\
#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n\
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:06.000Z\n\
#EXT-X-PART:DURATION=0.500,URI=\"a.0\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.500,URI=\"a.1\"\n\
#EXTINF:1.000,\nseg6.m4s\n#EXT-X-PART:DURATION=0.200,URI=\"b.0\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"b.1\"\n";
        let p = read(text).expect("reads");
        assert_eq!(p.segments[0].msn, 6);
        assert_eq!(p.next_part(), (7, 1));
        assert_eq!(p.hint.as_deref(), Some("b.1"));
        assert_eq!(p.part_target, Some(Duration::from_millis(200)));
        let ends = p.part_media_ends();
        let base = date("2026-01-01T00:00:06.000Z").expect("date");
        assert_eq!(ends[1], ("a.1", base + Duration::from_secs(1)));
        assert_eq!(ends[2], ("b.0", base + Duration::from_millis(1200)));
        assert!(read("not a playlist").is_none());
    }
}
