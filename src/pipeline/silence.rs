//! A silent AAC track for a source that sends no sound (`encoder.silent_audio`): iOS
//! players have shown a black picture for HLS without an audio track. The silence is
//! encoded by libav's `aac` like any other sound, block by block, on the timeline of the
//! pictures it goes with, so that each part holds the sound of its own time.
//!
//! It imports the AAC encoder and the sample types; nothing of ingest, streams or HTTP.

use std::time::{Duration, SystemTime};

use ffmpeg_next::Rational;

use super::{AudioEncoder, EncoderOptions, PipelineError};
use crate::cmaf::{Sample, TrackInfo};
use crate::ingest::SourceFormat;
use crate::libav::{AUDIO_FRAME_SAMPLES, silence_frame};

/// The rate the silence is made at.
const RATE: u32 = 48_000;

/// Silence made into AAC up to wherever the pictures have reached.
pub struct SilentAudio {
    encoder: AudioEncoder,
    /// The AAC samples of the last [`fill`](Self::fill), reused from picture to picture.
    made: Vec<Sample>,
    /// The first sample (at [`RATE`]) of the next block; `None` until the first picture.
    next: Option<u64>,
}

impl SilentAudio {
    /// Opens libav's `aac` at `options.audio_bitrate_kbps`, stereo, 48 kHz.
    pub fn open(options: &EncoderOptions) -> Result<Self, PipelineError> {
        let encoder = AudioEncoder::open(
            options,
            SourceFormat {
                width: 0,
                height: 0,
                frame_rate: Rational(1, 1),
                video_time_base: Rational(1, 90_000),
                sample_rate: RATE,
                audio_time_base: Rational(1, RATE as i32),
            },
        )?;
        Ok(Self {
            encoder,
            made: Vec::new(),
            next: None,
        })
    }

    /// The AAC track it makes.
    pub fn track(&self) -> &TrackInfo {
        self.encoder.track()
    }

    /// Encodes silence from where it stopped (the first call: from `until`, the time of
    /// the first picture) to `until` plus one block, which covers the encoder's one
    /// block of delay, and gives the AAC samples that come out.
    pub fn fill(
        &mut self,
        until: Duration,
        captured_at: SystemTime,
    ) -> Result<std::vec::Drain<'_, Sample>, PipelineError> {
        let block = u64::from(AUDIO_FRAME_SAMPLES);
        let until = (until.as_nanos() * u128::from(RATE) / 1_000_000_000) as u64;
        let next = self.next.get_or_insert(until);
        while *next < until + block {
            self.encoder.push(
                silence_frame(RATE, i64::try_from(*next).unwrap_or(i64::MAX)),
                Rational(1, RATE as i32),
                captured_at,
                &mut self.made,
            )?;
            *next += block;
        }
        Ok(self.made.drain(..))
    }
}
