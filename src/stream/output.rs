//! One rendition's side of the media thread: its segmenter, its live playlist, its init
//! segments, and where its parts and segments go (a [`MediaSink`]), published as a new
//! snapshot whenever they change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::bandwidth::SegmentRates;
use super::publisher::RenditionPublisher;
use super::sink::{MediaSink, SinkError};
use crate::cmaf::init::write_init_segment;
use crate::cmaf::{Segmenter, SegmenterConfig, SegmenterEvent, TrackInfo};
use crate::llhls::live::{LivePlaylist, MediaNames};
use crate::pipeline::{RenditionPlan, RenditionProfile};
use crate::store::StoredMedia;

/// What a connect readies a rendition with: its tracks, how to cut them, and the
/// profile its names hash.
pub(super) struct Prepared {
    pub(super) tracks: Vec<TrackInfo>,
    pub(super) config: SegmenterConfig,
    pub(super) profile: RenditionProfile,
}

/// One rendition of a running stream.
pub(super) struct Output {
    pub(super) id: String,
    pub(super) plan: RenditionPlan,
    /// `None` before the source first opens and while it is down.
    pub(super) segmenter: Option<Segmenter>,
    /// The MSN the next segment gets.
    pub(super) next_msn: u64,
    pub(super) live: LivePlaylist,
    /// Init segments by generation; empty before the source first opens. They live as
    /// long as the stream, not in the store, whose time to live would drop them while
    /// parts still need them.
    pub(super) inits: Arc<[StoredMedia]>,
    /// The tracks the latest init segment describes.
    init_tracks: Vec<TrackInfo>,
    /// Its recent segments' sizes, for the multivariant playlist's bit rates.
    pub(super) rates: SegmentRates,
    /// Where its last part ended: on the media timeline, and by capture time.
    pub(super) media_end: Option<(Duration, SystemTime)>,
    /// How to cut media once it resumes after a gap (the segmenter starts then, with
    /// the MSN after the gap's segments).
    resuming: Option<SegmenterConfig>,
    publisher: RenditionPublisher,
}

impl Output {
    /// A rendition not yet readied: `live` is its placeholder playlist.
    pub(super) fn new(
        id: String,
        plan: RenditionPlan,
        live: LivePlaylist,
        publisher: RenditionPublisher,
    ) -> Self {
        Self {
            id,
            plan,
            segmenter: None,
            next_msn: 0,
            live,
            inits: Arc::from([]),
            init_tracks: Vec::new(),
            rates: SegmentRates::default(),
            media_end: None,
            resuming: None,
            publisher,
        }
    }

    /// The tracks of its latest init segment (none before the source opens).
    pub(super) fn tracks(&self) -> &[TrackInfo] {
        &self.init_tracks
    }

    /// What went into it.
    pub(super) fn counters(&self) -> &super::status::RenditionCounters {
        self.publisher.counters()
    }

    /// Publishes the playlist as it is now.
    pub(super) fn publish(&mut self) {
        self.publisher.publish(&self.live, self.inits.clone());
    }

    /// Whether `tracks` decode as the ones its playlist's latest init segment
    /// describes, so media can go on after a gap without a discontinuity.
    pub(super) fn decodes_alike(&self, tracks: &[TrackInfo]) -> bool {
        same_media(&self.init_tracks, tracks)
    }

    /// Readies this rendition for a newly opened source: at the first connect its names
    /// (with the profile's hash), playlist and init segment; after a failure an
    /// EXT-X-DISCONTINUITY, and a new init segment when the codec parameters changed.
    /// Then a new segmenter that goes on with the next MSN; `after_gap` (the outage was
    /// listed as a gap, the media is alike) defers it to [`Output::resume_after_gap`],
    /// with no discontinuity.
    pub(super) fn ready(
        &mut self,
        prepared: Prepared,
        epoch: SystemTime,
        window: usize,
        now: SystemTime,
        stream: &str,
        after_gap: bool,
    ) -> Result<(), crate::cmaf::init::InitError> {
        let Prepared {
            tracks,
            config,
            profile,
        } = prepared;
        if self.inits.is_empty() {
            let names = MediaNames::new(&format!("{}-{}", self.id, profile.name_hash()), epoch);
            self.live = LivePlaylist::new(
                names,
                config.segment_target,
                Segmenter::new(config.clone(), 0).part_target(),
                window,
                0,
            );
            self.inits = Arc::from([StoredMedia {
                chunks: vec![Bytes::from(write_init_segment(&tracks)?)].into(),
                modified: now,
            }]);
            self.init_tracks = tracks;
        } else if after_gap {
            self.resuming = Some(config);
            self.segmenter = None;
            return Ok(());
        } else {
            self.live.resume(self.next_msn, true, now);
            if !same_media(&self.init_tracks, &tracks) {
                // Back with other codec parameters (a camera reconfigured): a new init
                // segment, named by its generation, and EXT-X-MAP from the next
                // segment on.
                let generation = u32::try_from(self.inits.len()).unwrap_or(u32::MAX);
                let mut inits = self.inits.to_vec();
                inits.push(StoredMedia {
                    chunks: vec![Bytes::from(write_init_segment(&tracks)?)].into(),
                    modified: now,
                });
                self.inits = inits.into();
                let map = self.live.names().init_generation(generation);
                self.live.change_map(map);
                tracing::info!(stream = %stream, rendition = %self.id, generation, codecs = %crate::cmaf::codecs(&tracks), "codec parameters changed: new init segment");
                self.init_tracks = tracks;
            }
            tracing::info!(stream = %stream, rendition = %self.id, msn = self.next_msn, "source back: discontinuity");
        }
        self.segmenter = Some(Segmenter::new(config, self.next_msn));
        // Where media ended is a new session's to say: an outage before its first part
        // is not listed as a gap.
        self.media_end = None;
        self.publish();
        Ok(())
    }

    /// Media goes on after a gap: a segmenter from the MSN after the gap's segments,
    /// and the preload hint back.
    pub(super) fn resume_after_gap(&mut self, now: SystemTime) {
        if let Some(config) = self.resuming.take() {
            self.live.resume(self.next_msn, false, now);
            self.segmenter = Some(Segmenter::new(config, self.next_msn));
            self.publish();
        }
    }

    /// A part of the outage's time, without media (GAP=YES).
    pub(super) fn gap_part(&mut self, index: u32, duration: Duration, now: SystemTime) {
        self.live.push_gap_part(self.next_msn, index, duration, now);
    }

    /// The gap segment in progress is complete (EXT-X-GAP).
    pub(super) fn gap_segment(
        &mut self,
        duration: Duration,
        program_date_time: SystemTime,
        now: SystemTime,
    ) {
        self.live
            .push_segment(self.next_msn, duration, program_date_time, now);
        self.next_msn += 1;
    }

    /// Takes the segmenter's events into the sink and the playlist; true when the
    /// playlist changed.
    pub(super) fn drain_events(&mut self, sink: &mut dyn MediaSink) -> Result<bool, SinkError> {
        let Some(mut segmenter) = self.segmenter.take() else {
            return Ok(false);
        };
        let changed = self.drain(&mut segmenter, sink);
        self.next_msn = segmenter.next_msn();
        self.segmenter = Some(segmenter);
        changed
    }

    /// The source stopped: closes the open part and segment (so the playlist lists what
    /// was made) and publishes; the segmenter is gone until the next connect. The
    /// playlist hints no next part: what comes next is a gap, a slate or the source
    /// after a discontinuity, none of which a player preloading the hint could tell
    /// from more of the same (a gap part is a 404; Shaka appended a slate's pictures to
    /// the camera's decoder configuration).
    ///
    /// With `publish` false the closed playlist is not published: what follows (a
    /// slate, or the source after one) publishes it with its break listed. A player
    /// given a playlist that ends on a segment's URI takes that segment for the one in
    /// progress (hls.js 1.7.4's parser does), and when the next one comes after a new
    /// EXT-X-MAP it keeps the old init segment for it, and fails to decode.
    pub(super) fn close(
        &mut self,
        stream: &str,
        sink: &mut dyn MediaSink,
        publish: bool,
        now: SystemTime,
    ) -> Result<(), SinkError> {
        let Some(mut segmenter) = self.segmenter.take() else {
            return Ok(());
        };
        if let Err(error) = segmenter.finish(now) {
            tracing::warn!(stream = %stream, %error, "the open part is lost");
        }
        let drained = self.drain(&mut segmenter, sink);
        self.next_msn = segmenter.next_msn();
        self.live.withdraw_hint(now);
        if publish {
            self.publish();
        }
        drained.map(|_| ())
    }

    fn drain(
        &mut self,
        segmenter: &mut Segmenter,
        sink: &mut dyn MediaSink,
    ) -> Result<bool, SinkError> {
        let mut changed = false;
        while let Some(event) = segmenter.poll_event() {
            changed = true;
            match event {
                SegmenterEvent::Part(part) => {
                    if let Some(lead) = part.tracks.first()
                        && let Some(track) =
                            segmenter.tracks().find(|t| t.track_id == lead.track_id)
                    {
                        let end = track
                            .timescale
                            .to_duration(lead.base_decode_ticks + lead.duration_ticks);
                        self.media_end = Some((end, part.captured_at + part.duration));
                    }
                    let name = self.live.names().part(part.msn, part.index);
                    sink.put(&name, vec![part.bytes], part.completed_at)?;
                    self.live.push_part(
                        part.msn,
                        part.index,
                        part.duration,
                        part.independent,
                        part.completed_at,
                    );
                }
                SegmenterEvent::Segment(segment) => {
                    let name = self.live.names().segment(segment.msn);
                    let completed = segment
                        .parts
                        .last()
                        .map_or_else(SystemTime::now, |p| p.completed_at);
                    self.rates.push(segment.byte_len(), segment.duration);
                    let chunks = segment.parts.iter().map(|p| p.bytes.clone()).collect();
                    sink.put(&name, chunks, completed)?;
                    self.live.push_segment(
                        segment.msn,
                        segment.duration,
                        segment.captured_at,
                        completed,
                    );
                }
            }
        }
        Ok(changed)
    }
}

/// Whether two track lists decode alike (same codecs, configurations and timescales;
/// bit rates may differ).
fn same_media(a: &[TrackInfo], b: &[TrackInfo]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.track_id == b.track_id && a.timescale == b.timescale && a.codec == b.codec
        })
}
