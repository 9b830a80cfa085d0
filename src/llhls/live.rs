//! The live media playlist of one rendition: the window of complete segments, the
//! parts of the segment in progress and the preload hint, updated from segmenter
//! events and rendered once per update.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::blocking::Position;
pub use super::names::{MediaName, MediaNames};
use super::{LiveEdge, MediaPlaylist, PlaylistPart, PlaylistSegment};

/// The live playlist of one rendition. See the module docs.
#[derive(Debug, Clone)]
pub struct LivePlaylist {
    playlist: MediaPlaylist,
    names: MediaNames,
    window_segments: usize,
    open_msn: u64,
    parts_per_segment: u32,
    updated_at: SystemTime,
}

impl LivePlaylist {
    /// An empty live playlist. It keeps `window_segments` complete segments (RFC 8216bis
    /// 6.2.2 wants the playlist to span at least three target durations; Apple's spec,
    /// six segments; and delta updates need more than CAN-SKIP-UNTIL to skip anything).
    pub fn new(
        names: MediaNames,
        segment_target: Duration,
        part_target: Duration,
        window_segments: usize,
        first_msn: u64,
    ) -> Self {
        let parts_per_segment =
            (segment_target.as_secs_f64() / part_target.as_secs_f64().max(1e-3)).round() as u32;
        Self {
            playlist: MediaPlaylist {
                segment_target,
                part_target,
                map_uri: names.init(),
                later_maps: Vec::new(),
                segments: VecDeque::with_capacity(window_segments.min(1024) + 1),
                discontinuity_sequence: 0,
                ended: false,
                live: Some(LiveEdge {
                    trailing_parts: Vec::with_capacity(parts_per_segment as usize + 1),
                    preload_hint: Some(names.part(first_msn, 0)),
                    open_discontinuity: false,
                    open_map: 0,
                    rendition_reports: Vec::new(),
                }),
            },
            names,
            window_segments: window_segments.max(6),
            open_msn: first_msn,
            parts_per_segment: parts_per_segment.max(1),
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// The media names this playlist uses.
    pub fn names(&self) -> &MediaNames {
        &self.names
    }

    /// The playlist model, for rendering.
    pub fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }

    /// When the playlist last changed (Last-Modified).
    pub fn updated_at(&self) -> SystemTime {
        self.updated_at
    }

    /// Whether it lists any media yet.
    pub fn has_media(&self) -> bool {
        !self.playlist.segments.is_empty() || !self.edge().trailing_parts.is_empty()
    }

    fn edge(&self) -> &LiveEdge {
        // Constructed with `live: Some`, never set to None.
        static EMPTY: LiveEdge = LiveEdge {
            trailing_parts: Vec::new(),
            preload_hint: None,
            open_discontinuity: false,
            open_map: 0,
            rendition_reports: Vec::new(),
        };
        self.playlist.live.as_ref().unwrap_or(&EMPTY)
    }

    fn edge_mut(&mut self) -> &mut LiveEdge {
        self.playlist.live.get_or_insert_with(|| LiveEdge {
            trailing_parts: Vec::new(),
            preload_hint: None,
            open_discontinuity: false,
            open_map: 0,
            rendition_reports: Vec::new(),
        })
    }

    /// From the next segment on, media needs init segment `uri` (the source came back
    /// with other codec parameters). Returns its generation.
    pub fn change_map(&mut self, uri: String) -> u32 {
        self.playlist.later_maps.push(uri);
        let generation = u32::try_from(self.playlist.later_maps.len()).unwrap_or(u32::MAX);
        self.edge_mut().open_map = generation;
        generation
    }

    /// The source broke off and resumed: the next segment, which starts at `next_msn`,
    /// gets EXT-X-DISCONTINUITY unless the timeline went on through the outage (gap
    /// segments listed its time, and the media did not change). Parts of a segment that
    /// was still open are dropped from the live edge (the segmenter closed it; it is
    /// listed as a segment when it has parts).
    pub fn resume(&mut self, next_msn: u64, discontinuity: bool, now: SystemTime) {
        let hint = self.names.part(next_msn, 0);
        let edge = self.edge_mut();
        edge.open_discontinuity |= discontinuity;
        edge.preload_hint = Some(hint);
        self.open_msn = next_msn;
        self.updated_at = now;
    }

    /// A part of the segment in progress went by with no media (the source is down):
    /// GAP=YES, and no preload hint while nobody knows when media comes back.
    pub fn push_gap_part(&mut self, msn: u64, index: u32, duration: Duration, now: SystemTime) {
        self.open_msn = msn;
        let uri = self.names.part(msn, index);
        let edge = self.edge_mut();
        edge.trailing_parts.push(PlaylistPart {
            uri,
            duration,
            independent: false,
            gap: true,
        });
        edge.preload_hint = None;
        self.updated_at = now;
    }

    /// Replaces the other renditions' reports.
    pub fn set_rendition_reports(&mut self, reports: Vec<super::RenditionReport>) {
        self.edge_mut().rendition_reports = reports;
    }

    /// The last part listed, as another rendition's EXT-X-RENDITION-REPORT gives it:
    /// `(LAST-MSN, LAST-PART)`; `None` before any part.
    pub fn last_part(&self) -> Option<(u64, Option<u32>)> {
        let edge = self.edge();
        if let Some(open) = edge.trailing_parts.len().checked_sub(1) {
            return Some((self.open_msn, u32::try_from(open).ok()));
        }
        let last = self.playlist.segments.back()?;
        Some((
            last.msn,
            last.parts
                .len()
                .checked_sub(1)
                .and_then(|i| u32::try_from(i).ok()),
        ))
    }

    /// A part of the segment in progress is complete.
    pub fn push_part(
        &mut self,
        msn: u64,
        index: u32,
        duration: Duration,
        independent: bool,
        now: SystemTime,
    ) {
        self.open_msn = msn;
        let uri = self.names.part(msn, index);
        let hint = self.names.part(msn, index + 1);
        let edge = self.edge_mut();
        edge.trailing_parts.push(PlaylistPart {
            uri,
            duration,
            independent,
            gap: false,
        });
        edge.preload_hint = Some(hint);
        self.updated_at = now;
    }

    /// The segment in progress is complete: it joins the window with its parts; one
    /// whose parts are all gaps is an EXT-X-GAP segment, and no hint follows it.
    pub fn push_segment(
        &mut self,
        msn: u64,
        duration: Duration,
        program_date_time: SystemTime,
        now: SystemTime,
    ) {
        let next_hint = self.names.part(msn + 1, 0);
        let edge = self.edge_mut();
        let parts = std::mem::take(&mut edge.trailing_parts);
        let discontinuity = std::mem::take(&mut edge.open_discontinuity);
        let map = edge.open_map;
        let gap = !parts.is_empty() && parts.iter().all(|p| p.gap);
        edge.preload_hint = (!gap).then_some(next_hint);
        // Apple's authoring rules: EXT-X-TARGETDURATION never changes in a playlist's
        // life. A segment longer than the target raises it for good, not only while that
        // segment is in the window (RFC 8216bis alone would let it fall back).
        let rounded = Duration::from_secs(duration.as_secs_f64().round() as u64);
        self.playlist.segment_target = self.playlist.segment_target.max(rounded);
        let uri = self.names.segment(msn);
        self.playlist.segments.push_back(PlaylistSegment {
            msn,
            uri,
            duration,
            program_date_time,
            discontinuity,
            map,
            parts,
            gap,
        });
        while self.playlist.segments.len() > self.window_segments {
            if let Some(gone) = self.playlist.segments.pop_front()
                && gone.discontinuity
            {
                self.playlist.discontinuity_sequence += 1;
            }
        }
        self.open_msn = msn + 1;
        self.updated_at = now;
    }

    /// No preload hint until media is made again: the source is down, and a player
    /// that fetched the hint would wait for a part that may never come.
    pub fn withdraw_hint(&mut self, now: SystemTime) {
        self.edge_mut().preload_hint = None;
        self.updated_at = now;
    }

    /// The stream ended: EXT-X-ENDLIST, no hint.
    pub fn end(&mut self, now: SystemTime) {
        self.playlist.ended = true;
        self.edge_mut().preload_hint = None;
        self.updated_at = now;
    }

    /// Where the live edge is, for blocking requests.
    pub fn position(&self) -> Position {
        Position {
            first_msn: self
                .playlist
                .segments
                .front()
                .map_or(self.open_msn, |s| s.msn),
            complete_part_counts: self
                .playlist
                .segments
                .iter()
                .map(|s| u32::try_from(s.parts.len()).unwrap_or(u32::MAX))
                .collect(),
            open_msn: self.open_msn,
            open_parts: u32::try_from(self.edge().trailing_parts.len()).unwrap_or(u32::MAX),
            parts_per_segment: self.parts_per_segment,
            ended: self.playlist.ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llhls::Skip;
    use std::time::UNIX_EPOCH;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    /// A live playlist of rendition `video`, 1 s segments, parts of `part_ms`, a window
    /// of `window` segments, from MSN 0.
    fn live_playlist(part_ms: u64, window: usize) -> LivePlaylist {
        LivePlaylist::new(
            MediaNames::new("video", at(0)),
            Duration::from_secs(1),
            Duration::from_millis(part_ms),
            window,
            0,
        )
    }

    /// A live playlist at a known state, rendered whole: every LL-HLS tag in place.
    #[test]
    fn live_playlist_renders_exactly() {
        let mut live = live_playlist(500, 6);
        for msn in 0..7u64 {
            for i in 0..2u32 {
                live.push_part(msn, i, Duration::from_millis(500), i == 0, at(msn * 1000));
            }
            live.push_segment(
                msn,
                Duration::from_secs(1),
                at(msn * 1000),
                at(msn * 1000 + 1000),
            );
        }
        live.push_part(7, 0, Duration::from_millis(500), true, at(7500));
        let text = live.playlist().render();
        let golden = "\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=1.500,HOLD-BACK=3.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"video-18bcfe56800-init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:21.000Z
#EXTINF:1.000,
video-18bcfe56800-1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXTINF:1.000,
video-18bcfe56800-2.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:23.000Z
#EXTINF:1.000,
video-18bcfe56800-3.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-4.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-4.1.m4s\"
#EXTINF:1.000,
video-18bcfe56800-4.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:25.000Z
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-5.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-5.1.m4s\"
#EXTINF:1.000,
video-18bcfe56800-5.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-6.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-6.1.m4s\"
#EXTINF:1.000,
video-18bcfe56800-6.m4s
#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-7.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video-18bcfe56800-7.1.m4s\"
";
        assert_eq!(text, golden);
        let position = live.position();
        assert_eq!(
            (position.first_msn, position.open_msn, position.open_parts),
            (1, 7, 1)
        );
        assert_eq!(position.complete_part_counts, vec![2; 6]);
    }

    /// A break in the source: the open parts' segment gets EXT-X-DISCONTINUITY before
    /// its first part, keeps it as a complete segment, and once it leaves the window the
    /// discontinuity sequence counts it.
    #[test]
    fn discontinuity_is_tagged_then_counted_when_it_leaves_the_window() {
        let mut live = live_playlist(500, 6);
        live.push_part(0, 0, Duration::from_millis(500), true, at(0));
        live.push_segment(0, Duration::from_millis(500), at(0), at(500));
        live.resume(1, true, at(5000));
        let resumed = live.playlist().render();
        assert!(
            resumed.ends_with(
                "#EXTINF:0.500,\nvideo-18bcfe56800-0.m4s\n#EXT-X-DISCONTINUITY\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video-18bcfe56800-1.0.m4s\"\n"
            ),
            "the hinted part is after the break, and says so: {resumed}"
        );
        live.push_part(1, 0, Duration::from_millis(500), true, at(5500));
        let open = live.playlist().render();
        assert!(open.contains(
            "#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.500,URI=\"video-18bcfe56800-1.0.m4s\""
        ));
        assert!(
            open.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video-18bcfe56800-1.1.m4s\"\n")
        );
        assert_eq!(live.last_part(), Some((1, Some(0))));
        live.push_segment(1, Duration::from_millis(500), at(5000), at(5500));
        let closed = live.playlist().render();
        assert!(
            closed.contains(
                "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:25.000Z\n"
            )
        );
        assert_eq!(closed.matches("DISCONTINUITY").count(), 1);
        assert_eq!(live.last_part(), Some((1, Some(0))));
        for msn in 2..8u64 {
            live.push_segment(msn, Duration::from_secs(1), at(msn * 1000), at(msn * 1000));
        }
        let later = live.playlist().render();
        assert!(later.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!later.contains("#EXT-X-DISCONTINUITY\n"));
    }

    /// A source back with other codec parameters: EXT-X-MAP of the new init segment
    /// after the discontinuity, and at the top once the old segments have left.
    #[test]
    fn a_changed_init_segment_is_mapped_from_the_next_segment_on() {
        let mut live = live_playlist(500, 6);
        live.push_part(0, 0, Duration::from_millis(500), true, at(0));
        live.push_segment(0, Duration::from_millis(500), at(0), at(500));
        live.resume(1, true, at(5000));
        assert_eq!(live.change_map(live.names().init_generation(1)), 1);
        // The hint of the first part after the break comes after the break's tags.
        let hinted = live.playlist().render();
        assert!(
            hinted.ends_with(
                "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"video-18bcfe56800-init1.mp4\"\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video-18bcfe56800-1.0.m4s\"\n"
            ),
            "{hinted}"
        );
        live.push_part(1, 0, Duration::from_millis(500), true, at(5500));
        let open = live.playlist().render();
        assert!(
            open.contains(
                "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"video-18bcfe56800-init1.mp4\"\n#EXT-X-PART:"
            ),
            "{open}"
        );
        live.push_segment(1, Duration::from_millis(500), at(5000), at(5500));
        let closed = live.playlist().render();
        assert!(closed.starts_with("#EXTM3U"));
        let maps: Vec<&str> = closed
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MAP:"))
            .collect();
        assert_eq!(
            maps,
            [
                "#EXT-X-MAP:URI=\"video-18bcfe56800-init.mp4\"",
                "#EXT-X-MAP:URI=\"video-18bcfe56800-init1.mp4\""
            ]
        );
        for msn in 2..8u64 {
            live.push_segment(msn, Duration::from_secs(1), at(msn * 1000), at(msn * 1000));
        }
        let later = live.playlist().render();
        let maps: Vec<&str> = later
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MAP:"))
            .collect();
        assert_eq!(maps, ["#EXT-X-MAP:URI=\"video-18bcfe56800-init1.mp4\""]);
    }

    #[test]
    fn delta_update_skips_segments_older_than_can_skip_until() {
        let mut live = live_playlist(200, 12);
        for msn in 0..12u64 {
            live.push_segment(msn, Duration::from_secs(1), at(msn * 1000), at(msn * 1000));
        }
        let playlist = live.playlist();
        assert_eq!(
            playlist.skippable_segments(),
            6,
            "12 s window, CAN-SKIP-UNTIL 6 s"
        );
        let delta = playlist.render_with(Skip::Yes);
        assert!(delta.contains("#EXT-X-VERSION:9\n"));
        assert!(
            delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"),
            "the sequence does not move"
        );
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=6\n"));
        assert!(!delta.contains("-5.m4s"));
        assert!(delta.contains("-6.m4s"));
        let v2 = playlist.render_with(Skip::V2);
        assert!(v2.contains("#EXT-X-VERSION:10\n"));
        assert!(v2.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=6,RECENTLY-REMOVED-DATERANGES=\"\"\n"));
    }

    #[test]
    fn ended_stream_has_endlist_and_no_hint() {
        let mut live = live_playlist(200, 6);
        live.push_part(0, 0, Duration::from_millis(200), true, at(0));
        live.end(at(1));
        let text = live.playlist().render();
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!text.contains("PRELOAD-HINT"));
        assert!(live.position().ended);
    }

    #[test]
    fn target_duration_never_falls_back_once_a_long_segment_left() {
        let mut live = live_playlist(200, 3);
        let target = |live: &LivePlaylist| live.playlist().target_duration_secs();
        live.push_segment(0, Duration::from_secs(1), at(0), at(0));
        assert_eq!(target(&live), 1);
        // A GOP the source stretched to 2.6 s: the target becomes 3 (2.6 rounded).
        live.push_segment(1, Duration::from_millis(2600), at(1000), at(3600));
        assert_eq!(target(&live), 3);
        for msn in 2..8u64 {
            let start = 3600 + (msn - 2) * 1000;
            live.push_segment(msn, Duration::from_secs(1), at(start), at(start));
        }
        assert!(
            !live.playlist().render().contains("-1.m4s"),
            "the long segment has left the window"
        );
        assert_eq!(target(&live), 3, "and the target stays");
        assert!(
            live.playlist()
                .render()
                .contains("#EXT-X-TARGETDURATION:3\n")
        );
    }

    #[test]
    fn a_playlist_ending_with_a_complete_segment_ends_at_a_boundary() {
        let mut live = live_playlist(500, 6);
        assert!(!live.position().ends_at_segment_boundary(), "nothing yet");
        live.push_part(0, 0, Duration::from_millis(500), true, at(500));
        assert!(!live.position().ends_at_segment_boundary());
        live.push_part(0, 1, Duration::from_millis(500), false, at(1000));
        live.push_segment(0, Duration::from_secs(1), at(0), at(1000));
        assert!(live.position().ends_at_segment_boundary());
        live.push_part(1, 0, Duration::from_millis(500), true, at(1500));
        assert!(!live.position().ends_at_segment_boundary());
        live.push_part(1, 1, Duration::from_millis(500), false, at(2000));
        live.push_segment(1, Duration::from_secs(1), at(1000), at(2000));
        live.end(at(2000));
        assert!(!live.position().ends_at_segment_boundary(), "ended");
    }
}
