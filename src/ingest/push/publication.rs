//! One publication, whatever the protocol: the publisher's codec configuration and
//! timestamped access units in; its first GOP held until the second keyframe shows the
//! GOP length, then handed to the stream ([`super::Claim`]), the rest queued in a
//! [`JitterBuffer`]. Timestamps become the tracks' ticks: 90 kHz video from the
//! publisher's milliseconds, audio counted in AAC frames (milliseconds cannot place a
//! 1024-sample frame exactly) and realigned when the publisher's clock says otherwise.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Claim, Handoff, PublisherInfo};
use crate::cmaf::{AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::cmaf::{AacConfig, AvcConfig, CodecConfig, Sample, Timescale, TrackInfo};
use crate::ingest::jitter::JitterBuffer;
use crate::ingest::startup::Startup;

/// The most media a publisher's first GOP may hold before it is refused: a second
/// keyframe must come within this time and these bytes.
const MAX_FIRST_GOP: Duration = Duration::from_secs(30);
const MAX_FIRST_GOP_BYTES: usize = 64 << 20;

/// Why a publication ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicationError {
    /// The first GOP is longer than [`MAX_FIRST_GOP`] or larger than its byte bound.
    #[error("no second keyframe within {} s or {} MiB", MAX_FIRST_GOP.as_secs(), MAX_FIRST_GOP_BYTES >> 20)]
    FirstGopTooLong,
    /// The stream was removed or its key changed.
    #[error("the stream no longer takes this publisher")]
    Revoked,
}

/// The wall clock of the publisher's timeline: its first timestamp is now.
struct Clock {
    base_ms: u32,
    wall: SystemTime,
}

impl Clock {
    /// Milliseconds since the first timestamp (timestamps before it: `None`).
    fn since(&self, ms: u32) -> Option<u64> {
        let d = ms.wrapping_sub(self.base_ms);
        // RTMP timestamps wrap at 2^32 ms; a "later" one more than 2^31 ms away is
        // earlier.
        (d < 1 << 31).then_some(u64::from(d))
    }
}

/// See the module docs.
pub struct Publication {
    claim: Claim,
    publisher: PublisherInfo,
    buffer_samples: usize,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    clock: Option<Clock>,
    /// Audio frames counted since `audio_origin` ticks.
    audio_frames: u64,
    audio_origin: Option<u64>,
    startup: Startup,
    startup_bytes: usize,
    /// Where samples go once handed over.
    buffer: Option<Arc<JitterBuffer>>,
}

impl Publication {
    /// A publication of `claim`'s stream by `publisher`, its buffer holding
    /// `buffer_samples`.
    pub fn new(claim: Claim, publisher: PublisherInfo, buffer_samples: usize) -> Self {
        Self {
            claim,
            publisher,
            buffer_samples,
            video: None,
            audio: None,
            clock: None,
            audio_frames: 0,
            audio_origin: None,
            startup: Startup::default(),
            startup_bytes: 0,
            buffer: None,
        }
    }

    /// The stream published.
    pub fn stream(&self) -> &str {
        self.claim.stream()
    }

    /// The video configuration. A change once handed over starts the stream anew (a
    /// new init segment, after a discontinuity).
    pub fn video_config(&mut self, avc: AvcConfig) {
        if self.video.as_ref() != Some(&avc) {
            self.video = Some(avc);
            self.start_over("the publisher changed its video parameters");
        }
    }

    /// The audio configuration; a change starts the stream anew as for video.
    pub fn audio_config(&mut self, aac: AacConfig) {
        if self.audio.as_ref() != Some(&aac) {
            self.audio = Some(aac);
            self.start_over("the publisher changed its audio parameters");
        }
    }

    fn start_over(&mut self, reason: &str) {
        if let Some(buffer) = self.buffer.take() {
            buffer.close(reason.into());
        }
        self.startup = Startup::default();
        self.startup_bytes = 0;
    }

    fn clock(&mut self, ms: u32) -> &Clock {
        self.clock.get_or_insert_with(|| Clock {
            base_ms: ms,
            wall: SystemTime::now(),
        })
    }

    /// A video access unit: decode time `dts_ms`, presentation `composition_ms` later,
    /// NAL units with 4-byte lengths. Ignored before a video configuration.
    pub fn video(
        &mut self,
        dts_ms: u32,
        composition_ms: i32,
        keyframe: bool,
        data: Bytes,
    ) -> Result<(), PublicationError> {
        if self.video.is_none() {
            return Ok(());
        }
        let clock = self.clock(dts_ms);
        let Some(since) = clock.since(dts_ms) else {
            return Ok(());
        };
        let captured_at = clock.wall + Duration::from_millis(since);
        self.take(Sample {
            track_id: VIDEO_TRACK_ID,
            decode_ticks: since * 90,
            composition_offset_ticks: composition_ms.saturating_mul(90),
            keyframe,
            data,
            captured_at,
        })
    }

    /// A raw AAC frame at `dts_ms`. Ignored before an audio configuration.
    pub fn audio(&mut self, dts_ms: u32, data: Bytes) -> Result<(), PublicationError> {
        let Some(rate) = self.audio.as_ref().map(|a| u64::from(a.sample_rate)) else {
            return Ok(());
        };
        let clock = self.clock(dts_ms);
        let Some(since) = clock.since(dts_ms) else {
            return Ok(());
        };
        let captured_at = clock.wall + Duration::from_millis(since);
        let stated = since * rate / 1000;
        let origin = *self.audio_origin.get_or_insert(stated);
        let counted = origin + self.audio_frames * 1024;
        // More than two frames from what the publisher's clock says (a gap in its
        // audio, a clock that jumped): follow the clock.
        let ticks = if counted.abs_diff(stated) > 2 * 1024 {
            self.audio_origin = Some(stated);
            self.audio_frames = 0;
            stated
        } else {
            counted
        };
        self.audio_frames += 1;
        self.take(Sample {
            track_id: AUDIO_TRACK_ID,
            decode_ticks: ticks,
            composition_offset_ticks: 0,
            keyframe: true,
            data,
            captured_at,
        })
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
        }
        self.startup_bytes += sample.data.len();
        let Some(ready) = self.startup.push(sample) else {
            if self.startup_bytes > MAX_FIRST_GOP_BYTES || self.startup.held() > MAX_FIRST_GOP {
                return Err(PublicationError::FirstGopTooLong);
            }
            return Ok(());
        };
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
        let gop = ready.gop;
        let frame_rate = Some((90_000, ready.frame_ticks.max(1)));
        for sample in ready.samples {
            buffer.push(sample);
        }
        self.claim.hand_over(Handoff {
            tracks,
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

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(buffer) = &self.buffer {
            buffer.close("the publisher left".into());
        }
    }
}
