//! The timeline through a source's outage (`source.outage = "gap"`, RFC 8216bis 6.2.1).
//! While the source is down, every rendition lists GAP=YES parts, and EXT-X-GAP segments
//! once they fill, for the time that passes, on the part and segment grid media uses:
//! players' blocking reloads go on being answered and the stream stays on one timeline.
//! When the source is back, media resumes at its first keyframe that falls after what
//! the gap listed (where its capture time puts it on that timeline), the gap filled up
//! to it: no discontinuity, and EXT-X-PROGRAM-DATE-TIME still tells capture time. Past
//! `outage_max_ms` listing stops, and the return is a discontinuity as without gaps.
//! After a slate ([`super::slate`]) the same placement, without a gap, puts the
//! source's media where its capture time falls ([`Outage::after_slate`]).
//!
//! Owns the gap's arithmetic only: the outputs list what it says. Never imports the
//! HTTP layer or the configuration.

use std::time::{Duration, Instant, SystemTime};

use super::output::Output;

/// How long a source that is back may deliver keyframes that all fall inside the time
/// the gap already listed (a camera whose clock runs behind Mirror's) before its next
/// keyframe is placed at the gap's end regardless.
const PLACE_REGARDLESS_AFTER: Duration = Duration::from_secs(3);

/// An outage in progress. See the module docs.
#[derive(Debug)]
pub(super) struct Outage {
    /// Media time where the gap begins: the end of the last part made.
    start: Duration,
    /// Capture time of that instant.
    start_wall: SystemTime,
    /// Media time listed up to (gap parts after `start`).
    listed: Duration,
    /// Gap parts in the gap segment in progress, and how long they are.
    open_parts: u32,
    open_len: Duration,
    /// The longest gap listed.
    limit: Duration,
    part_target: Duration,
    segment_target: Duration,
    /// Listing stopped at `limit`.
    over: bool,
    /// The source is open again (Mirror's clock), its media not placed yet.
    back_since: Option<Instant>,
    /// Gap parts are listed; without, the outage only places the source's media when it
    /// is back (after a slate, which filled the time itself).
    fills: bool,
}

impl Outage {
    /// An outage after media that ended at `start` on the media timeline, captured at
    /// `start_wall`.
    pub(super) fn new(
        start: Duration,
        start_wall: SystemTime,
        limit: Duration,
        part_target: Duration,
        segment_target: Duration,
    ) -> Self {
        Self {
            start,
            start_wall,
            listed: start,
            open_parts: 0,
            open_len: Duration::ZERO,
            limit,
            part_target: part_target.max(Duration::from_millis(10)),
            segment_target,
            over: false,
            back_since: None,
            fills: true,
        }
    }

    /// After a slate that ended at `end`, captured at `end_wall`: no gap is listed; the
    /// source's media, back after a discontinuity, is placed where its capture time
    /// falls, from its first keyframe captured after the slate's end (the pictures a
    /// reopened camera buffered meanwhile would otherwise go after the slate, late by
    /// as much, and EXT-X-PROGRAM-DATE-TIME would go back).
    pub(super) fn after_slate(end: Duration, end_wall: SystemTime) -> Self {
        let mut placing = Self::new(
            end,
            end_wall,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        placing.fills = false;
        placing.over = true;
        placing
    }

    /// Whether gap parts are listed for it.
    pub(super) fn fills(&self) -> bool {
        self.fills
    }

    /// Media time the gap has listed up to: where media goes on.
    pub(super) fn listed(&self) -> Duration {
        self.listed
    }

    /// How long the gap listed is.
    pub(super) fn length(&self) -> Duration {
        self.listed - self.start
    }

    /// Listing stopped at the limit: the source's return is a discontinuity.
    pub(super) fn is_over(&self) -> bool {
        self.over
    }

    /// The source is open again; its first keyframe is awaited.
    pub(super) fn source_back(&mut self) {
        self.back_since.get_or_insert_with(Instant::now);
    }

    /// The source failed again before its media was placed.
    pub(super) fn source_lost(&mut self) {
        self.back_since = None;
    }

    /// Whether the source is back and its media not placed yet.
    pub(super) fn is_resuming(&self) -> bool {
        self.back_since.is_some()
    }

    /// Where on the media timeline a keyframe captured at `captured_at` goes, or `None`
    /// when it falls within what the gap already listed (the next one is awaited).
    pub(super) fn place(&self, captured_at: SystemTime) -> Option<Duration> {
        // Captured before the outage began (a camera's buffered pictures): too early.
        let at = captured_at
            .duration_since(self.start_wall)
            .ok()
            .map(|after| self.start + after);
        if let Some(at) = at.filter(|&at| at >= self.listed) {
            return Some(at);
        }
        let waited = self.back_since.map_or(Duration::ZERO, |t| t.elapsed());
        (waited >= PLACE_REGARDLESS_AFTER).then_some(self.listed)
    }

    /// Lists the gap parts that are due at `now`: whole parts, one part target behind
    /// the clock (media captured just before a part's end may still be arriving), up to
    /// the limit. True when any rendition's playlist changed.
    pub(super) fn tick(&mut self, outputs: &mut [Output], now: SystemTime) -> bool {
        if self.over {
            return false;
        }
        let elapsed = now.duration_since(self.start_wall).unwrap_or_default();
        let due = self.start + elapsed.saturating_sub(self.part_target);
        let cap = self.start + self.limit;
        let mut changed = self.list(outputs, due.min(cap), false, now);
        if due >= cap {
            changed |= self.close_segment(outputs, now);
            self.over = true;
            tracing::warn!(
                limit = ?self.limit,
                "the source is still down: no more gap segments; its return is a discontinuity"
            );
        }
        changed
    }

    /// The source's media goes on at `resume_at`: the gap is listed up to it exactly
    /// (its last part may be short, as RFC 8216bis 4.4.4.9 allows gap parts) and its
    /// segment closed.
    pub(super) fn finish(&mut self, outputs: &mut [Output], resume_at: Duration, now: SystemTime) {
        self.list(outputs, resume_at, true, now);
        self.close_segment(outputs, now);
    }

    /// Lists gap parts up to media time `end`: whole parts only, or up to `end` exactly
    /// with `exact`. Durations are whole milliseconds, as playlists write them, so the
    /// listed timeline adds up to the media's.
    fn list(
        &mut self,
        outputs: &mut [Output],
        end: Duration,
        exact: bool,
        now: SystemTime,
    ) -> bool {
        if !self.fills {
            return false;
        }
        let mut changed = false;
        loop {
            let remaining = end.saturating_sub(self.listed);
            let length = if remaining >= self.part_target {
                self.part_target
            } else if exact {
                Duration::from_millis(remaining.as_millis() as u64)
            } else {
                break;
            };
            if length.is_zero() {
                break;
            }
            for output in outputs.iter_mut() {
                output.gap_part(self.open_parts, length, now);
            }
            changed = true;
            self.open_parts += 1;
            self.open_len += length;
            self.listed += length;
            // A gap segment holds as many whole parts as a segment target does.
            if self.open_len + self.part_target > self.segment_target + Duration::from_millis(1) {
                self.close_segment(outputs, now);
            }
        }
        changed
    }

    /// Closes the gap segment in progress, if it has parts.
    fn close_segment(&mut self, outputs: &mut [Output], now: SystemTime) -> bool {
        if self.open_parts == 0 {
            return false;
        }
        let began = self.listed - self.open_len;
        let program_date_time = self.start_wall + (began - self.start);
        for output in outputs.iter_mut() {
            output.gap_segment(self.open_len, program_date_time, now);
        }
        self.open_parts = 0;
        self.open_len = Duration::ZERO;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llhls::live::{LivePlaylist, MediaNames};
    use crate::pipeline::RenditionPlan;
    use crate::stream::{StreamStatus, channel};

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    /// One rendition, 1 s segments of 200 ms parts, two segments of media made.
    fn output() -> Output {
        let live = || {
            LivePlaylist::new(
                MediaNames::new("v", at(0)),
                Duration::from_secs(1),
                Duration::from_millis(200),
                6,
                0,
            )
        };
        let first = live();
        let (_handle, mut publisher) = channel("s", [("v", &first)], StreamStatus::default());
        let mut output = Output::new(
            "v".into(),
            RenditionPlan::Passthrough,
            live(),
            publisher.renditions.remove(0),
        );
        for msn in 0..2u64 {
            for i in 0..5u32 {
                output
                    .live
                    .push_part(msn, i, Duration::from_millis(200), i == 0, at(msn * 1000));
            }
            output
                .live
                .push_segment(msn, Duration::from_secs(1), at(msn * 1000), at(msn * 1000));
        }
        output.next_msn = 2;
        output
    }

    fn outage() -> Outage {
        Outage::new(
            Duration::from_secs(2),
            at(2000),
            Duration::from_secs(3),
            Duration::from_millis(200),
            Duration::from_secs(1),
        )
    }

    /// Gap parts are listed one part target behind the clock, whole; five fill a gap
    /// segment; the end is listed exactly, its last part short; the hint is gone while
    /// the source is down.
    #[test]
    fn an_outage_is_listed_as_gap_parts_and_segments_on_the_media_grid() {
        let mut outputs = [output()];
        let mut gap = outage();
        assert!(!gap.tick(&mut outputs, at(2350)), "no whole part due yet");
        assert!(gap.tick(&mut outputs, at(2450)));
        assert_eq!(gap.listed(), Duration::from_millis(2200));
        assert!(gap.tick(&mut outputs, at(3250)));
        assert_eq!(gap.listed(), Duration::from_secs(3));
        gap.finish(&mut outputs, Duration::from_millis(3130), at(3300));
        assert_eq!(gap.length(), Duration::from_millis(1130));
        assert_eq!(outputs[0].next_msn, 4);
        let text = outputs[0].live.playlist().render();
        assert!(
            text.contains(
                "#EXT-X-PART:DURATION=0.200,URI=\"v-18bcfe56800-2.4.m4s\",GAP=YES\n\
             #EXT-X-GAP\n#EXTINF:1.000,\nv-18bcfe56800-2.m4s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z\n\
             #EXT-X-PART:DURATION=0.130,URI=\"v-18bcfe56800-3.0.m4s\",GAP=YES\n\
             #EXT-X-GAP\n#EXTINF:0.130,\n"
            ),
            "{text}"
        );
        assert!(!text.contains("PRELOAD-HINT"), "{text}");
        assert!(!text.contains("DISCONTINUITY"), "{text}");
    }

    /// Past the limit listing stops, with the open gap segment closed.
    #[test]
    fn listing_stops_at_the_limit() {
        let mut outputs = [output()];
        let mut gap = outage();
        gap.tick(&mut outputs, at(2000 + 3000 + 200 + 500));
        assert!(gap.is_over());
        assert_eq!(gap.length(), Duration::from_secs(3));
        assert!(!gap.tick(&mut outputs, at(9000)));
        let listed =
            crate::llhls::parse::parse_media_playlist(&outputs[0].live.playlist().render())
                .expect("parses");
        assert_eq!(listed.segments.iter().filter(|s| s.gap).count(), 3);
        assert!(listed.trailing_parts.is_empty());
    }

    /// After a slate nothing is listed: the source's media is only placed, from its
    /// first keyframe captured after the slate's end.
    #[test]
    fn after_a_slate_media_is_placed_and_no_gap_is_listed() {
        let mut outputs = [output()];
        let mut placing = Outage::after_slate(Duration::from_secs(2), at(2000));
        placing.source_back();
        assert!(!placing.tick(&mut outputs, at(9000)));
        assert_eq!(
            placing.place(at(1500)),
            None,
            "buffered before the slate's end"
        );
        assert_eq!(placing.place(at(2040)), Some(Duration::from_millis(2040)));
        placing.finish(&mut outputs, Duration::from_millis(2040), at(2100));
        assert_eq!(outputs[0].next_msn, 2);
        assert!(!outputs[0].live.playlist().render().contains("GAP"));
    }

    /// A keyframe captured within what the gap listed waits for the next one, unless
    /// the source has been back for long (its clock behind Mirror's).
    #[test]
    fn media_is_placed_where_its_capture_time_falls_after_the_gap() {
        let mut outputs = [output()];
        let mut gap = outage();
        gap.tick(&mut outputs, at(2650));
        assert_eq!(gap.listed(), Duration::from_millis(2400));
        gap.source_back();
        assert_eq!(gap.place(at(2300)), None);
        assert_eq!(gap.place(at(1900)), None, "captured before the outage");
        assert_eq!(gap.place(at(2480)), Some(Duration::from_millis(2480)));
    }
}
