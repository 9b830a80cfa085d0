//! The names of a rendition's media (init segments, segments, parts) and what a
//! requested name names. Pure string work: it never sees a playlist or a store.

use std::time::SystemTime;

/// What a media URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaName {
    /// An init segment: 0 the first, n the one after the n-th change of codec
    /// parameters.
    Init(u32),
    /// A segment, by MSN.
    Segment(u64),
    /// A part: MSN and index.
    Part(u64, u32),
}

/// The names of a rendition's media. Every name carries the stream's epoch (its start
/// time), so a name never names other bytes after a restart: a cache in front can keep
/// media forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaNames {
    prefix: String,
}

impl MediaNames {
    /// Names for the rendition `rendition` of a stream that started at `epoch`.
    pub fn new(rendition: &str, epoch: SystemTime) -> Self {
        let millis = epoch
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self {
            prefix: format!("{rendition}-{millis:x}"),
        }
    }

    /// The init segment.
    pub fn init(&self) -> String {
        format!("{}-init.mp4", self.prefix)
    }

    /// Init segment `generation` (0 is [`init`](Self::init)).
    pub fn init_generation(&self, generation: u32) -> String {
        match generation {
            0 => self.init(),
            g => format!("{}-init{g}.mp4", self.prefix),
        }
    }

    /// A segment.
    pub fn segment(&self, msn: u64) -> String {
        format!("{}-{msn}.m4s", self.prefix)
    }

    /// A part.
    pub fn part(&self, msn: u64, index: u32) -> String {
        format!("{}-{msn}.{index}.m4s", self.prefix)
    }

    /// What `name` names, if it is one of these names.
    pub fn parse(&self, name: &str) -> Option<MediaName> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix('-')?;
        if let Some(generation) = rest
            .strip_prefix("init")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return match generation {
                "" => Some(MediaName::Init(0)),
                g if g.bytes().all(|b| b.is_ascii_digit()) && !g.starts_with('0') => {
                    g.parse().ok().map(MediaName::Init)
                }
                _ => None,
            };
        }
        let stem = rest.strip_suffix(".m4s")?;
        // Canonical decimals only (no leading zero): one resource, one name, so that a
        // cache never keeps the same bytes, or a refusal, under two keys.
        let digits = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'))
        };
        match stem.split_once('.') {
            None if digits(stem) => stem.parse().ok().map(MediaName::Segment),
            Some((msn, index)) if digits(msn) && digits(index) => {
                Some(MediaName::Part(msn.parse().ok()?, index.parse().ok()?))
            }
            _ => None,
        }
    }
}

impl MediaNames {
    /// What `name` names when it is a part's name with its last character cut off, as
    /// iOS 16.1.1's player asked for the preload hint (`…-12.3.m4` for `…-12.3.m4s`;
    /// MediaMTX answers that name too). Parts only: nothing else is ever hinted. Kept
    /// apart from [`parse`](Self::parse), whose names are the canonical ones.
    pub fn parse_cut_hint(&self, name: &str) -> Option<MediaName> {
        if !name.ends_with(".m4") {
            return None;
        }
        match self.parse(&format!("{name}s"))? {
            part @ MediaName::Part(..) => Some(part),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn media_names_round_trip_and_refuse_strangers() {
        let names = MediaNames::new("video", at(0));
        assert_eq!(names.parse(&names.init()), Some(MediaName::Init(0)));
        assert_eq!(
            names.parse(&names.init_generation(2)),
            Some(MediaName::Init(2))
        );
        assert_eq!(
            names.parse(&names.init_generation(0)),
            Some(MediaName::Init(0))
        );
        assert_eq!(names.parse("video-18bcfe56800-init02.mp4"), None);
        assert_eq!(
            names.parse(&names.segment(42)),
            Some(MediaName::Segment(42))
        );
        assert_eq!(
            names.parse(&names.part(42, 3)),
            Some(MediaName::Part(42, 3))
        );
        let other_epoch = MediaNames::new("video", at(1));
        assert_eq!(
            names.parse(&other_epoch.part(42, 3)),
            None,
            "another epoch's part"
        );
        for bad in [
            "",
            "video",
            "x-init.mp4",
            &format!("{}x", names.segment(1)),
            &names.segment(1).replace("1.m4s", "-1.m4s"),
            &names.part(1, 2).replace(".2.", ".+2."),
            // Found by the media_name fuzz target: a second name for part 3.68.
            &names.part(3, 68).replace("-3.", "-03."),
            &names.part(3, 6).replace(".6.", ".06."),
            &names.segment(7).replace("-7.", "-007."),
        ] {
            assert_eq!(names.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_hint_cut_short_by_one_character_names_its_part() {
        let names = MediaNames::new("video", at(0));
        let part = names.part(12, 3);
        let cut = |name: &str| name[..name.len() - 1].to_string();
        assert_eq!(names.parse(&cut(&part)), None, "not a canonical name");
        assert_eq!(
            names.parse_cut_hint(&cut(&part)),
            Some(MediaName::Part(12, 3))
        );
        assert_eq!(names.parse_cut_hint(&part), None, "a whole name is not cut");
        assert_eq!(names.parse_cut_hint(&cut(&cut(&part))), None, "two cut");
        assert_eq!(
            names.parse_cut_hint(&cut(&names.segment(12))),
            None,
            "never hinted"
        );
        assert_eq!(
            names.parse_cut_hint(&cut(&names.init())),
            None,
            "never hinted"
        );
    }
}
