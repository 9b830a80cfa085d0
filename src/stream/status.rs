//! What a stream is doing, for `/streams` and the logs. Written by the media thread,
//! read by the handler; it imports nothing but the jitter buffer's fill type.

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
}
