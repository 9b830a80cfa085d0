//! One publication, whatever the protocol: the publisher's codec configuration and
//! timestamped access units in; its first GOP held until the second keyframe shows the
//! GOP length, then handed to the stream ([`super::Claim`]), the rest queued in a
//! [`JitterBuffer`]. Timestamps come in 90 kHz ticks (RTMP's milliseconds × 90, MPEG-TS
//! as is), unwrapped by the protocol ([`Unwrap`]); audio is counted in AAC frames (a
//! millisecond clock cannot place a 1024-sample frame exactly) and realigned when the
//! publisher's clock says otherwise.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Claim, Handoff, PublisherClock, PublisherInfo};
use crate::cmaf::codec::{ParameterSets, VideoCodec, annexb_to_length_prefixed};
use crate::cmaf::{AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::cmaf::{AacConfig, AvcConfig, CodecConfig, Sample, Timescale, TrackInfo};
use crate::ingest::ForeignAudio;
use crate::ingest::jitter::JitterBuffer;
use crate::ingest::startup::Startup;

/// The most media a publisher's first GOP may hold before it is refused: a second
/// keyframe must come within this time and these bytes.
const MAX_FIRST_GOP: Duration = Duration::from_secs(30);
const MAX_FIRST_GOP_BYTES: usize = 64 << 20;
/// What each held sample counts for besides its payload (its record and timestamps), so
/// that a flood of empty samples is bounded too.
const SAMPLE_OVERHEAD_BYTES: usize = 128;
/// Audio frames counted ahead of the publisher's clock before one is dropped (an
/// encoder whose audio clock runs fast).
const MAX_AUDIO_LEAD_FRAMES: u64 = 8;

/// Why a publication ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicationError {
    /// The first GOP is longer than [`MAX_FIRST_GOP`] or larger than its byte bound.
    #[error("no second keyframe within {} s or {} MiB", MAX_FIRST_GOP.as_secs(), MAX_FIRST_GOP_BYTES >> 20)]
    FirstGopTooLong,
    /// The stream was removed or its key changed.
    #[error("the stream no longer takes this publisher")]
    Revoked,
    /// Parameter sets that do not describe a picture Mirror can package.
    #[error("unusable parameter sets: {0}")]
    ParameterSets(String),
}

/// A timestamp counter of `bits` bits that wraps (RTMP's 32-bit milliseconds, MPEG-TS's
/// 33-bit 90 kHz clock), extended to 64 bits: a step back of less than half the range is
/// a step back, not a wrap.
#[derive(Debug, Clone, Copy)]
pub struct Unwrap {
    bits: u32,
    last: Option<u64>,
}

impl Unwrap {
    /// A counter of `bits` bits.
    pub fn new(bits: u32) -> Self {
        Self { bits, last: None }
    }

    /// `value` (of `bits` bits) on the extended timeline.
    pub fn extend(&mut self, value: u64) -> u64 {
        let modulus = 1u64 << self.bits;
        let value = value & (modulus - 1);
        let extended = match self.last {
            None => value + modulus,
            Some(last) => {
                let step = value.wrapping_sub(last) & (modulus - 1);
                if step < modulus / 2 {
                    last + step
                } else {
                    // Backwards by `modulus - step`; never below the first wrap.
                    last.saturating_sub(modulus - step)
                }
            }
        };
        self.last = Some(extended);
        extended
    }
}

/// The wall-clock time of `raw` (90 kHz ticks of Unix time, wrapped at `modulus`), as
/// an encoder whose timestamps are its clock writes them: the one nearest to `now`.
pub(super) fn wall_of(raw: u64, modulus: u64, now: SystemTime) -> SystemTime {
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let now_ticks = u64::try_from(since_epoch.as_micros() * 9 / 100).unwrap_or(0);
    let behind = (now_ticks % modulus + modulus - raw % modulus) % modulus;
    if behind <= modulus / 2 {
        now - Timescale::VIDEO_90K.to_duration(behind)
    } else {
        // Ahead of our clock (the encoder's runs fast): in the future.
        now + Timescale::VIDEO_90K.to_duration(modulus - behind)
    }
}

/// The wall clock of the publisher's timeline: its first timestamp is now, or with
/// [`PublisherClock::Wallclock`] the time it says.
struct Clock {
    base: u64,
    wall: SystemTime,
}

impl Clock {
    /// 90 kHz ticks since the first timestamp (timestamps before it: `None`).
    fn since(&self, ticks: u64) -> Option<u64> {
        ticks.checked_sub(self.base)
    }
}

/// See the module docs.
pub struct Publication {
    claim: Claim,
    publisher: PublisherInfo,
    buffer_samples: usize,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    /// Whether the sound is Opus (a WebRTC publisher's), carried for the stream to
    /// make AAC of.
    opus: bool,
    /// The last Opus decode time taken (48 kHz): sound must move forward.
    last_opus: Option<u64>,
    clock: Option<Clock>,
    /// Audio frames counted since `audio_origin` ticks.
    audio_frames: u64,
    audio_origin: Option<u64>,
    startup: Startup,
    startup_bytes: usize,
    /// When the first GOP began to be held (wall clock: a publisher's timestamps may
    /// not move).
    startup_since: Option<std::time::Instant>,
    /// The last video decode time taken: video must move forward.
    last_video: Option<u64>,
    /// Where samples go once handed over.
    buffer: Option<Arc<JitterBuffer>>,
    /// The protocol's timestamp range in 90 kHz ticks (they wrap at it).
    modulus_ticks: u64,
    /// Whether the publisher's timestamps are Unix time ([`PublisherClock::Wallclock`]).
    wallclock: bool,
    /// The keyframe interval the publisher is asked for, when it makes keyframes on
    /// request: what the stream is told instead of the first GOP's length.
    requested_gop: Option<Duration>,
}

impl Publication {
    /// A publication of `claim`'s stream by `publisher`, its buffer holding
    /// `buffer_samples`; the protocol's timestamps wrap at `modulus_ticks` (90 kHz).
    pub fn new(
        claim: Claim,
        publisher: PublisherInfo,
        buffer_samples: usize,
        modulus_ticks: u64,
    ) -> Self {
        Self {
            modulus_ticks,
            wallclock: claim.publisher_clock() == PublisherClock::Wallclock,
            requested_gop: None,
            claim,
            publisher,
            buffer_samples,
            video: None,
            audio: None,
            opus: false,
            last_opus: None,
            clock: None,
            audio_frames: 0,
            audio_origin: None,
            startup: Startup::default(),
            startup_bytes: 0,
            startup_since: None,
            last_video: None,
            buffer: None,
        }
    }

    /// The same, its wall clock the first frame's arrival whatever `[push]
    /// publisher_clock` says: for a protocol whose timestamps never are Unix time
    /// (RTP's start at random).
    pub fn with_arrival_clock(mut self) -> Self {
        self.wallclock = false;
        self
    }

    /// The same, for a publisher asked for a keyframe every `interval` (WebRTC's, which
    /// makes them only on request): the stream's segments follow that interval, not the
    /// first GOP's length, which the request's round trip makes a little longer. (A
    /// segment ends at the first keyframe at or after its target; a target a frame
    /// longer than the GOPs that follow would make every segment two GOPs long.)
    pub fn with_keyframes_every(mut self, interval: Duration) -> Self {
        self.requested_gop = Some(interval);
        self
    }

    /// The stream published.
    pub fn stream(&self) -> &str {
        self.claim.stream()
    }

    /// The video configuration. A change once handed over starts the stream anew (a
    /// new init segment, after a discontinuity), unless only the level changed.
    pub fn video_config(&mut self, avc: AvcConfig) {
        if let Some(current) = &self.video
            && current.differs_only_in_level(&avc)
        {
            // Not worth a new init segment and a discontinuity for every viewer: the
            // samples carry no parameter sets, so decoders go on with the first SPS,
            // whose syntax is the same.
            return;
        }
        if self.video.as_ref() != Some(&avc) {
            self.video = Some(avc);
            self.start_over("the publisher changed its video parameters");
        }
    }

    /// The audio configuration; a change starts the stream anew as for video.
    pub fn audio_config(&mut self, aac: AacConfig) {
        if self.audio.as_ref() != Some(&aac) {
            self.audio = Some(aac);
            // Frames are counted anew at the new rate.
            self.audio_origin = None;
            self.audio_frames = 0;
            self.start_over("the publisher changed its audio parameters");
        }
    }

    fn start_over(&mut self, reason: &str) {
        if let Some(buffer) = self.buffer.take() {
            buffer.close(reason.into());
        }
        self.startup = Startup::default();
        self.startup_bytes = 0;
        self.startup_since = None;
    }

    /// 90 kHz ticks of `dts` since the publisher's first timestamp, and its wall-clock
    /// time; `None` before the first.
    fn timed(&mut self, dts: u64) -> Option<(u64, SystemTime)> {
        let clock = self.clock(dts);
        let since = clock.since(dts)?;
        Some((since, clock.wall + Timescale::VIDEO_90K.to_duration(since)))
    }

    fn clock(&mut self, ticks: u64) -> &Clock {
        let wallclock = self.wallclock;
        let modulus = self.modulus_ticks;
        self.clock.get_or_insert_with(|| {
            let now = SystemTime::now();
            let wall = if wallclock {
                wall_of(ticks % modulus, modulus, now)
            } else {
                now
            };
            Clock { base: ticks, wall }
        })
    }

    /// A video access unit: decode time `dts` (90 kHz, unwrapped), presentation
    /// `composition` ticks later, NAL units with 4-byte lengths. Ignored before a video
    /// configuration.
    pub fn video(
        &mut self,
        dts: u64,
        composition: i32,
        keyframe: bool,
        data: Bytes,
    ) -> Result<(), PublicationError> {
        if self.video.is_none() || self.last_video.is_some_and(|last| dts <= last) {
            // Before a configuration, or a decode time that does not move forward
            // (the segmenter would refuse it): dropped.
            return Ok(());
        }
        self.last_video = Some(dts);
        let Some((since, captured_at)) = self.timed(dts) else {
            return Ok(());
        };
        self.take(Sample {
            track_id: VIDEO_TRACK_ID,
            decode_ticks: since,
            composition_offset_ticks: composition,
            keyframe,
            data,
            captured_at,
        })
    }

    /// A video access unit in Annex B (MPEG-TS and WebRTC carry them so): its in-band
    /// SPS and PPS configure the track, the rest goes to [`video`](Self::video).
    pub fn annexb_video(
        &mut self,
        dts: u64,
        composition: i32,
        data: &[u8],
    ) -> Result<(), PublicationError> {
        // Parameter sets this access unit carries (a fresh set each time: only new
        // ones reconfigure).
        let mut carried = ParameterSets::default();
        let Ok(unit) = annexb_to_length_prefixed(VideoCodec::H264, data, &mut carried) else {
            // No NAL unit in it.
            return Ok(());
        };
        if let (Some(sps), Some(pps)) = (carried.sps, carried.pps) {
            let (width, height) = super::flv::picture_size(&sps)
                .ok_or_else(|| PublicationError::ParameterSets("the SPS does not parse".into()))?;
            let avc = AvcConfig::new(sps, pps, width, height)
                .map_err(|e| PublicationError::ParameterSets(e.to_string()))?;
            self.video_config(avc);
        }
        if unit.data.is_empty() {
            return Ok(());
        }
        self.video(dts, composition, unit.has_idr, unit.data)
    }

    /// A raw AAC frame at `dts` (90 kHz, unwrapped). Ignored before an audio
    /// configuration.
    pub fn audio(&mut self, dts: u64, data: Bytes) -> Result<(), PublicationError> {
        let Some(rate) = self.audio.as_ref().map(|a| u64::from(a.sample_rate)) else {
            return Ok(());
        };
        let Some((since, captured_at)) = self.timed(dts) else {
            return Ok(());
        };
        let stated = since * rate / 90_000;
        let origin = *self.audio_origin.get_or_insert(stated);
        let counted = origin + self.audio_frames * 1024;
        // More than two frames behind what the publisher's clock says (a gap in its
        // audio, a clock that jumped ahead): follow the clock. Never back: a clock that
        // says less than the frames counted (stamped on arrival, bursty) is not
        // followed, since a decode time going back is refused.
        let ticks = if stated > counted + 2 * 1024 {
            self.audio_origin = Some(stated);
            self.audio_frames = 0;
            stated
        } else if counted > stated + MAX_AUDIO_LEAD_FRAMES * 1024 {
            // The count ran ahead of the publisher's clock: this frame is dropped, so
            // that sound does not drift ahead of the picture.
            return Ok(());
        } else {
            counted
        };
        self.audio_frames += 1;
        self.take(audio_sample(ticks, data, captured_at))
    }

    /// An Opus packet at `dts` (90 kHz, on the video's timeline), carried as it is:
    /// the stream makes AAC of it ([`ForeignAudio::Opus`]).
    pub fn opus(&mut self, dts: u64, data: Bytes) -> Result<(), PublicationError> {
        if !self.opus {
            self.opus = true;
            if self.buffer.is_some() {
                // Handed over without sound: the stream's tracks change.
                self.start_over("the publisher's sound started");
            }
        }
        let Some((since, captured_at)) = self.timed(dts) else {
            return Ok(());
        };
        // Opus's clock is 48 kHz (RFC 7587).
        let ticks = since * 8 / 15;
        if self.last_opus.is_some_and(|last| ticks <= last) {
            return Ok(());
        }
        self.last_opus = Some(ticks);
        self.take(audio_sample(ticks, data, captured_at))
    }

    fn take(&mut self, sample: Sample) -> Result<(), PublicationError> {
        if let Some(buffer) = &self.buffer {
            if !buffer.is_closed() {
                buffer.push(sample);
                return Ok(());
            }
            // The stream closed its source (it restarts, or stopped): start over, for
            // its next open.
            self.buffer = None;
            if !self.claim.is_current() {
                return Err(PublicationError::Revoked);
            }
            self.startup = Startup::default();
            self.startup_bytes = 0;
            self.startup_since = None;
        }
        self.startup_bytes += sample.data.len() + SAMPLE_OVERHEAD_BYTES;
        let since = *self
            .startup_since
            .get_or_insert_with(std::time::Instant::now);
        let Some(ready) = self.startup.push(sample) else {
            if self.startup_bytes > MAX_FIRST_GOP_BYTES
                || self.startup.held() > MAX_FIRST_GOP
                || since.elapsed() > MAX_FIRST_GOP
            {
                return Err(PublicationError::FirstGopTooLong);
            }
            return Ok(());
        };
        self.startup_since = None;
        let Some(avc) = self.video.clone() else {
            return Ok(());
        };
        let mut tracks = vec![TrackInfo {
            track_id: VIDEO_TRACK_ID,
            timescale: Timescale::VIDEO_90K,
            codec: CodecConfig::Avc(avc),
            nominal_sample_ticks: ready.frame_ticks,
            average_bitrate: ready.bits_per_second(VIDEO_TRACK_ID),
        }];
        if let Some(aac) = self.audio.clone() {
            tracks.push(TrackInfo {
                track_id: AUDIO_TRACK_ID,
                timescale: Timescale(aac.sample_rate),
                codec: CodecConfig::Aac(aac),
                nominal_sample_ticks: 1024,
                average_bitrate: ready.bits_per_second(AUDIO_TRACK_ID),
            });
        }
        let buffer = Arc::new(JitterBuffer::new(self.buffer_samples, VIDEO_TRACK_ID));
        let gop = self.requested_gop.unwrap_or(ready.gop);
        let frame_rate = Some((90_000, ready.frame_ticks.max(1)));
        for sample in ready.samples {
            buffer.push(sample);
        }
        self.claim.hand_over(Handoff {
            tracks,
            foreign_audio: self.opus.then_some(ForeignAudio::Opus),
            gop,
            frame_rate,
            buffer: buffer.clone(),
            publisher: self.publisher.clone(),
        });
        self.buffer = Some(buffer);
        Ok(())
    }

    /// Whether the stream still takes this publisher.
    pub fn is_current(&self) -> bool {
        self.claim.is_current()
    }
}

/// A sound sample (every one a sync sample) at `ticks` of its track's clock.
fn audio_sample(ticks: u64, data: Bytes, captured_at: SystemTime) -> Sample {
    Sample {
        track_id: AUDIO_TRACK_ID,
        decode_ticks: ticks,
        composition_offset_ticks: 0,
        keyframe: true,
        data,
        captured_at,
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(buffer) = &self.buffer {
            buffer.close("the publisher left".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallclock_timestamps_name_their_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let ms_modulus = (1u64 << 32) * 90;
        let at = |ticks_ago: u64| {
            let unix_ticks = 1_765_000_000u64 * 90_000 - ticks_ago;
            wall_of(unix_ticks % ms_modulus, ms_modulus, now)
        };
        assert_eq!(at(0), now);
        assert_eq!(at(45_000), now - Duration::from_millis(500));
        // 33-bit MPEG-TS: 26.5 hours of range.
        let ts = 1u64 << 33;
        let raw = (1_765_000_000u64 * 90_000 - 9_000) % ts;
        assert_eq!(wall_of(raw, ts, now), now - Duration::from_millis(100));
        let ahead = (1_765_000_000u64 * 90_000 + 90_000) % ts;
        assert_eq!(wall_of(ahead, ts, now), now + Duration::from_secs(1));
    }

    #[test]
    fn wrapping_timestamps_are_extended() {
        let mut ms = Unwrap::new(32);
        let start = ms.extend(u64::from(u32::MAX - 10));
        assert_eq!(ms.extend(5) - start, 16, "across the wrap");
        assert_eq!(ms.extend(2) - start, 13, "a step back is a step back");
        let mut pts = Unwrap::new(33);
        let a = pts.extend(100);
        assert_eq!(pts.extend(3100) - a, 3000);
        assert_eq!(
            pts.extend((1 << 33) + 6100) - a,
            6000,
            "bits above are ignored"
        );
    }
}
