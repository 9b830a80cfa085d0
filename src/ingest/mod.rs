//! Ingest: where live media comes from. Each source yields frames in its own timescale
//! with the wall-clock time they were captured, at the pace a live source has.
//!
//! This module owns opening and pacing sources; it does not encode (that is
//! [`crate::pipeline`]) and knows nothing of CMAF or HTTP.

pub mod file;
mod lavfi;
pub mod testsrc;

use std::path::PathBuf;
use std::time::SystemTime;

use ffmpeg_next as ffmpeg;

pub use file::FileSource;
pub use testsrc::TestPattern;

use crate::config::SourceSettings;

/// Which source a stream plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in test pattern.
    TestPattern,
    /// A file, looped as live.
    File(PathBuf),
}

impl SourceSpec {
    /// `testsrc` is the test pattern; anything else names a file.
    pub fn parse(text: &str) -> Self {
        if text == "testsrc" {
            SourceSpec::TestPattern
        } else {
            SourceSpec::File(PathBuf::from(text))
        }
    }

    /// Opens the source; `realtime` paces it as live.
    pub fn open(
        &self,
        settings: &SourceSettings,
        realtime: bool,
    ) -> Result<Box<dyn Source + Send>, IngestError> {
        Ok(match self {
            SourceSpec::TestPattern => Box::new(TestPattern::open(settings, realtime)?),
            SourceSpec::File(path) => Box::new(FileSource::open(path, true, realtime)?),
        })
    }
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// libav could not be initialised or a filter graph not built.
    #[error("{source_name}: {what}: {error}")]
    Libav {
        /// The source, as configured.
        source_name: String,
        /// What was being done.
        what: &'static str,
        /// libav's error.
        error: ffmpeg::Error,
    },
    /// The source has ended (files only; live sources never end on their own).
    #[error("{0}: end of stream")]
    Ended(String),
    /// The source cannot be played.
    #[error("{source_name}: {reason}")]
    Unsupported {
        /// The source, as configured.
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// Raw (decoded) media as a source delivers it.
pub enum RawMedia {
    /// A picture; its `pts` is in [`SourceFrame::time_base`].
    Video(ffmpeg::frame::Video),
    /// A block of audio samples; its `pts` is in [`SourceFrame::time_base`].
    Audio(ffmpeg::frame::Audio),
}

/// One frame from a source, with its capture time.
pub struct SourceFrame {
    /// The media.
    pub media: RawMedia,
    /// Time base of the frame's `pts`.
    pub time_base: ffmpeg::Rational,
    /// Wall-clock capture time.
    pub captured_at: SystemTime,
}

/// The formats a source delivers, for the encoders to be opened with.
#[derive(Debug, Clone, Copy)]
pub struct SourceFormat {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Nominal frame rate (frames per second, as a fraction).
    pub frame_rate: ffmpeg::Rational,
    /// Time base of video `pts`.
    pub video_time_base: ffmpeg::Rational,
    /// Audio sampling rate in Hz.
    pub sample_rate: u32,
    /// Time base of audio `pts`.
    pub audio_time_base: ffmpeg::Rational,
}

/// A live source of raw frames.
pub trait Source {
    /// What it delivers.
    fn format(&self) -> SourceFormat;
    /// The next frame, blocking until a live source has it.
    fn next_frame(&mut self) -> Result<SourceFrame, IngestError>;
}

/// Initialises libav once per process and routes its log to ours at warning level.
pub fn init_libav() -> Result<(), ffmpeg::Error> {
    static INIT: std::sync::OnceLock<Result<(), ffmpeg::Error>> = std::sync::OnceLock::new();
    *INIT.get_or_init(|| {
        ffmpeg::init()?;
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
        Ok(())
    })
}
