//! Blocking playlist reload (RFC 8216bis 6.2.5.2) and delta updates (6.2.5.1), as
//! pure functions: the query parser, and "is (msn, part) in the playlist yet?".

use std::time::Duration;

use super::Skip;

/// The playlist delivery directives of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaylistQuery {
    /// `_HLS_msn`: hold until the playlist holds this segment (or a later one).
    pub msn: Option<u64>,
    /// `_HLS_part`: with `_HLS_msn`, hold until it holds this part of that segment.
    pub part: Option<u32>,
    /// `_HLS_skip`: a delta update.
    pub skip: Skip,
}

/// A query the server answers with 400 Bad Request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// 6.2.5.2: "If the Playlist URI contains an _HLS_part directive but no _HLS_msn
    /// directive, the Server MUST return Bad Request".
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    /// A directive whose value is not a decimal integer in range.
    #[error("{0} is not a decimal integer in range")]
    NotANumber(&'static str),
    /// `_HLS_skip` other than `YES` or `v2`.
    #[error("_HLS_skip must be YES or v2")]
    BadSkip,
    /// The same directive twice.
    #[error("{0} given more than once")]
    Repeated(&'static str),
}

fn decimal<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, QueryError> {
    // Digits only: no sign, no spaces, no empty value (FromStr alone accepts "+1").
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::NotANumber(name));
    }
    value.parse().map_err(|_| QueryError::NotANumber(name))
}

/// Parses the query string of a media playlist request. Parameters other than the
/// `_HLS_` directives (a CDN's cache buster, say) are ignored.
pub fn parse_query(query: &str) -> Result<PlaylistQuery, QueryError> {
    let mut q = PlaylistQuery::default();
    let mut seen_skip = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "_HLS_msn" if q.msn.is_some() => return Err(QueryError::Repeated("_HLS_msn")),
            "_HLS_msn" => q.msn = Some(decimal("_HLS_msn", value)?),
            "_HLS_part" if q.part.is_some() => return Err(QueryError::Repeated("_HLS_part")),
            "_HLS_part" => q.part = Some(decimal("_HLS_part", value)?),
            "_HLS_skip" => {
                if std::mem::replace(&mut seen_skip, true) {
                    return Err(QueryError::Repeated("_HLS_skip"));
                }
                q.skip = match value {
                    "YES" => Skip::Yes,
                    "v2" => Skip::V2,
                    _ => return Err(QueryError::BadSkip),
                };
            }
            _ => {}
        }
    }
    if q.part.is_some() && q.msn.is_none() {
        return Err(QueryError::PartWithoutMsn);
    }
    Ok(q)
}

/// Where the live edge of a playlist is: enough to decide any blocking request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// MSN of the oldest segment in the playlist.
    pub first_msn: u64,
    /// Part counts of the complete segments, oldest first (`first_msn` onward).
    pub complete_part_counts: Vec<u32>,
    /// MSN of the segment in progress (one past the last complete one).
    pub open_msn: u64,
    /// Parts of the segment in progress listed so far.
    pub open_parts: u32,
    /// Parts a segment usually has (segment target / PART-TARGET), to count how far
    /// ahead a request is.
    pub parts_per_segment: u32,
    /// The playlist has EXT-X-ENDLIST: directives are ignored.
    pub ended: bool,
}

/// What to do with a blocking request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist holds what was asked for: answer now.
    Ready,
    /// Not yet: hold the request until a newer playlist.
    Wait,
    /// 6.2.5.2: too far ahead, answer 400 at once.
    TooFarAhead,
}

/// 6.2.5.2: "the Advance Part Limit is three divided by the Part Target Duration if the
/// Part Target Duration is less than one second, or three otherwise".
pub fn advance_part_limit(part_target: Duration) -> u32 {
    let secs = part_target.as_secs_f64();
    if secs > 0.0 && secs < 1.0 {
        (3.0 / secs).floor() as u32
    } else {
        3
    }
}

impl Position {
    /// Whether the playlist ends where a segment ends: the last segment is complete and
    /// only the preload hint of the next one's first part follows it. This state lasts
    /// one part; a player that asks for it again (video.js's VHS does, see
    /// [`CacheRule::BlockingPlaylistAtBoundary`](super::delivery::CacheRule)) must not be
    /// answered from a cache's copy of it.
    pub fn ends_at_segment_boundary(&self) -> bool {
        !self.ended && self.open_parts == 0 && !self.complete_part_counts.is_empty()
    }

    /// Part count of complete segment `msn`, if it is in the playlist.
    fn parts_of(&self, msn: u64) -> Option<u32> {
        let i = usize::try_from(msn.checked_sub(self.first_msn)?).ok()?;
        self.complete_part_counts.get(i).copied()
    }

    /// The MSN of the last media segment the playlist lists: the one in progress once it
    /// has a part, else the last complete one.
    fn last_listed_msn(&self) -> u64 {
        if self.open_parts > 0 {
            self.open_msn
        } else {
            self.open_msn.saturating_sub(1)
        }
    }

    /// Whether the request (`msn`, `part`) can be answered now.
    pub fn readiness(&self, msn: u64, part: Option<u32>, advance_part_limit: u32) -> Readiness {
        if self.ended {
            return Readiness::Ready; // 6.2.5.2: directives ignored after ENDLIST.
        }
        // 6.2.5.2: "If the _HLS_msn is greater than the Media Sequence Number of the last
        // Media Segment in the current Playlist plus two ... Bad Request".
        if msn > self.last_listed_msn() + 2 {
            return Readiness::TooFarAhead;
        }
        let Some(mut part) = part else {
            // A segment is in the playlist once it is complete.
            return if msn < self.open_msn {
                Readiness::Ready
            } else {
                Readiness::Wait
            };
        };
        let mut msn = msn;
        // 6.2.5.2: a part index past the last part of a segment means part 0 of the next.
        while msn < self.open_msn {
            match self.parts_of(msn) {
                None if msn < self.first_msn => return Readiness::Ready,
                None => return Readiness::Ready,
                Some(count) if part < count => return Readiness::Ready,
                Some(_) => {
                    msn += 1;
                    part = 0;
                }
            }
        }
        if msn == self.open_msn && part < self.open_parts {
            return Readiness::Ready;
        }
        // How many parts beyond the last listed one the request is.
        let last_part = i64::from(self.open_parts) - 1;
        let ahead = i64::try_from(msn - self.open_msn).unwrap_or(i64::MAX)
            * i64::from(self.parts_per_segment.max(1))
            + i64::from(part)
            - last_part;
        if ahead > i64::from(advance_part_limit) {
            return Readiness::TooFarAhead;
        }
        Readiness::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Position {
        // Segments 10..=12 complete with 5 parts each; segment 13 has 2 parts so far.
        Position {
            first_msn: 10,
            complete_part_counts: vec![5, 5, 5],
            open_msn: 13,
            open_parts: 2,
            parts_per_segment: 5,
            ended: false,
        }
    }

    #[test]
    fn query_directives_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_query(""), Ok(PlaylistQuery::default()));
        assert_eq!(
            parse_query("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&cdn=x"),
            Ok(PlaylistQuery {
                msn: Some(12),
                part: Some(3),
                skip: Skip::Yes
            })
        );
        assert_eq!(parse_query("_HLS_skip=v2").map(|q| q.skip), Ok(Skip::V2));
        assert_eq!(parse_query("_HLS_part=1"), Err(QueryError::PartWithoutMsn));
        assert_eq!(
            parse_query("_HLS_msn=-1"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=+1"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn="),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=99999999999999999999"),
            Err(QueryError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_query("_HLS_msn=1&_HLS_part=4294967296"),
            Err(QueryError::NotANumber("_HLS_part"))
        );
        assert_eq!(
            parse_query("_HLS_msn=1&_HLS_msn=2"),
            Err(QueryError::Repeated("_HLS_msn"))
        );
        assert_eq!(parse_query("_HLS_skip=yes"), Err(QueryError::BadSkip));
    }

    proptest::proptest! {
        /// Any query string at all: parsed or refused, never a panic; and whatever is
        /// accepted satisfies the rules (no part without an MSN).
        #[test]
        fn any_query_is_parsed_or_refused_never_a_panic(query in ".{0,80}") {
            if let Ok(q) = parse_query(&query) {
                proptest::prop_assert!(q.part.is_none() || q.msn.is_some());
            }
        }

        /// Directive-shaped queries with arbitrary values: a malformed `_HLS_msn` or
        /// `_HLS_part` is always an error, a well-formed one always parses to its value.
        #[test]
        fn directive_values_are_decimal_or_refused(
            msn in "[0-9+\\- a-zA-Z%]{0,24}",
            part in proptest::option::of("[0-9+\\- ]{0,12}"),
        ) {
            let query = match &part {
                Some(p) => format!("_HLS_msn={msn}&_HLS_part={p}"),
                None => format!("_HLS_msn={msn}"),
            };
            let valid_msn = !msn.is_empty() && msn.bytes().all(|b| b.is_ascii_digit()) && msn.parse::<u64>().is_ok();
            let valid_part = part.as_ref().is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok());
            match parse_query(&query) {
                Ok(q) => {
                    proptest::prop_assert!(valid_msn && valid_part, "{query} accepted");
                    proptest::prop_assert_eq!(q.msn, msn.parse().ok());
                }
                Err(_) => proptest::prop_assert!(!(valid_msn && valid_part), "{query} refused"),
            }
        }
    }

    #[test]
    fn advance_part_limit_follows_the_part_target() {
        assert_eq!(advance_part_limit(Duration::from_millis(200)), 15);
        assert_eq!(advance_part_limit(Duration::from_millis(500)), 6);
        assert_eq!(advance_part_limit(Duration::from_secs(1)), 3);
        assert_eq!(advance_part_limit(Duration::from_secs(2)), 3);
    }

    #[test]
    fn blocking_rules_of_rfc8216bis_6_2_5_2() {
        let p = edge();
        let limit = 15;
        assert_eq!(p.readiness(12, None, limit), Readiness::Ready);
        assert_eq!(
            p.readiness(13, None, limit),
            Readiness::Wait,
            "13 is still in progress"
        );
        assert_eq!(p.readiness(13, Some(1), limit), Readiness::Ready);
        assert_eq!(
            p.readiness(13, Some(2), limit),
            Readiness::Wait,
            "the hinted part"
        );
        assert_eq!(
            p.readiness(9, Some(0), limit),
            Readiness::Ready,
            "older than the window"
        );
        // A part index past a segment's last part is part 0 of the next segment.
        assert_eq!(
            p.readiness(12, Some(5), limit),
            Readiness::Ready,
            "= 13.0, listed"
        );
        assert_eq!(
            p.readiness(12, Some(9), limit),
            Readiness::Ready,
            "still rolls to 13.0"
        );
        // Too far ahead: MSN beyond the last listed + 2, or parts beyond the limit.
        assert_eq!(p.readiness(15, None, limit), Readiness::Wait);
        assert_eq!(p.readiness(16, None, limit), Readiness::TooFarAhead);
        assert_eq!(
            p.readiness(13, Some(16), limit),
            Readiness::Wait,
            "15 ahead of 13.1"
        );
        assert_eq!(p.readiness(13, Some(17), limit), Readiness::TooFarAhead);
        assert_eq!(
            p.readiness(15, Some(6), limit),
            Readiness::Wait,
            "15 parts ahead"
        );
        assert_eq!(
            p.readiness(15, Some(7), limit),
            Readiness::TooFarAhead,
            "16 parts ahead"
        );
        let ended = Position {
            ended: true,
            ..edge()
        };
        assert_eq!(ended.readiness(1000, Some(1000), limit), Readiness::Ready);
    }
}
