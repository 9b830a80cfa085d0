//! The segmenter: samples in, parts and segments out, with explicit time.
//!
//! One track leads (the first video track, else the first track): parts and segments
//! are cut on its timeline, and the other tracks' samples join the part whose lead
//! interval their decode time falls in. A part is emitted the moment the lead sample
//! that completes it arrives (RFC 8216bis 4.4.4.9: parts no longer than PART-TARGET); a
//! segment ends at the first lead keyframe at or after the segment target, so every
//! segment starts with an IDR.
//!
//! Cost: `push` is amortised O(1) per sample plus one `moof`+`mdat` write per part; the
//! bytes of a segment are its parts' bytes, shared, never copied.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::fragment::{self, FragmentError, RunSample, TrackRun};
use super::{Sample, Timescale, TrackInfo, TrackKind};

/// Most samples a non-lead track may queue while the lead track delivers nothing; past
/// that the oldest are dropped, so a dead video track cannot grow memory without bound.
const MAX_QUEUED_SAMPLES: usize = 4096;

/// How the segmenter cuts.
#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// The rendition's tracks; each sample names one by `track_id`.
    pub tracks: Vec<TrackInfo>,
    /// Longest a part may last (PART-TARGET). Rounded down to whole lead frames, so that
    /// parts are all the same length on a constant frame rate.
    pub part_target: Duration,
    /// Segment target: a segment ends at the first lead keyframe at or after it.
    pub segment_target: Duration,
    /// Largest sample accepted, in bytes; larger ones are refused as corrupt input.
    pub max_sample_bytes: usize,
    /// The source puts a keyframe exactly at every segment target (Mirror's own
    /// encoder does). The segment is then closed with the part that reaches the target,
    /// instead of one frame later when the next keyframe shows up: the playlist lists it
    /// and the preload hint names part 0 of the next segment at once.
    pub keyframes_on_segment_grid: bool,
}

/// Bad input the segmenter refused. The sample is dropped and the stream goes on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmenterError {
    /// The sample names a track the rendition does not have.
    #[error("sample for unknown track {0}")]
    UnknownTrack(u32),
    /// Zero-length payload: nothing to decode.
    #[error("track {0}: zero-length sample dropped")]
    EmptySample(u32),
    /// Payload above `max_sample_bytes`.
    #[error("track {track_id}: {bytes}-byte sample exceeds the {limit}-byte limit, dropped")]
    OversizedSample {
        /// The track.
        track_id: u32,
        /// The sample's size.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Decode time not after the previous sample's on the same track.
    #[error("track {track_id}: decode time {got} is not after {previous}, sample dropped")]
    NonMonotonic {
        /// The track.
        track_id: u32,
        /// The previous sample's decode time.
        previous: u64,
        /// This sample's decode time.
        got: u64,
    },
    /// Lead-track sample before the first keyframe: a segment must start with an IDR.
    #[error("track {0}: waiting for the first keyframe, sample dropped")]
    AwaitingKeyframe(u32),
    /// The chunk could not be written (its samples are lost).
    #[error("writing a part failed: {0}")]
    Fragment(String),
}

impl From<FragmentError> for SegmenterError {
    fn from(e: FragmentError) -> Self {
        SegmenterError::Fragment(e.to_string())
    }
}

/// Where one track's samples sit in a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTrack {
    /// The track.
    pub track_id: u32,
    /// `tfdt` of this track in the part.
    pub base_decode_ticks: u64,
    /// Sum of the sample durations written in `trun`.
    pub duration_ticks: u64,
    /// Number of samples.
    pub sample_count: usize,
}

/// One LL-HLS partial segment: one CMAF chunk.
#[derive(Debug, Clone)]
pub struct Part {
    /// Media sequence number of the segment it belongs to.
    pub msn: u64,
    /// Index within that segment, from 0.
    pub index: u32,
    /// Starts with a lead keyframe (EXT-X-PART INDEPENDENT=YES).
    pub independent: bool,
    /// Duration on the lead track's timeline (EXT-X-PART DURATION).
    pub duration: Duration,
    /// `moof` + `mdat`.
    pub bytes: Bytes,
    /// Capture time of its first lead sample.
    pub captured_at: SystemTime,
    /// When the segmenter emitted it: announce latency is measured from here.
    pub completed_at: SystemTime,
    /// Per-track placement, lead first.
    pub tracks: Vec<PartTrack>,
}

/// A complete segment: the parts between two lead keyframes at the segment target.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Duration on the lead timeline (EXTINF).
    pub duration: Duration,
    /// Capture time of its first sample (EXT-X-PROGRAM-DATE-TIME).
    pub captured_at: SystemTime,
    /// Its parts, in order; the segment's bytes are their bytes.
    pub parts: Vec<Part>,
}

impl Segment {
    /// Total size in bytes.
    pub fn byte_len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }
}

/// What the segmenter produced.
#[derive(Debug, Clone)]
pub enum SegmenterEvent {
    /// A part is complete and may be served.
    Part(Part),
    /// A segment is complete (its last part was emitted just before).
    Segment(Segment),
}

#[derive(Debug)]
struct TrackState {
    info: TrackInfo,
    /// Accepted samples not yet in a part, in decode order.
    queue: VecDeque<Sample>,
    /// Decode time of the last accepted sample, for the monotonicity check.
    last_decode_ticks: Option<u64>,
}

/// The open segment: `start_ticks` is the decode time of its first (keyframe) lead
/// sample, and `parts` the parts emitted for it so far.
#[derive(Debug)]
struct OpenSegment {
    start_ticks: u64,
    /// Where its last part ends, in lead ticks.
    end_ticks: u64,
    captured_at: SystemTime,
    parts: Vec<Part>,
    overlong_warned: bool,
}

/// Cuts samples into parts and segments. See the module docs.
#[derive(Debug)]
pub struct Segmenter {
    tracks: Vec<TrackState>,
    lead: usize,
    part_target_ticks: u64,
    segment_target_ticks: u64,
    max_sample_bytes: usize,
    keyframes_on_segment_grid: bool,
    segment: Option<OpenSegment>,
    /// Whether the first segment has been opened (the first lead keyframe seen).
    started: bool,
    next_msn: u64,
    next_sequence_number: u32,
    events: VecDeque<SegmenterEvent>,
}

impl Segmenter {
    /// A segmenter for `config.tracks`; the first MSN is `first_msn`.
    pub fn new(config: SegmenterConfig, first_msn: u64) -> Self {
        let lead = config
            .tracks
            .iter()
            .position(|t| t.kind() == TrackKind::Video)
            .unwrap_or(0);
        let lead_info = &config.tracks[lead.min(config.tracks.len().saturating_sub(1))];
        let scale = lead_info.timescale;
        let nominal = u64::from(lead_info.nominal_sample_ticks);
        let target = scale.ticks(config.part_target);
        let part_target_ticks = target
            .checked_div(nominal)
            .map_or(target.max(1), |frames| frames.max(1) * nominal);
        Self {
            segment_target_ticks: scale.ticks(config.segment_target),
            tracks: config
                .tracks
                .into_iter()
                .map(|info| TrackState {
                    info,
                    queue: VecDeque::new(),
                    last_decode_ticks: None,
                })
                .collect(),
            lead,
            part_target_ticks,
            max_sample_bytes: config.max_sample_bytes,
            keyframes_on_segment_grid: config.keyframes_on_segment_grid,
            segment: None,
            started: false,
            next_msn: first_msn,
            next_sequence_number: 1,
            events: VecDeque::new(),
        }
    }

    /// The PART-TARGET parts actually keep: the configured target rounded down to whole
    /// lead frames.
    pub fn part_target(&self) -> Duration {
        self.lead_scale().to_duration(self.part_target_ticks)
    }

    /// The MSN the next segment will get.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    /// The tracks, as configured.
    pub fn tracks(&self) -> impl Iterator<Item = &TrackInfo> {
        self.tracks.iter().map(|t| &t.info)
    }

    /// The segment target this rendition is cut to (a passthrough one's is the
    /// source's GOP).
    pub fn segment_target(&self) -> Duration {
        self.lead_scale().to_duration(self.segment_target_ticks)
    }

    /// How long the segment in production is so far, from its keyframe to the latest
    /// lead sample; `None` when no segment is open.
    pub fn open_duration(&self) -> Option<Duration> {
        let open = self.segment.as_ref()?;
        let last = self.tracks[self.lead].last_decode_ticks?;
        Some(
            self.lead_scale()
                .to_duration(last.saturating_sub(open.start_ticks)),
        )
    }

    fn lead_scale(&self) -> Timescale {
        self.tracks[self.lead].info.timescale
    }

    /// Accepts one sample at wall-clock time `now`. A refused sample is dropped and the
    /// error says why; the segmenter stays usable either way.
    pub fn push(&mut self, sample: Sample, now: SystemTime) -> Result<(), SegmenterError> {
        let index = self
            .tracks
            .iter()
            .position(|t| t.info.track_id == sample.track_id)
            .ok_or(SegmenterError::UnknownTrack(sample.track_id))?;
        self.validate(index, &sample)?;
        if index != self.lead {
            let track = &mut self.tracks[index];
            track.last_decode_ticks = Some(sample.decode_ticks);
            track.queue.push_back(sample);
            if track.queue.len() > MAX_QUEUED_SAMPLES {
                track.queue.pop_front();
                tracing::warn!(
                    track_id = track.info.track_id,
                    "lead track silent, dropped oldest queued sample"
                );
            }
            return Ok(());
        }
        self.push_lead(sample, now)
    }

    fn validate(&self, index: usize, sample: &Sample) -> Result<(), SegmenterError> {
        let track = &self.tracks[index];
        if sample.data.is_empty() {
            return Err(SegmenterError::EmptySample(sample.track_id));
        }
        if sample.data.len() > self.max_sample_bytes {
            return Err(SegmenterError::OversizedSample {
                track_id: sample.track_id,
                bytes: sample.data.len(),
                limit: self.max_sample_bytes,
            });
        }
        if let Some(previous) = track.last_decode_ticks
            && sample.decode_ticks <= previous
        {
            return Err(SegmenterError::NonMonotonic {
                track_id: sample.track_id,
                previous,
                got: sample.decode_ticks,
            });
        }
        Ok(())
    }

    fn push_lead(&mut self, sample: Sample, now: SystemTime) -> Result<(), SegmenterError> {
        let nominal = u64::from(self.tracks[self.lead].info.nominal_sample_ticks);
        let dt = sample.decode_ticks;
        match &self.segment {
            None if !sample.keyframe && !self.started => {
                return Err(SegmenterError::AwaitingKeyframe(sample.track_id));
            }
            None => {
                if !sample.keyframe {
                    tracing::warn!(
                        msn = self.next_msn,
                        "segment closed on the keyframe grid but the next frame is no keyframe"
                    );
                }
                self.open_segment(&sample);
            }
            Some(open) => {
                let elapsed = dt - open.start_ticks;
                let mut result = Ok(());
                // A segment ends at the first keyframe at or after the target; half a frame
                // of slack absorbs timestamp rounding on the frame grid.
                if sample.keyframe && elapsed + nominal / 2 >= self.segment_target_ticks {
                    result = self.cut_part(now, Some(dt));
                    self.close_segment();
                    self.open_segment(&sample);
                } else if let Some(front) = self.tracks[self.lead].queue.front()
                    && dt + nominal.max(1) - front.decode_ticks > self.part_target_ticks
                {
                    // Irregular timing: this sample would push the open part past the
                    // target, so the open part ends before it (its last duration is now
                    // known exactly).
                    result = self.cut_part(now, Some(dt));
                }
                self.warn_if_overlong(dt);
                if let Err(e) = result {
                    self.accept_lead(sample);
                    return Err(e);
                }
            }
        }
        self.accept_lead(sample);
        let lead = &self.tracks[self.lead];
        let front = lead.queue.front().map_or(dt, |s| s.decode_ticks);
        // Emit the part the moment its last sample arrives: if one more frame would not
        // fit, this sample completes it.
        if dt + 2 * nominal.max(1) - front > self.part_target_ticks {
            let reached_target = self.segment.as_ref().is_some_and(|open| {
                dt + nominal - open.start_ticks + nominal / 2 >= self.segment_target_ticks
            });
            if reached_target && !self.keyframes_on_segment_grid {
                // The segment may end here, if the next frame is a keyframe; only that
                // frame tells. Emitting the part now would hint a next part of this
                // segment that may never exist, so the last part of a segment waits one
                // frame: the next lead sample cuts it, closing the segment if it is a
                // keyframe.
                return Ok(());
            }
            self.cut_part(now, None)?;
            if self.keyframes_on_segment_grid && reached_target {
                self.close_segment();
            }
        }
        Ok(())
    }

    fn accept_lead(&mut self, sample: Sample) {
        let lead = &mut self.tracks[self.lead];
        lead.last_decode_ticks = Some(sample.decode_ticks);
        lead.queue.push_back(sample);
    }

    fn warn_if_overlong(&mut self, dt: u64) {
        let scale = self.lead_scale();
        let limit = self.segment_target_ticks + scale.ticks(Duration::from_millis(500));
        if let Some(open) = &mut self.segment
            && !open.overlong_warned
            && dt - open.start_ticks > limit
        {
            open.overlong_warned = true;
            tracing::warn!(
                msn = self.next_msn,
                "no keyframe within segment target + 0.5 s: the source's GOP is longer than \
                 the segment target, so this segment will be too long"
            );
        }
    }

    fn open_segment(&mut self, keyframe: &Sample) {
        let start = keyframe.decode_ticks;
        let lead_scale = self.lead_scale();
        // Samples of other tracks from before the first keyframe have nothing to go with.
        // Later, samples that arrive after their part was cut belong in the next part and
        // are kept: dropping them would leave holes in that track.
        if !self.started {
            self.started = true;
            for (i, track) in self.tracks.iter_mut().enumerate() {
                if i == self.lead {
                    continue;
                }
                let start_in_track = lead_scale.rescale(start, track.info.timescale);
                while track
                    .queue
                    .front()
                    .is_some_and(|s| s.decode_ticks < start_in_track)
                {
                    track.queue.pop_front();
                }
            }
        }
        self.segment = Some(OpenSegment {
            start_ticks: start,
            end_ticks: start,
            captured_at: keyframe.captured_at,
            parts: Vec::new(),
            overlong_warned: false,
        });
    }

    fn close_segment(&mut self) {
        let Some(open) = self.segment.take() else {
            return;
        };
        if open.parts.is_empty() {
            return;
        }
        // From its start to its last part's end, not the sum of its parts: a part
        // emitted before the next frame arrived counts its last frame at the nominal
        // duration, which a variable frame rate (a browser's, under a bandwidth estimate)
        // may overstate; the next part's tfdt is the true time, so the parts overlap and
        // their sum would run ahead of the media.
        let segment = Segment {
            msn: self.next_msn,
            duration: self
                .lead_scale()
                .to_duration(open.end_ticks.saturating_sub(open.start_ticks)),
            captured_at: open.captured_at,
            parts: open.parts,
        };
        self.next_msn += 1;
        self.events.push_back(SegmenterEvent::Segment(segment));
    }

    /// Writes the lead samples queued so far, with the other tracks' samples that fall
    /// before the part's end, as one part. `next_lead_ticks` is the decode time of the
    /// lead sample that follows, when known; otherwise the last sample lasts the nominal
    /// frame duration.
    fn cut_part(
        &mut self,
        now: SystemTime,
        next_lead_ticks: Option<u64>,
    ) -> Result<(), SegmenterError> {
        let lead_samples: Vec<Sample> = self.tracks[self.lead].queue.drain(..).collect();
        let (Some(first), Some(last)) = (lead_samples.first(), lead_samples.last()) else {
            return Ok(());
        };
        let lead_info = &self.tracks[self.lead].info;
        let lead_scale = lead_info.timescale;
        // RFC 8216bis 4.4.4.9: a part MUST NOT last longer than PART-TARGET. When frames
        // went missing before the next one, the last sample is not stretched over the
        // hole past the target: the hole stays a gap in the decode timeline, which tfdt
        // of the next part states exactly.
        let room = self
            .part_target_ticks
            .saturating_sub(last.decode_ticks - first.decode_ticks)
            .max(1);
        let last_ticks = next_lead_ticks
            .map_or(u64::from(lead_info.nominal_sample_ticks), |next| {
                next - last.decode_ticks
            })
            .min(room);
        let lead_end = last.decode_ticks + last_ticks;
        let independent = first.keyframe;
        let captured_at = first.captured_at;
        let lead_start = first.decode_ticks;

        let mut taken: Vec<(usize, Vec<Sample>, Option<u64>)> =
            Vec::with_capacity(self.tracks.len());
        taken.push((self.lead, lead_samples, Some(lead_end)));
        for (i, track) in self.tracks.iter_mut().enumerate() {
            if i == self.lead {
                continue;
            }
            let end = lead_scale.rescale(lead_end, track.info.timescale);
            let count = track
                .queue
                .iter()
                .take_while(|s| s.decode_ticks < end)
                .count();
            let samples: Vec<Sample> = track.queue.drain(..count).collect();
            let following = track.queue.front().map(|s| s.decode_ticks);
            taken.push((i, samples, following));
        }

        let mut runs = Vec::with_capacity(taken.len());
        let mut placement = Vec::with_capacity(taken.len());
        for (i, samples, following) in &taken {
            let info = &self.tracks[*i].info;
            let run = track_run(info, samples, *following);
            if let Some(first) = samples.first() {
                placement.push(PartTrack {
                    track_id: info.track_id,
                    base_decode_ticks: first.decode_ticks,
                    duration_ticks: run
                        .samples
                        .iter()
                        .map(|s| u64::from(s.duration_ticks))
                        .sum(),
                    sample_count: samples.len(),
                });
            }
            runs.push(run);
        }
        let sequence_number = self.next_sequence_number;
        self.next_sequence_number = self.next_sequence_number.wrapping_add(1).max(1);
        let bytes = fragment::write_chunk(sequence_number, &runs)?;

        let Some(open) = self.segment.as_mut() else {
            return Ok(());
        };
        let part = Part {
            msn: self.next_msn,
            index: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
            independent,
            duration: lead_scale.to_duration(lead_end - lead_start),
            bytes,
            captured_at,
            completed_at: now,
            tracks: placement,
        };
        open.end_ticks = lead_end;
        open.parts.push(part.clone());
        self.events.push_back(SegmenterEvent::Part(part));
        Ok(())
    }

    /// Ends the stream: the open part and segment are emitted as they are.
    pub fn finish(&mut self, now: SystemTime) -> Result<(), SegmenterError> {
        let result = self.cut_part(now, None);
        self.close_segment();
        result
    }

    /// The next event, if any. Call after each `push` until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SegmenterEvent> {
        self.events.pop_front()
    }
}

/// The `trun` of one track: durations from the decode-time deltas, the last one up to
/// `following` (the next sample's decode time) or, when that is not known yet, the
/// track's nominal sample duration.
fn track_run<'a>(info: &TrackInfo, samples: &'a [Sample], following: Option<u64>) -> TrackRun<'a> {
    let nominal = u64::from(info.nominal_sample_ticks);
    let run_samples = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let next = samples.get(i + 1).map(|n| n.decode_ticks).or(following);
            let duration = next.map_or(nominal, |n| n - s.decode_ticks);
            RunSample {
                duration_ticks: u32::try_from(duration).unwrap_or(u32::MAX),
                size: u32::try_from(s.data.len()).unwrap_or(u32::MAX),
                keyframe: s.keyframe,
                composition_offset_ticks: s.composition_offset_ticks,
            }
        })
        .collect();
    TrackRun {
        track_id: info.track_id,
        base_decode_ticks: samples.first().map_or(0, |s| s.decode_ticks),
        with_composition_offsets: info.kind() == TrackKind::Video,
        samples: run_samples,
        payloads: samples.iter().map(|s| &s.data[..]).collect(),
    }
}
