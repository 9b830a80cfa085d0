//! What a stream is doing, for `/streams` and the logs ([`StreamStatus`]), and the
//! counts the media thread keeps as it goes, read by `/metrics` at each scrape
//! ([`StreamCounters`], [`RenditionCounters`]: plain atomics, so the media path pays a
//! relaxed add per sample and knows nothing of the metrics). Written by the media
//! thread, read by the handler; it imports nothing but the jitter buffer's fill type.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ingest::jitter::JitterFill;

/// Where a stream's source is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Not opened yet.
    #[default]
    Starting,
    /// Being opened: connecting, handshaking, probing (within the open timeout).
    Opening,
    /// Listening for a sender to connect or send (SRT listener, UDP, RTP).
    Waiting,
    /// Delivering media.
    Live,
    /// Failed; being reopened with backoff.
    Retrying,
}

impl SourceState {
    /// Every state, in the order of its life.
    pub const ALL: [SourceState; 5] = [
        SourceState::Starting,
        SourceState::Opening,
        SourceState::Waiting,
        SourceState::Live,
        SourceState::Retrying,
    ];

    /// As `/streams`, the logs and `/metrics` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Opening => "opening",
            SourceState::Waiting => "waiting",
            SourceState::Live => "live",
            SourceState::Retrying => "retrying",
        }
    }
}

/// How the renditions of a stream are made, once its source is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StreamMode {
    /// Every rendition carries the source's own samples.
    #[serde(rename = "passthrough")]
    Passthrough,
    /// Every rendition is encoded by Mirror.
    #[serde(rename = "transcode")]
    Transcode,
    /// Some of each (an encoded source with a ladder).
    #[serde(rename = "passthrough+transcode")]
    Mixed,
}

impl StreamMode {
    /// As `/streams` and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Passthrough => "passthrough",
            StreamMode::Transcode => "transcode",
            StreamMode::Mixed => "passthrough+transcode",
        }
    }
}

/// What a stream is doing.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStatus {
    /// `starting`, `opening`, `waiting`, `live` or `retrying`.
    pub state: SourceState,
    /// How its renditions are made, once the source is open.
    pub mode: Option<StreamMode>,
    /// The last failure of the source or the pipeline (credentials redacted).
    pub last_error: Option<String>,
    /// How many times the source was restarted.
    pub restarts: u64,
    /// How many of those restarts followed a panic on the media path.
    pub panics: u64,
    /// The source's jitter buffer, for network sources.
    pub jitter_buffer: Option<JitterFill>,
    /// Who publishes it, for a stream encoders push to (while one does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<crate::ingest::push::PublisherInfo>,
    /// What fills the playlists while the source is down (`source.outage`): `gap` or
    /// `slate`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filling: Option<&'static str>,
}

/// What a stream's source delivered, counted by its media thread.
#[derive(Debug, Default)]
pub struct StreamCounters {
    source_bytes: AtomicU64,
}

impl StreamCounters {
    /// `bytes` more of encoded media came in from the source.
    pub fn received(&self, bytes: u64) {
        self.source_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of encoded media the source delivered since the stream started (network
    /// sources; a test pattern or a file read through a filter graph counts none).
    pub fn source_bytes(&self) -> u64 {
        self.source_bytes.load(Ordering::Relaxed)
    }
}

/// What went into one rendition, counted by its stream's media thread.
#[derive(Debug, Default)]
pub struct RenditionCounters {
    media_bytes: AtomicU64,
    video_frames: AtomicU64,
    encoder_queue: AtomicU64,
}

impl RenditionCounters {
    /// Its segmenter took a sample of `bytes`, a video frame when `video`.
    pub fn took(&self, bytes: usize, video: bool) {
        self.media_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if video {
            self.video_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its video encoder holds `frames` frames it has not put out yet.
    pub fn set_encoder_queue(&self, frames: usize) {
        self.encoder_queue.store(frames as u64, Ordering::Relaxed);
    }

    /// Bytes of the samples its segmenter took: its bitrate in.
    pub fn media_bytes(&self) -> u64 {
        self.media_bytes.load(Ordering::Relaxed)
    }

    /// Video frames its segmenter took, encoded by Mirror or passed through.
    pub fn video_frames(&self) -> u64 {
        self.video_frames.load(Ordering::Relaxed)
    }

    /// Frames its video encoder holds now (0 when it passes the source through).
    pub fn encoder_queue(&self) -> u64 {
        self.encoder_queue.load(Ordering::Relaxed)
    }
}
