//! CMAF packaging, sans-IO: encoded samples in, init segments, parts (CMAF chunks) and
//! segments out.
//!
//! This module owns the MP4 box layout (written with `mp4-atom`), the codec
//! configuration records (`avcC`, `hvcC`, `esds`) and RFC 6381 `CODECS` strings, and the
//! rules that cut a sample stream into parts and segments. It never touches a clock, a
//! socket, a task or libav: the caller passes the time, which is what lets the
//! segmenter's scenario tests run in microseconds.

pub mod annexb;
pub mod codec;
pub mod fragment;
pub mod init;
mod options;
pub mod segmenter;

use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use codec::{AacConfig, AvcConfig, CodecConfig, HevcConfig};
pub use options::CmafOptions;
pub use segmenter::{Part, Segment, Segmenter, SegmenterConfig, SegmenterError, SegmenterEvent};

/// Track ID of the video track in every rendition's init segment and fragments.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track ID of the audio track, after the video.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Ticks per second of a track's media timeline (the `mdhd` timescale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timescale(pub u32);

impl Timescale {
    /// The 90 kHz clock of MPEG systems and RTP video; every video track uses it.
    pub const VIDEO_90K: Timescale = Timescale(90_000);

    /// Converts `ticks` of this timescale into a [`Duration`].
    pub fn to_duration(self, ticks: u64) -> Duration {
        let secs = ticks / u64::from(self.0);
        let rem = ticks % u64::from(self.0);
        Duration::new(
            secs,
            u32::try_from(rem * 1_000_000_000 / u64::from(self.0)).unwrap_or(0),
        )
    }

    /// Converts a [`Duration`] into ticks of this timescale, rounding down.
    pub fn ticks(self, duration: Duration) -> u64 {
        let nanos = duration.as_nanos() * u128::from(self.0) / 1_000_000_000;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// Rescales `ticks` of this timescale into `other`, rounding down.
    pub fn rescale(self, ticks: u64, other: Timescale) -> u64 {
        let scaled = u128::from(ticks) * u128::from(other.0) / u128::from(self.0);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// Pictures; the track that carries keyframes leads part and segment cuts.
    Video,
    /// Sound; every access unit is independently decodable.
    Audio,
}

/// One track of a rendition, as the init segment describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    /// `track_ID` in `tkhd`/`trex`/`tfhd`; unique within the rendition, never 0.
    pub track_id: u32,
    /// Timescale of every tick count given for this track.
    pub timescale: Timescale,
    /// The codec and its decoder configuration.
    pub codec: CodecConfig,
    /// Nominal duration of one access unit (one frame at the nominal frame rate, or 1024
    /// AAC samples): the duration given to a part's last sample so the part can be
    /// emitted the moment that sample arrives, before the next timestamp is known.
    pub nominal_sample_ticks: u32,
    /// Average bit rate, bits per second, written to `btrt`/`esds` (0 when unknown).
    pub average_bitrate: u32,
}

impl TrackInfo {
    /// Video or audio, from the codec.
    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }
}

/// The RFC 6381 `CODECS` list of a rendition's tracks, as the multivariant playlist
/// gives it.
pub fn codecs(tracks: &[TrackInfo]) -> String {
    tracks
        .iter()
        .map(|t| t.codec.rfc6381())
        .collect::<Vec<_>>()
        .join(",")
}

/// The picture size of a rendition: its first video track's.
pub fn resolution(tracks: &[TrackInfo]) -> Option<(u32, u32)> {
    tracks.iter().find_map(|t| match &t.codec {
        CodecConfig::Avc(AvcConfig { width, height, .. })
        | CodecConfig::Hevc(HevcConfig { width, height, .. }) => {
            Some((u32::from(*width), u32::from(*height)))
        }
        CodecConfig::Aac(_) => None,
    })
}

/// One encoded access unit of one track, ready to be muxed.
#[derive(Clone, PartialEq)]
pub struct Sample {
    /// The track it belongs to.
    pub track_id: u32,
    /// Decode time in the track's timescale; never negative (the pipeline shifts the
    /// timeline so that it starts at or after zero).
    pub decode_ticks: u64,
    /// Presentation time minus decode time, in the track's timescale. Signed: with
    /// B-frames the shifted timeline keeps presentation starting at zero (trun v1).
    pub composition_offset_ticks: i32,
    /// An IDR (video) or any sample of a track where every sample is a sync sample.
    pub keyframe: bool,
    /// The payload as it goes into `mdat`: length-prefixed NAL units (4-byte lengths) or
    /// a raw AAC frame.
    pub data: Bytes,
    /// Wall-clock time at which the source captured (or received) this access unit;
    /// EXT-X-PROGRAM-DATE-TIME is taken from it.
    pub captured_at: SystemTime,
}

impl std::fmt::Debug for Sample {
    // The payload is left out: it is megabytes of noise in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("track_id", &self.track_id)
            .field("decode_ticks", &self.decode_ticks)
            .field("composition_offset_ticks", &self.composition_offset_ticks)
            .field("keyframe", &self.keyframe)
            .field("bytes", &self.data.len())
            .finish()
    }
}
