//! The rendition plan: each configured rendition decided once as passthrough (the
//! source's own samples) or transcode (which encoder, what size and rate), and the
//! typed [`RenditionProfile`] of everything that shapes a rendition's bytes, whose hash
//! goes into its media names so that a changed profile never names (and a cache never
//! serves) media made with the old one.
//!
//! It imports the encoder probe and the option types of this module; nothing of
//! ingest, streams or HTTP.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Deserialize;

use super::{EncoderChoice, EncoderId, EncoderOptions, Keyframes, ProbeError, select_encoder};
use crate::cmaf::codec::VideoCodec;

/// Name of the rendition of a stream configured without renditions; its media
/// playlist is `video.m3u8`.
pub const DEFAULT_RENDITION: &str = "video";

/// What a rendition's video is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionCodec {
    /// The source's own samples, untouched (RTSP sources).
    Copy,
    /// Encoded to H.264.
    #[default]
    H264,
    /// Encoded to H.265.
    H265,
}

/// `[[streams.renditions]]`: one rendition of a ladder.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RenditionSpec {
    /// Its media playlist is `{name}.m3u8`. Letters, digits, `-` and `_`.
    pub name: String,
    /// "copy", "h264" (default) or "h265".
    #[serde(default)]
    pub codec: RenditionCodec,
    /// Picture width; default the source's. Set with `height`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture height; default the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Video bit rate, kbit/s; default `encoder.video_bitrate_kbps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_bitrate_kbps: Option<u32>,
    /// Encoder for this rendition; default `encoder.encoder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderChoice>,
}

/// How a rendition is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionPlan {
    /// The source's samples as they are.
    Passthrough,
    /// Encoded by `encoder`.
    Transcode {
        /// The probed encoder.
        encoder: EncoderId,
        /// Picture size; `None` means the source's.
        size: Option<(u32, u32)>,
        /// Video bit rate, kbit/s.
        bitrate_kbps: u32,
    },
}

/// One rendition, named and planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRendition {
    /// Its name: the media playlist is `{id}.m3u8`.
    pub id: String,
    /// How it is made.
    pub plan: RenditionPlan,
}

/// Plans `renditions` (none: one [`DEFAULT_RENDITION`], passed through when the source
/// is `encoded`, else encoded with `options`). Every encoder is probed now, so that one
/// that cannot open stops start-up.
pub fn plan_renditions(
    renditions: &[RenditionSpec],
    encoded: bool,
    options: &EncoderOptions,
) -> Result<Vec<PlannedRendition>, ProbeError> {
    let defaults = [RenditionSpec {
        name: DEFAULT_RENDITION.into(),
        codec: match (encoded, options.encoder) {
            (true, _) => RenditionCodec::Copy,
            (false, EncoderChoice::X265) => RenditionCodec::H265,
            (false, _) => RenditionCodec::H264,
        },
        width: None,
        height: None,
        video_bitrate_kbps: None,
        encoder: None,
    }];
    let renditions = if renditions.is_empty() {
        &defaults[..]
    } else {
        renditions
    };
    renditions
        .iter()
        .map(|r| {
            let codec = match r.codec {
                RenditionCodec::Copy => {
                    return Ok(PlannedRendition {
                        id: r.name.clone(),
                        plan: RenditionPlan::Passthrough,
                    });
                }
                RenditionCodec::H264 => VideoCodec::H264,
                RenditionCodec::H265 => VideoCodec::H265,
            };
            Ok(PlannedRendition {
                id: r.name.clone(),
                plan: RenditionPlan::Transcode {
                    encoder: select_encoder(r.encoder.unwrap_or(options.encoder), codec)?,
                    size: r.width.zip(r.height),
                    bitrate_kbps: r.video_bitrate_kbps.unwrap_or(options.video_bitrate_kbps),
                },
            })
        })
        .collect()
}

/// How a rendition's video is made, as far as it shapes the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VideoMaking {
    /// The source's samples, untouched.
    Copy,
    /// Encoded by Mirror.
    Encoded {
        /// libav's encoder name.
        encoder: &'static str,
        /// Picture width.
        width: u32,
        /// Picture height.
        height: u32,
        /// Video bit rate, kbit/s.
        bitrate_kbps: u32,
        /// Preset, VBV, B-frames and threads (x264's sliced threads change the bytes).
        options: EncoderKnobs,
        /// Where keyframes go.
        keyframes: Keyframes,
        /// The frame rate encoded, as a fraction.
        frame_rate: (u32, u32),
    },
}

/// The encoder settings besides size and rate that change what it writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncoderKnobs {
    /// x264/x265 preset.
    pub preset: String,
    /// VBV buffer, ms.
    pub vbv_buffer_ms: u32,
    /// Consecutive B-frames.
    pub bframes: u32,
    /// Encoder threads.
    pub threads: u32,
}

impl From<&EncoderOptions> for EncoderKnobs {
    fn from(o: &EncoderOptions) -> Self {
        Self {
            preset: o.preset.clone(),
            vbv_buffer_ms: o.vbv_buffer_ms,
            bframes: o.bframes,
            threads: o.threads,
        }
    }
}

/// Everything that shapes one rendition's bytes. Its [`name_hash`](Self::name_hash)
/// goes into every media name of the rendition; a field left out here would let a
/// changed setting reuse old names, so each one is tested to change the hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenditionProfile {
    /// The pictures.
    pub video: VideoMaking,
    /// AAC made by Mirror at this bit rate (kbit/s); `None` when the source's own sound
    /// is carried.
    pub audio_bitrate_kbps: Option<u32>,
    /// The source's CODECS string when its samples (video or sound) are carried as
    /// they are: a camera back with another profile names new media.
    pub source_codecs: Option<String>,
    /// PART-TARGET the segmenter keeps.
    pub part_target: Duration,
    /// The segment target it cuts at.
    pub segment_target: Duration,
}

impl RenditionProfile {
    /// Eight hex digits of SHA-256 over the profile: stable across restarts of the same
    /// build, unlike `std`'s randomly keyed hasher.
    pub fn name_hash(&self) -> String {
        let mut hasher = DigestHasher(sha2::Sha256::default());
        self.hash(&mut hasher);
        let digest = sha2::Digest::finalize(hasher.0);
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Feeds `Hash` into SHA-256. `finish` is never used for names (`name_hash` takes the
/// digest itself), but `Hasher` needs it.
struct DigestHasher(sha2::Sha256);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finish(&self) -> u64 {
        let digest = sha2::Digest::finalize(self.0.clone());
        u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded() -> RenditionProfile {
        RenditionProfile {
            video: VideoMaking::Encoded {
                encoder: "libx264",
                width: 1280,
                height: 720,
                bitrate_kbps: 2500,
                options: EncoderKnobs {
                    preset: "veryfast".into(),
                    vbv_buffer_ms: 1000,
                    bframes: 0,
                    threads: 0,
                },
                keyframes: Keyframes::Every { frames: 30 },
                frame_rate: (30, 1),
            },
            audio_bitrate_kbps: Some(128),
            source_codecs: None,
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
        }
    }

    /// Every field that shapes the bytes changes the name; the same profile keeps it.
    #[test]
    fn each_field_of_the_profile_changes_the_name() {
        let base = encoded();
        assert_eq!(base.name_hash().len(), 8);
        assert_eq!(base.name_hash(), encoded().name_hash());
        let video = |change: &dyn Fn(&mut VideoMaking)| {
            let mut p = encoded();
            change(&mut p.video);
            p
        };
        let knobs = |change: &dyn Fn(&mut EncoderKnobs)| {
            video(&|v| {
                if let VideoMaking::Encoded { options, .. } = v {
                    change(options);
                }
            })
        };
        let field = |change: &dyn Fn(&mut VideoMaking)| video(change);
        let changed: Vec<(&str, RenditionProfile)> = vec![
            (
                "encoder",
                field(&|v| {
                    if let VideoMaking::Encoded { encoder, .. } = v {
                        *encoder = "h264_nvenc"
                    }
                }),
            ),
            (
                "width",
                field(&|v| {
                    if let VideoMaking::Encoded { width, .. } = v {
                        *width = 1920
                    }
                }),
            ),
            (
                "height",
                field(&|v| {
                    if let VideoMaking::Encoded { height, .. } = v {
                        *height = 1080
                    }
                }),
            ),
            (
                "bitrate",
                field(&|v| {
                    if let VideoMaking::Encoded { bitrate_kbps, .. } = v {
                        *bitrate_kbps = 2000
                    }
                }),
            ),
            (
                "keyframes",
                field(&|v| {
                    if let VideoMaking::Encoded { keyframes, .. } = v {
                        *keyframes = Keyframes::Every { frames: 60 }
                    }
                }),
            ),
            (
                "follow",
                field(&|v| {
                    if let VideoMaking::Encoded { keyframes, .. } = v {
                        *keyframes = Keyframes::FollowSource { gop_frames: 30 }
                    }
                }),
            ),
            (
                "frame rate",
                field(&|v| {
                    if let VideoMaking::Encoded { frame_rate, .. } = v {
                        *frame_rate = (30_000, 1001)
                    }
                }),
            ),
            ("preset", knobs(&|k| k.preset = "medium".into())),
            ("vbv", knobs(&|k| k.vbv_buffer_ms = 500)),
            ("bframes", knobs(&|k| k.bframes = 2)),
            ("threads", knobs(&|k| k.threads = 4)),
            ("copy", field(&|v| *v = VideoMaking::Copy)),
            (
                "audio",
                RenditionProfile {
                    audio_bitrate_kbps: Some(96),
                    ..encoded()
                },
            ),
            (
                "source audio",
                RenditionProfile {
                    audio_bitrate_kbps: None,
                    ..encoded()
                },
            ),
            (
                "source codecs",
                RenditionProfile {
                    source_codecs: Some("avc1.64001f".into()),
                    ..encoded()
                },
            ),
            (
                "part target",
                RenditionProfile {
                    part_target: Duration::from_millis(100),
                    ..encoded()
                },
            ),
            (
                "segment target",
                RenditionProfile {
                    segment_target: Duration::from_secs(2),
                    ..encoded()
                },
            ),
        ];
        let mut seen = std::collections::HashSet::from([base.name_hash()]);
        for (what, profile) in changed {
            assert_ne!(profile, base, "{what}: the test changed nothing");
            assert!(
                seen.insert(profile.name_hash()),
                "{what} does not change the name"
            );
        }
    }
}
