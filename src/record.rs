//! `mirror record`: the live media path ([`crate::stream::recording`]) with a directory
//! as its sink ([`DirectorySink`]), which writes a presentation that plays while it
//! runs and is finished at the end: `index.m3u8` (the same
//! multivariant playlist a live stream serves), `{rendition}.m3u8` (every segment, its
//! parts, EXT-X-ENDLIST), the init segments, and every part and segment, named as they
//! would be served. Any source a stream plays can be recorded, an RTSP camera too.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;
use crate::ingest::SourceSpec;
use crate::llhls::live::MediaNames;
use crate::stream::StreamError;
use crate::stream::recording;
use crate::stream::sink::{DirectorySink, SinkError};

/// File names inside the output directory.
pub mod names {
    /// The multivariant playlist.
    pub const MULTIVARIANT: &str = "index.m3u8";
    /// The media playlist of a recording without a ladder.
    pub const MEDIA: &str = "video.m3u8";
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The source, an encoder or the media path failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] SinkError),
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Directory to write into (created if missing).
    pub out_dir: PathBuf,
    /// Media duration to record.
    pub duration: Duration,
    /// Run the source at real time (as live); false produces media as fast as it encodes.
    pub realtime: bool,
    /// What to record.
    pub source: SourceSpec,
}

/// What was recorded (of the first rendition, the only one without a ladder).
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// Segments written.
    pub segments: usize,
    /// Parts written.
    pub parts: usize,
    /// Total media duration of the segments.
    pub duration: Duration,
    /// The rendition's CODECS string.
    pub codecs: String,
    /// PART-TARGET the parts kept.
    pub part_target: Duration,
    /// Samples the segmenter refused (logged one by one).
    pub refused_samples: usize,
    /// The names its media files have.
    pub names: MediaNames,
}

/// A recording keeps every segment in its playlist.
const EVERY_SEGMENT: usize = usize::MAX / 2;

/// Records `options.source` per `settings` into `options.out_dir`.
pub fn record(settings: &Settings, options: &RecordOptions) -> Result<RecordSummary, RecordError> {
    let dir = options.out_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| SinkError {
        path: dir.clone(),
        source,
    })?;
    let mut stream_options = settings.stream_options();
    stream_options.window_segments = EVERY_SEGMENT;
    // The sink writes the playlists and init segments after every segment and once
    // finished, so the directory plays while the recording runs.
    let recorded = recording::record(
        &options.source,
        &[],
        &stream_options,
        options.duration,
        options.realtime,
        Box::new(DirectorySink::new(dir)),
    )?;
    let first = recorded
        .renditions
        .first()
        .expect("a stream has at least one rendition");
    let segments = &first.playlist.segments;
    Ok(RecordSummary {
        segments: segments.len(),
        parts: segments.iter().map(|s| s.parts.len()).sum(),
        duration: segments.iter().map(|s| s.duration).sum(),
        codecs: crate::cmaf::codecs(&first.tracks),
        part_target: first.playlist.part_target,
        refused_samples: usize::try_from(recorded.refused_samples).unwrap_or(usize::MAX),
        names: first.names.clone(),
    })
}
