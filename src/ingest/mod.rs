//! Ingest: where live media comes from. Each source yields frames in its own timescale
//! with the wall-clock time they were captured, at the pace a live source has.
//!
//! This module owns opening and pacing sources and their options ([`SourceOptions`]);
//! it does not encode (that is [`crate::pipeline`], which it never imports), hands
//! encoded sources' access units on as [`Sample`]s with their [`TrackInfo`], and knows
//! nothing of playlists, streams or HTTP.

pub mod deadline;
pub mod file;
pub mod jitter;
pub(crate) mod lavfi;
mod options;
pub mod push;
pub mod redact;
pub mod rtsp;
pub mod slate;
mod startup;
pub mod testsrc;
pub mod url;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ffmpeg_next as ffmpeg;

pub use file::FileSource;
pub use options::{OutageFill, SourceOptions};
pub use rtsp::{RtspSource, RtspTransport};
pub use testsrc::TestPattern;
pub use url::UrlSource;

use crate::cmaf::{Sample, TrackInfo};

/// The `source` of a stream encoders push to.
pub const PUBLISH: &str = "publish";

/// Which source a stream plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The built-in test pattern.
    TestPattern,
    /// A file, looped as live.
    File(PathBuf),
    /// An RTSP camera or server (`rtsp://[user:password@]host[:port]/path`), passed
    /// through.
    Rtsp(String),
    /// A network source libav opens (`srt://`, `udp://`, `rtmp://`, `http(s)://`, …),
    /// decoded and encoded.
    Url(String),
    /// `publish`: an encoder pushes to Mirror with the stream's publish key (RTMP),
    /// passed through.
    Publish,
}

/// An opened source: raw frames to encode, or encoded samples to pass through.
pub enum OpenedSource {
    /// Decoded frames (test pattern, files).
    Raw(Box<dyn Source + Send>),
    /// Encoded samples (RTSP).
    Encoded(Box<dyn EncodedSource + Send>),
}

impl SourceSpec {
    /// The setting this was parsed from, secrets and all (never logged: `Display`
    /// redacts).
    pub fn to_string_unredacted(&self) -> String {
        match self {
            SourceSpec::TestPattern => "testsrc".into(),
            SourceSpec::File(path) => path.display().to_string(),
            SourceSpec::Rtsp(url) | SourceSpec::Url(url) => url.clone(),
            SourceSpec::Publish => PUBLISH.into(),
        }
    }

    /// Whether its samples are passed through as they come (its own keyframes make the
    /// segments), rather than decoded.
    pub fn is_passthrough(&self) -> bool {
        matches!(self, SourceSpec::Rtsp(_) | SourceSpec::Publish)
    }

    /// Parses a `source` setting: `testsrc` is the test pattern, `publish` a stream
    /// encoders push to, `rtsp://…` an RTSP
    /// source, `srt://`, `udp://`, `rtmp://`, `http(s)://` … a libav network source;
    /// anything else names a file.
    pub fn parse(text: &str) -> Self {
        if text == "testsrc" {
            SourceSpec::TestPattern
        } else if text == PUBLISH {
            SourceSpec::Publish
        } else if text.starts_with("rtsp://") || text.starts_with("rtsps://") {
            SourceSpec::Rtsp(text.to_string())
        } else if url::is_url(text) {
            SourceSpec::Url(text.to_string())
        } else {
            SourceSpec::File(PathBuf::from(text))
        }
    }

    /// Opens a source of raw frames; `realtime` paces it as live. An encoded source is
    /// refused (its samples are never decoded).
    pub fn open(
        &self,
        options: &SourceOptions,
        realtime: bool,
    ) -> Result<Box<dyn Source + Send>, IngestError> {
        match self.open_any(options, realtime, &OpenLimits::default())? {
            OpenedSource::Raw(source) => Ok(source),
            OpenedSource::Encoded(_) => Err(IngestError::Unsupported {
                source_name: self.to_string(),
                reason: "this source is passed through, not decoded".into(),
            }),
        }
    }

    /// Whether the source waits for a sender to come to it (a listener), rather than
    /// going to get its media: such a source is `waiting`, without an open timeout.
    pub fn listens(&self) -> bool {
        match self {
            SourceSpec::Url(url) => url::listens(url),
            SourceSpec::Publish => true,
            _ => false,
        }
    }

    /// Opens the source, whichever kind it is, within `limits`.
    pub fn open_any(
        &self,
        options: &SourceOptions,
        realtime: bool,
        limits: &OpenLimits,
    ) -> Result<OpenedSource, IngestError> {
        Ok(match self {
            SourceSpec::TestPattern => {
                OpenedSource::Raw(Box::new(TestPattern::open(options, realtime)?))
            }
            SourceSpec::File(path) => {
                OpenedSource::Raw(Box::new(FileSource::open(path, true, realtime)?))
            }
            SourceSpec::Rtsp(url) => OpenedSource::Encoded(Box::new(RtspSource::open(
                url,
                options.rtsp_transport,
                options.jitter_buffer_samples,
            )?)),
            SourceSpec::Url(url) => {
                let timeout = (options.stall_timeout_ms > 0)
                    .then(|| Duration::from_millis(u64::from(options.stall_timeout_ms)));
                OpenedSource::Raw(Box::new(UrlSource::open(url, timeout, limits)?))
            }
            SourceSpec::Publish => {
                let point = limits
                    .publish
                    .as_ref()
                    .ok_or_else(|| IngestError::Unsupported {
                        source_name: PUBLISH.into(),
                        reason: "no push listener runs ([push] rtmp_listen)".into(),
                    })?;
                OpenedSource::Encoded(Box::new(push::PushSource::open(
                    &point.points,
                    &point.stream,
                    &limits.stop,
                )?))
            }
        })
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::TestPattern => f.write_str("testsrc"),
            SourceSpec::File(path) => write!(f, "{}", path.display()),
            SourceSpec::Rtsp(url) | SourceSpec::Url(url) => f.write_str(&redact::redact(url)),
            SourceSpec::Publish => f.write_str(PUBLISH),
        }
    }
}

/// When a source being opened, or read, gives up: set by the stream that opens it.
#[derive(Debug, Clone)]
pub struct OpenLimits {
    /// Set when the stream stops: any blocking call of the source ends at once.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How long an open may take (a listener waits without limit).
    pub open_timeout: Duration,
    /// The largest timestamp jump that is not a discontinuity.
    pub max_gap: Duration,
    /// Where a `publish` source meets its publishers.
    pub publish: Option<PublishPoint>,
}

/// A `publish` stream's place among the server's [`push::PushPoints`].
#[derive(Debug, Clone)]
pub struct PublishPoint {
    /// The server's meeting place.
    pub points: std::sync::Arc<push::PushPoints>,
    /// The stream's name there.
    pub stream: String,
}

impl Default for OpenLimits {
    fn default() -> Self {
        Self {
            stop: std::sync::Arc::default(),
            open_timeout: Duration::from_secs(10),
            max_gap: Duration::from_secs(3),
            publish: None,
        }
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
    /// A network source failed (connection refused, timed out, session ended).
    #[error("{source_name}: {reason}")]
    Network {
        /// The source, as configured (without its password).
        source_name: String,
        /// What happened.
        reason: String,
    },
    /// The source delivered nothing for `after` (the watchdog).
    #[error("{source_name}: no media for {after:?}")]
    Stalled {
        /// The source, as configured.
        source_name: String,
        /// How long it was silent.
        after: Duration,
    },
    /// The source's timestamps jumped: a discontinuity, so it is reopened.
    #[error("{source_name}: timestamps jumped {jump}; reopening as a discontinuity")]
    TimestampJump {
        /// The source, as configured.
        source_name: String,
        /// Which way and how far.
        jump: String,
    },
    /// The source cannot be played.
    #[error("{source_name}: {reason}")]
    Unsupported {
        /// The source, as configured.
        source_name: String,
        /// Why.
        reason: String,
    },
}

impl IngestError {
    /// Wraps libav's error with the source and what was being done.
    pub(crate) fn libav(
        source_name: &str,
        what: &'static str,
    ) -> impl FnOnce(ffmpeg::Error) -> IngestError + use<> {
        let source_name = source_name.to_string();
        move |error| IngestError::Libav {
            source_name,
            what,
            error,
        }
    }
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
    /// Bytes of encoded media read since the last call, for sources that read packets
    /// (a URL or a pushed stream); a generated picture or a filter graph reads none.
    fn take_bytes_read(&mut self) -> u64 {
        0
    }
}

/// Sound in a codec HLS players cannot all play, which the stream transcodes to AAC:
/// its samples come with the audio track's id but are not in the source's tracks, their
/// decode times in ticks of [`rate`](Self::rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignAudio {
    /// A camera's G.711 at its RTP clock rate: mono, a byte a sample.
    G711(G711, u32),
    /// A WebRTC publisher's Opus (RFC 7587: always a 48 kHz clock).
    Opus,
}

impl ForeignAudio {
    /// The clock its decode times count.
    pub fn rate(self) -> u32 {
        match self {
            ForeignAudio::G711(_, rate) => rate,
            ForeignAudio::Opus => 48_000,
        }
    }

    /// How many ticks of [`rate`](Self::rate) `packet` lasts.
    pub fn duration_of(self, packet: &[u8]) -> u64 {
        match self {
            ForeignAudio::G711(..) => packet.len() as u64,
            ForeignAudio::Opus => opus_samples(packet),
        }
    }
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 3.1); 0 for an
/// empty packet or one that claims more than 120 ms.
pub fn opus_samples(packet: &[u8]) -> u64 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    // Frame sizes in 1/400 s (2.5 ms): SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT
    // 2.5/5/10/20 ms.
    let quarter_ms_units: u64 = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |&b| u64::from(b & 0x3f)),
    };
    // 2.5 ms at 48 kHz is 120 samples; a packet holds at most 120 ms (3.2.5).
    let samples = frames * quarter_ms_units * 120;
    if samples > MAX_OPUS_PACKET_SAMPLES {
        0
    } else {
        samples
    }
}

/// The most an Opus packet may hold: 120 ms at 48 kHz (RFC 6716 3.2.5).
pub const MAX_OPUS_PACKET_SAMPLES: u64 = 5760;

/// The G.711 companding law of a camera's sound, which HLS cannot carry: it is
/// transcoded to AAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    /// PCMU (North America, Japan).
    MuLaw,
    /// PCMA (elsewhere).
    ALaw,
}

/// A live source of encoded samples, for passthrough: they go to the segmenter as
/// they are, with the source's own keyframes.
pub trait EncodedSource {
    /// The rendition's tracks (video first, then audio), with the source's parameter
    /// sets.
    fn tracks(&self) -> &[TrackInfo];
    /// The source's keyframe interval, as measured at open: passthrough segments follow
    /// it.
    fn keyframe_interval(&self) -> Duration;
    /// Nominal frame rate (frames per second as a fraction), when known.
    fn frame_rate(&self) -> Option<(u32, u32)>;
    /// The next sample, waiting at most `timeout` ([`IngestError::Stalled`] after).
    fn next_sample(&mut self, timeout: Duration) -> Result<Sample, IngestError>;
    /// How full the source's jitter buffer is, if it has one.
    fn buffer_fill(&self) -> Option<jitter::JitterFill>;
    /// Sound that must be transcoded to AAC. Its samples come with the audio track's
    /// id but are not in [`tracks`](Self::tracks).
    fn foreign_audio(&self) -> Option<ForeignAudio> {
        None
    }
    /// Who publishes it, for a source an encoder pushes to.
    fn publisher(&self) -> Option<push::PublisherInfo> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opus_packet_lasts_what_its_toc_byte_says() {
        // Chromium's usual packet: hybrid, full band, 20 ms, one frame.
        assert_eq!(opus_samples(&[0x78, 0x01]), 960);
        // CELT 20 ms, two frames (code 1), then 2.5 ms (config 16).
        assert_eq!(opus_samples(&[0xfd]), 1920);
        assert_eq!(opus_samples(&[0x80]), 120);
        // SILK 60 ms.
        assert_eq!(opus_samples(&[0x18]), 2880);
        // Code 3: the frame count is in the next byte; six 20 ms frames are the most.
        assert_eq!(opus_samples(&[0xfb, 0x06]), 5760);
        assert_eq!(opus_samples(&[0xfb, 0x07]), 0, "more than 120 ms");
        assert_eq!(opus_samples(&[0xfb]), 0, "no frame count");
        assert_eq!(opus_samples(&[]), 0);
        assert_eq!(ForeignAudio::Opus.duration_of(&[0x78]), 960);
        assert_eq!(
            ForeignAudio::G711(G711::MuLaw, 8000).duration_of(&[0; 160]),
            160
        );
    }
}
