//! FLV tag bodies as RTMP carries them (Adobe's FLV specification 10.1, E.4.2 and
//! E.4.3): H.264 in `AVCVIDEOPACKET`s (the decoder configuration record, then
//! length-prefixed NAL units with a composition time) and AAC in `AACAUDIODATA` (the
//! AudioSpecificConfig, then raw frames). Pure parsing: no I/O, no state.

use bytes::Bytes;

use crate::cmaf::{AacConfig, AvcConfig};

/// What a video tag holds.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// The decoder configuration (SPS, PPS) and the size of the NAL length prefixes.
    Config {
        /// The configuration, with the picture size read from the SPS.
        avc: AvcConfig,
        /// Bytes of each NAL unit's length prefix (1, 2 or 4).
        length_size: usize,
    },
    /// One access unit.
    Frame {
        /// An IDR picture (FLV frame type 1).
        keyframe: bool,
        /// Presentation minus decode time, milliseconds.
        composition_ms: i32,
        /// Length-prefixed NAL units, as the configuration's `length_size` says.
        nal_units: Bytes,
    },
    /// The end of the sequence, or a tag with nothing to decode (FLV's "video info"
    /// frames, an empty packet).
    Nothing,
}

/// What an audio tag holds.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC's AudioSpecificConfig.
    Config(AacConfig),
    /// One raw AAC frame.
    Frame(Bytes),
}

/// Why a tag cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// Shorter than its headers.
    #[error("a {0} tag is truncated")]
    Truncated(&'static str),
    /// A codec other than H.264 (FLV codec id 7) or AAC (sound format 10).
    #[error("{0} cannot be passed through (H.264 and AAC can)")]
    Codec(String),
    /// The decoder configuration does not parse.
    #[error("bad decoder configuration: {0}")]
    Config(String),
}

/// Reads the body of an FLV video tag.
pub fn video(data: &Bytes) -> Result<VideoTag, FlvError> {
    let first = *data.first().ok_or(FlvError::Truncated("video"))?;
    if first & 0x80 != 0 {
        // Enhanced RTMP (IsExHeader): HEVC, AV1, VP9 by FourCC.
        let fourcc = data.get(1..5).map(String::from_utf8_lossy);
        return Err(FlvError::Codec(format!(
            "Enhanced RTMP video ({})",
            fourcc.as_deref().unwrap_or("?")
        )));
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if codec_id != 7 {
        return Err(FlvError::Codec(format!("FLV video codec {codec_id}")));
    }
    if frame_type == 5 {
        // Video info / command frame: no picture.
        return Ok(VideoTag::Nothing);
    }
    if data.len() < 5 {
        return Err(FlvError::Truncated("video"));
    }
    let composition = i32::from_be_bytes([0, data[2], data[3], data[4]]);
    // SI24: sign-extend.
    let composition_ms = (composition << 8) >> 8;
    match data[1] {
        0 => {
            let (avc, length_size) = decoder_configuration(&data[5..])?;
            Ok(VideoTag::Config { avc, length_size })
        }
        1 if data.len() > 5 => Ok(VideoTag::Frame {
            keyframe: frame_type == 1,
            composition_ms,
            nal_units: data.slice(5..),
        }),
        _ => Ok(VideoTag::Nothing),
    }
}

/// Reads the body of an FLV audio tag.
pub fn audio(data: &Bytes) -> Result<AudioTag, FlvError> {
    let first = *data.first().ok_or(FlvError::Truncated("audio"))?;
    let format = first >> 4;
    if format != 10 {
        return Err(FlvError::Codec(format!("FLV sound format {format}")));
    }
    match data.get(1) {
        Some(0) => AacConfig::from_audio_specific_config(&data[2..])
            .map(AudioTag::Config)
            .map_err(|e| FlvError::Config(e.to_string())),
        Some(1) => Ok(AudioTag::Frame(data.slice(2..))),
        _ => Err(FlvError::Truncated("audio")),
    }
}

/// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): its first SPS and
/// PPS, the picture size from the SPS, and the NAL length size.
fn decoder_configuration(record: &[u8]) -> Result<(AvcConfig, usize), FlvError> {
    let bad = |what: &str| FlvError::Config(what.to_string());
    if record.len() < 7 {
        return Err(bad("shorter than its header"));
    }
    let length_size = usize::from(record[4] & 0x03) + 1;
    if length_size == 3 {
        return Err(bad("3-byte NAL lengths"));
    }
    let mut at = 5;
    let take_sets = |at: &mut usize, count: usize| -> Result<Vec<Vec<u8>>, FlvError> {
        let mut sets = Vec::with_capacity(count.min(32));
        for _ in 0..count {
            let len = record
                .get(*at..*at + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or_else(|| bad("a parameter set is truncated"))?;
            let set = record
                .get(*at + 2..*at + 2 + len)
                .ok_or_else(|| bad("a parameter set is truncated"))?;
            sets.push(set.to_vec());
            *at += 2 + len;
        }
        Ok(sets)
    };
    let sps_count = usize::from(record[at] & 0x1f);
    at += 1;
    let sps = take_sets(&mut at, sps_count)?;
    let pps_count = usize::from(*record.get(at).ok_or_else(|| bad("no PPS count"))?);
    at += 1;
    let pps = take_sets(&mut at, pps_count)?;
    let (Some(sps), Some(pps)) = (sps.into_iter().next(), pps.into_iter().next()) else {
        return Err(bad("no SPS or no PPS"));
    };
    let (width, height) = picture_size(&sps).ok_or_else(|| bad("the SPS does not parse"))?;
    let avc =
        AvcConfig::new(sps, pps, width, height).map_err(|e| FlvError::Config(e.to_string()))?;
    Ok((avc, length_size))
}

/// The picture size an SPS gives (cropping applied).
pub(super) fn picture_size(sps: &[u8]) -> Option<(u16, u16)> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::nal::{Nal as _, RefNal};
    if sps.is_empty() {
        // h264-reader panics on an empty NAL unit (found by the `push` fuzz target).
        return None;
    }
    let nal = RefNal::new(sps, &[], true);
    let sps = SeqParameterSet::from_bits(nal.rbsp_bits()).ok()?;
    let (width, height) = sps.pixel_dimensions().ok()?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// `nal_units` with `length_size`-byte prefixes rewritten as the 4-byte prefixes a
/// CMAF sample carries; `None` when a length runs past the end.
pub fn four_byte_lengths(nal_units: Bytes, length_size: usize) -> Option<Bytes> {
    if length_size == 4 {
        return Some(nal_units);
    }
    let mut out = Vec::with_capacity(nal_units.len() + nal_units.len() / 8);
    let mut rest = &nal_units[..];
    while !rest.is_empty() {
        let prefix = rest.get(..length_size)?;
        let len = prefix
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let nal = rest.get(length_size..length_size + len)?;
        out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        out.extend_from_slice(nal);
        rest = &rest[length_size + len..];
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 320×240 Constrained Baseline SPS and its PPS, as x264 writes them.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn record(length_size_minus_one: u8) -> Vec<u8> {
        let mut r = vec![
            1,
            SPS[1],
            SPS[2],
            SPS[3],
            0xfc | length_size_minus_one,
            0xe1,
        ];
        r.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r
    }

    #[test]
    fn a_sequence_header_gives_the_configuration_and_picture_size() {
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend(record(3));
        match video(&Bytes::from(tag)).expect("parses") {
            VideoTag::Config { avc, length_size } => {
                assert_eq!((avc.width, avc.height), (320, 240));
                assert_eq!(avc.sps, SPS);
                assert_eq!(avc.pps, PPS);
                assert_eq!(length_size, 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_keep_their_composition_time_and_key_flag() {
        let tag = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 1, 0x41]);
        assert_eq!(
            video(&tag),
            Ok(VideoTag::Frame {
                keyframe: false,
                composition_ms: -33,
                nal_units: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
            })
        );
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 66, 0, 0, 0, 1, 0x65]);
        assert!(matches!(
            video(&key),
            Ok(VideoTag::Frame {
                keyframe: true,
                composition_ms: 66,
                ..
            })
        ));
    }

    #[test]
    fn other_codecs_and_short_tags_are_refused_not_panicked_on() {
        assert!(matches!(
            video(&Bytes::from_static(&[0x12, 0])),
            Err(FlvError::Codec(_))
        ));
        assert!(matches!(
            video(&Bytes::from_static(b"\x90hvc1")),
            Err(FlvError::Codec(reason)) if reason.contains("hvc1")
        ));
        assert!(video(&Bytes::new()).is_err());
        assert!(video(&Bytes::from_static(&[0x17, 0, 0])).is_err());
        // An empty SPS (the `push` fuzz target's first find: h264-reader panicked).
        let empty_sps = Bytes::from_static(&[
            0x17, 0, 0, 0, 0, 1, 66, 0, 30, 0xff, 0xe1, 0, 0, 1, 0, 1, 0x68,
        ]);
        assert!(matches!(video(&empty_sps), Err(FlvError::Config(_))));
        let mut truncated = vec![0x17, 0, 0, 0, 0];
        truncated.extend(&record(3)[..12]);
        assert!(matches!(
            video(&Bytes::from(truncated)),
            Err(FlvError::Config(_))
        ));
        assert!(matches!(
            audio(&Bytes::from_static(&[0x2f, 1, 2])),
            Err(FlvError::Codec(_))
        ));
        assert!(audio(&Bytes::from_static(&[0xaf])).is_err());
    }

    #[test]
    fn aac_config_and_frames() {
        // AAC-LC, 48 kHz, stereo.
        match audio(&Bytes::from_static(&[0xaf, 0, 0x11, 0x90])).expect("config") {
            AudioTag::Config(aac) => {
                assert_eq!((aac.sample_rate, aac.channels), (48_000, 2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            audio(&Bytes::from_static(&[0xaf, 1, 9, 9])),
            Ok(AudioTag::Frame(Bytes::from_static(&[9, 9])))
        );
    }

    #[test]
    fn short_length_prefixes_become_four_bytes() {
        let two = Bytes::from_static(&[0, 2, 0x65, 1, 0, 1, 0x41]);
        assert_eq!(
            four_byte_lengths(two, 2).as_deref(),
            Some(&[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41][..])
        );
        assert_eq!(four_byte_lengths(Bytes::from_static(&[0, 9, 1]), 2), None);
    }
}
