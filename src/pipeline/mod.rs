//! The encoder pipeline: raw frames from [`crate::ingest`] in, [`cmaf::Sample`]s out.
//!
//! This module owns libav encoding: opening the encoders, timestamps (each track's own
//! timescale, decode times shifted to start at or after zero, durations left to the
//! segmenter because libav leaves packet durations at 0), forced keyframes at segment
//! boundaries, and the Annex B → length-prefixed conversion. Nothing downstream of it
//! knows libav.

mod encode;
mod ffi;

use ffmpeg_next as ffmpeg;

use crate::cmaf::{Sample, TrackInfo};
use crate::config::Settings;
use crate::ingest::{RawMedia, SourceFormat, SourceFrame};

pub use encode::{AudioEncoder, VideoEncoder};

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The encoder is not in this libav build.
    #[error("encoder {0} is not available in this libav build")]
    EncoderMissing(&'static str),
    /// libav refused an operation.
    #[error("{encoder}: {what}: {error}")]
    Libav {
        /// Which encoder.
        encoder: &'static str,
        /// What was being done.
        what: &'static str,
        /// libav's error.
        error: ffmpeg::Error,
    },
    /// A frame does not match what the encoder was opened for (a source bug; libav would
    /// read past the frame's buffers).
    #[error("{encoder}: frame refused: {reason}")]
    FrameMismatch {
        /// Which encoder.
        encoder: &'static str,
        /// What differs.
        reason: String,
    },
    /// The encoder produced a configuration that cannot be described in `avcC`/`esds`.
    #[error("{encoder}: {error}")]
    Codec {
        /// Which encoder.
        encoder: &'static str,
        /// What is wrong with its output.
        error: crate::cmaf::codec::CodecError,
    },
}

/// Track IDs within a rendition: video first, audio second.
pub const VIDEO_TRACK_ID: u32 = 1;
/// See [`VIDEO_TRACK_ID`].
pub const AUDIO_TRACK_ID: u32 = 2;

/// Encodes one rendition (video + audio) from raw frames.
pub struct Transcoder {
    video: VideoEncoder,
    audio: AudioEncoder,
    tracks: Vec<TrackInfo>,
}

impl Transcoder {
    /// Opens both encoders for frames of `format`.
    pub fn open(settings: &Settings, format: SourceFormat) -> Result<Self, PipelineError> {
        crate::ingest::init_libav().map_err(|error| PipelineError::Libav {
            encoder: "libav",
            what: "initialising",
            error,
        })?;
        let video = VideoEncoder::open(settings, format)?;
        let audio = AudioEncoder::open(settings, format)?;
        let tracks = vec![video.track().clone(), audio.track().clone()];
        Ok(Self {
            video,
            audio,
            tracks,
        })
    }

    /// The rendition's tracks (for the init segment and the segmenter).
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// Encodes one frame; whatever packets the encoders release are appended to `out`.
    pub fn push(&mut self, frame: SourceFrame, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        match frame.media {
            RawMedia::Video(v) => self.video.push(v, frame.time_base, frame.captured_at, out),
            RawMedia::Audio(a) => self.audio.push(a, frame.time_base, frame.captured_at, out),
        }
    }

    /// Drains both encoders at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        self.video.finish(out)?;
        self.audio.finish(out)
    }
}
