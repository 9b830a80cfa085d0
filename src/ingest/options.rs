//! `[source]`: how sources are opened and watched. Owned here, parsed by the
//! configuration; this file imports nothing outside `ingest`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::RtspTransport;

/// `[source]`: the built-in test pattern (libav's `testsrc2` and `sine`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOptions {
    /// Picture width in pixels, even. Default 1280. No effect on latency beyond encode time.
    pub width: u32,
    /// Picture height in pixels, even. Default 720.
    pub height: u32,
    /// Frames per second. Default 30. Parts hold whole frames, so the frame rate bounds
    /// how finely PART-TARGET can be kept (one frame is 33 ms at 30 fps).
    pub fps: u32,
    /// Tone frequency in Hz. Default 1000.
    pub tone_hz: u32,
    /// Audio sampling rate in Hz. Default 48000.
    pub sample_rate: u32,
    /// Draw the capture wall clock (UTC, milliseconds) on the picture. Default true; it is
    /// what glass-to-glass latency is read from.
    pub clock_overlay: bool,
    /// Font for the clock. Default DejaVu Sans Mono Bold from Debian's fonts-dejavu-core;
    /// when the file is missing, fontconfig's default font is used.
    pub font_file: PathBuf,
    /// RTP transport of an RTSP source: "tcp" (default, interleaved) or "udp".
    pub rtsp_transport: RtspTransport,
    /// Samples the jitter buffer of a network source holds (video frames and audio
    /// frames together). Default 512, about 5 s of 30 fps video with AAC. It only fills
    /// when the media thread falls behind; when full, the oldest GOP is dropped.
    pub jitter_buffer_samples: usize,
    /// The watchdog: a source that delivers nothing for this many milliseconds is
    /// restarted (with backoff). Default 0: three PART-TARGETs for an RTSP source, and
    /// 2 s as libav's read timeout for `srt://`, `udp://`, `http(s)://` … sources (whose
    /// open probes the stream first). Encoders that take frames and give nothing back
    /// for this long (at least 2 s) are restarted the same way.
    pub stall_timeout_ms: u32,
    /// Opening a source (connect, handshake, probing the stream) must finish within
    /// this many milliseconds, or it is abandoned and retried with backoff. Default
    /// 10000. A source that listens for a sender (`srt://…?mode=listener`, `udp://`,
    /// `rtp://`) waits as long as it takes, its state `waiting`.
    pub open_timeout_ms: u32,
    /// A jump in a network source's timestamps of more than this many milliseconds,
    /// forward or back, is a discontinuity: the source is reopened and the playlist
    /// marks EXT-X-DISCONTINUITY, instead of a gap filled with copies of a frame (or
    /// every later frame dropped). Default 0: three segment targets.
    pub max_timestamp_gap_ms: u32,
    /// What the playlists list while a source is down: `"discontinuity"` (default:
    /// nothing, then EXT-X-DISCONTINUITY when it is back), `"gap"` (RFC 8216bis
    /// 6.2.1: the timeline goes on with EXT-X-GAP segments and GAP=YES parts, so
    /// players keep reloading and resume on the same timeline, without a
    /// discontinuity) or `"slate"` (a still card with silence, encoded into every
    /// rendition between two discontinuities: for players that do not skip gaps).
    pub outage: OutageFill,
    /// The longest outage `outage = "gap"` or `"slate"` fills, in milliseconds; after
    /// that the playlists stop and the source's return is a discontinuity. Default
    /// 10000.
    pub outage_max_ms: u32,
}

/// `source.outage`: what fills the timeline while a source is down.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OutageFill {
    /// Nothing: the playlists stop, and the source's return is a discontinuity.
    #[default]
    Discontinuity,
    /// EXT-X-GAP segments and GAP=YES parts for the time without media.
    Gap,
    /// A slate (a still card and silence) encoded into every rendition, after an
    /// EXT-X-DISCONTINUITY, and another when the source is back: every player plays
    /// on, and the source is reopened meanwhile.
    Slate,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            tone_hz: 1000,
            sample_rate: 48_000,
            clock_overlay: true,
            font_file: PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"),
            rtsp_transport: RtspTransport::Tcp,
            jitter_buffer_samples: 512,
            stall_timeout_ms: 0,
            open_timeout_ms: 10_000,
            max_timestamp_gap_ms: 0,
            outage: OutageFill::Discontinuity,
            outage_max_ms: 10_000,
        }
    }
}

impl SourceOptions {
    /// The watchdog's limit: how long a source may deliver nothing before it is
    /// restarted; `part_target` gives the default (three of them).
    pub fn stall_timeout(&self, part_target: Duration) -> Duration {
        match self.stall_timeout_ms {
            0 => part_target * 3,
            ms => Duration::from_millis(u64::from(ms)),
        }
    }

    /// `open_timeout_ms`.
    pub fn open_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.open_timeout_ms))
    }

    /// The longest outage that gap segments list, when they are on.
    pub fn outage_gap(&self) -> Option<Duration> {
        (self.outage == OutageFill::Gap).then(|| self.outage_max())
    }

    /// The longest outage a slate fills, when it is on.
    pub fn outage_slate(&self) -> Option<Duration> {
        (self.outage == OutageFill::Slate).then(|| self.outage_max())
    }

    fn outage_max(&self) -> Duration {
        Duration::from_millis(u64::from(self.outage_max_ms))
    }

    /// The largest timestamp jump that is not a discontinuity; `segment_target` gives
    /// the default (three of them).
    pub fn max_timestamp_gap(&self, segment_target: Duration) -> Duration {
        match self.max_timestamp_gap_ms {
            0 => segment_target * 3,
            ms => Duration::from_millis(u64::from(ms)),
        }
    }
}
