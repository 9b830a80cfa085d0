//! The encoder pipeline: raw frames from [`crate::ingest`] in, [`cmaf::Sample`]s out,
//! for one rendition or a ladder of them.
//!
//! This module owns libav encoding: opening the encoders, timestamps (each track's own
//! timescale, decode times shifted to start at or after zero, durations left to the
//! segmenter because libav leaves packet durations at 0), forced keyframes at segment
//! boundaries, and the Annex B → length-prefixed conversion. Nothing downstream of it
//! knows libav.

pub mod decode;
mod encode;
mod options;
pub mod plan;
pub mod select;
pub mod silence;

use ffmpeg_next as ffmpeg;

use crate::cmaf::{Sample, TrackInfo};
use crate::ingest::{RawMedia, SourceFormat, SourceFrame};

pub use decode::SampleDecoder;
pub use encode::{AudioEncoder, VideoEncoder, VideoProfile};
pub use options::EncoderOptions;
pub use plan::{
    DEFAULT_RENDITION, PlannedRendition, RenditionCodec, RenditionPlan, RenditionProfile,
    RenditionSpec, plan_renditions,
};

/// Where the video encoders put keyframes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyframes {
    /// One every `frames` frames: Mirror's own GOP, one per segment target.
    Every {
        /// Frames between keyframes.
        frames: u32,
    },
    /// Wherever the decoded source has one (a camera's GOP), so that transcoded
    /// renditions switch with a passed-through one; `gop_frames` is the source's GOP.
    FollowSource {
        /// The source's keyframe interval in frames.
        gop_frames: u32,
    },
}
pub use select::{EncoderChoice, EncoderId, ProbeError, select_encoder};

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

/// Encodes a ladder of renditions from raw frames: every picture goes to each
/// rendition's video encoder (scaled to its size), the sound is encoded once and shared
/// by all, so every rendition carries the same audio samples.
pub struct Transcoder {
    video: Vec<VideoEncoder>,
    /// `None` when the renditions carry the source's own audio samples.
    audio: Option<AudioEncoder>,
    tracks: Vec<Vec<TrackInfo>>,
    scratch: Vec<Sample>,
}

impl Transcoder {
    /// Opens one video encoder per profile, and the audio encoder unless
    /// `encode_audio` is false (the renditions then carry the source's encoded audio,
    /// which the caller adds), for frames of `format`. With [`Keyframes::Every`] the
    /// keyframes fall at the same frames in every rendition.
    pub fn open(
        options: &EncoderOptions,
        format: SourceFormat,
        profiles: &[VideoProfile],
        keyframes: Keyframes,
        encode_audio: bool,
    ) -> Result<Self, PipelineError> {
        crate::libav::init().map_err(|error| PipelineError::Libav {
            encoder: "libav",
            what: "initialising",
            error,
        })?;
        let fps = format.frame_rate;
        let video = profiles
            .iter()
            .map(|p| match keyframes {
                Keyframes::Every { frames } => VideoEncoder::open(p, options, fps, frames),
                // The encoder's own interval well past the source's, so that only the
                // forced keyframes (the source's) make IDRs.
                Keyframes::FollowSource { gop_frames } => {
                    VideoEncoder::open_following(p, options, fps, gop_frames.saturating_mul(4))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let audio = if encode_audio {
            Some(AudioEncoder::open(options, format)?)
        } else {
            None
        };
        let tracks = video
            .iter()
            .map(|v| {
                std::iter::once(v.track().clone())
                    .chain(audio.as_ref().map(|a| a.track().clone()))
                    .collect()
            })
            .collect();
        Ok(Self {
            video,
            audio,
            tracks,
            scratch: Vec::new(),
        })
    }

    /// The tracks of rendition `index` (for its init segment and segmenter).
    pub fn tracks(&self, index: usize) -> &[TrackInfo] {
        &self.tracks[index]
    }

    /// Frames each rendition's video encoder holds, not yet put out (its queue).
    pub fn frames_held(&self) -> impl Iterator<Item = usize> + '_ {
        self.video.iter().map(VideoEncoder::frames_held)
    }

    /// Encodes one frame; whatever samples the encoders release are appended to `out`
    /// with the index of the rendition they belong to.
    pub fn push(
        &mut self,
        frame: SourceFrame,
        out: &mut Vec<(usize, Sample)>,
    ) -> Result<(), PipelineError> {
        match frame.media {
            RawMedia::Video(v) => {
                for (index, encoder) in self.video.iter_mut().enumerate() {
                    encoder.push(&v, frame.time_base, frame.captured_at, &mut self.scratch)?;
                    out.extend(self.scratch.drain(..).map(|s| (index, s)));
                }
                Ok(())
            }
            RawMedia::Audio(a) => {
                if let Some(audio) = self.audio.as_mut() {
                    audio.push(a, frame.time_base, frame.captured_at, &mut self.scratch)?;
                    self.share_audio(out);
                }
                Ok(())
            }
        }
    }

    fn share_audio(&mut self, out: &mut Vec<(usize, Sample)>) {
        for sample in self.scratch.drain(..) {
            for index in 1..self.video.len() {
                out.push((index, sample.clone()));
            }
            out.push((0, sample));
        }
    }

    /// Drains every encoder at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<(usize, Sample)>) -> Result<(), PipelineError> {
        for (index, encoder) in self.video.iter_mut().enumerate() {
            encoder.finish(&mut self.scratch)?;
            out.extend(self.scratch.drain(..).map(|s| (index, s)));
        }
        if let Some(audio) = self.audio.as_mut() {
            audio.finish(&mut self.scratch)?;
            self.share_audio(out);
        }
        Ok(())
    }
}
