//! Codec configuration: the decoder configuration records parameter sets become
//! (`avcC`, `hvcC`, the AudioSpecificConfig of `esds`), and the RFC 6381 `CODECS`
//! strings derived from those real bytes. Pulling parameter sets out of Annex B
//! streams is [`super::annexb`]'s (re-exported here).

use super::TrackKind;
pub use super::annexb::{
    ConvertedAccessUnit, ParameterSets, VideoCodec, annexb_nal_units, annexb_to_length_prefixed,
};

/// Why a codec configuration could not be built or a payload not converted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// An H.264 keyframe arrived with no SPS seen before it, so no `avcC` can exist.
    #[error("H.264 stream has no sequence parameter set (SPS)")]
    MissingSps,
    /// An H.264 stream has an SPS but no PPS.
    #[error("H.264 stream has no picture parameter set (PPS)")]
    MissingPps,
    /// An HEVC stream lacks one of VPS/SPS/PPS.
    #[error("HEVC stream lacks its {0} parameter set")]
    MissingHevcParameterSet(&'static str),
    /// A parameter set is shorter than its fixed header.
    #[error("{0} is truncated ({1} bytes)")]
    Truncated(&'static str, usize),
    /// The AudioSpecificConfig is shorter than two bytes or names no AAC object type.
    #[error("AudioSpecificConfig is invalid: {0}")]
    InvalidAudioSpecificConfig(&'static str),
    /// A payload held no NAL unit at all.
    #[error("access unit holds no NAL unit")]
    EmptyAccessUnit,
}

/// A track's codec with its decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecConfig {
    /// H.264 / AVC, written as `avc1` + `avcC`.
    Avc(AvcConfig),
    /// H.265 / HEVC, written as `hvc1` + `hvcC`.
    Hevc(HevcConfig),
    /// AAC, written as `mp4a` + `esds`.
    Aac(AacConfig),
}

impl CodecConfig {
    /// Video or audio.
    pub fn kind(&self) -> TrackKind {
        match self {
            CodecConfig::Avc(_) | CodecConfig::Hevc(_) => TrackKind::Video,
            CodecConfig::Aac(_) => TrackKind::Audio,
        }
    }

    /// The RFC 6381 codec string, as `CODECS` in the multivariant playlist wants it.
    pub fn rfc6381(&self) -> String {
        match self {
            CodecConfig::Avc(c) => c.rfc6381(),
            CodecConfig::Hevc(c) => c.rfc6381(),
            CodecConfig::Aac(c) => c.rfc6381(),
        }
    }
}

/// H.264 decoder configuration: one SPS and one PPS, with the picture size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// The SPS NAL unit, header byte included, emulation prevention bytes kept.
    pub sps: Vec<u8>,
    /// The PPS NAL unit, header byte included.
    pub pps: Vec<u8>,
    /// Coded picture width in pixels (after cropping).
    pub width: u16,
    /// Coded picture height in pixels (after cropping).
    pub height: u16,
}

impl AvcConfig {
    /// Whether `other` differs from this only in its SPS's `level_idc`: the same
    /// bitstream syntax, so pictures coded with either decode with either. (WebRTC
    /// encoders raise the level as their bitrate ramps up, the picture unchanged.)
    pub fn differs_only_in_level(&self, other: &AvcConfig) -> bool {
        const LEVEL: usize = 3;
        self.pps == other.pps
            && (self.width, self.height) == (other.width, other.height)
            && self.sps.len() == other.sps.len()
            && self
                .sps
                .iter()
                .zip(&other.sps)
                .enumerate()
                .all(|(i, (a, b))| i == LEVEL || a == b)
    }

    /// Builds the configuration from parameter sets, checking the SPS is long enough to
    /// carry profile, constraint flags and level.
    pub fn new(sps: Vec<u8>, pps: Vec<u8>, width: u16, height: u16) -> Result<Self, CodecError> {
        if sps.len() < 4 {
            return Err(CodecError::Truncated("SPS", sps.len()));
        }
        if pps.is_empty() {
            return Err(CodecError::MissingPps);
        }
        Ok(Self {
            sps,
            pps,
            width,
            height,
        })
    }

    /// `avc1.PPCCLL`: profile_idc, constraint flags and level_idc from the SPS (RFC 6381
    /// 3.3, ISO/IEC 14496-15 annex E).
    pub fn rfc6381(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.sps[1], self.sps[2], self.sps[3]
        )
    }

    /// `profile_idc` from the SPS.
    pub fn profile_idc(&self) -> u8 {
        self.sps[1]
    }

    /// chroma_format_idc and the luma/chroma bit depths, as the SPS gives them (H.264
    /// 7.3.2.1.1, read with h264-reader, which knows which profiles carry them); 4:2:0
    /// 8-bit when it does not parse.
    pub fn chroma_and_bit_depth(&self) -> (u8, u8, u8) {
        use h264_reader::nal::sps::{ChromaFormat, SeqParameterSet};
        use h264_reader::nal::{Nal as _, RefNal};
        let nal = RefNal::new(&self.sps, &[], true);
        let sps = match SeqParameterSet::from_bits(nal.rbsp_bits()) {
            Ok(sps) => sps,
            Err(error) => {
                tracing::warn!(?error, "SPS not parsed; avcC says 4:2:0 8-bit");
                return (1, 8, 8);
            }
        };
        let chroma = &sps.chroma_info;
        let format = match chroma.chroma_format {
            ChromaFormat::Monochrome => 0,
            ChromaFormat::YUV420 | ChromaFormat::Invalid(_) => 1,
            ChromaFormat::YUV422 => 2,
            ChromaFormat::YUV444 => 3,
        };
        (
            format,
            chroma.bit_depth_luma_minus8 + 8,
            chroma.bit_depth_chroma_minus8 + 8,
        )
    }

    /// The chroma/bit-depth extension of `avcC`, for the profiles ISO/IEC 14496-15
    /// 5.3.3.1.2 writes it for (High, High 10, High 4:2:2, High 4:4:4); `None` for the
    /// others, whose `avcC` ends after the PPS.
    pub fn avcc_extension(&self) -> Option<(u8, u8, u8)> {
        matches!(self.profile_idc(), 100 | 110 | 122 | 144).then(|| self.chroma_and_bit_depth())
    }
}

/// H.265 decoder configuration: VPS, SPS and PPS with the fields of the SPS's
/// profile_tier_level that `hvcC` and the codec string need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// The VPS NAL unit (two-byte header included).
    pub vps: Vec<u8>,
    /// The SPS NAL unit.
    pub sps: Vec<u8>,
    /// The PPS NAL unit.
    pub pps: Vec<u8>,
    /// Picture width in pixels.
    pub width: u16,
    /// Picture height in pixels.
    pub height: u16,
    /// general_profile_tier_level from the SPS.
    pub profile: HevcProfileTierLevel,
}

/// The general part of an HEVC profile_tier_level (H.265 7.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HevcProfileTierLevel {
    /// general_profile_space (0 in every stream seen in practice).
    pub profile_space: u8,
    /// general_tier_flag: false = Main tier, true = High tier.
    pub tier_flag: bool,
    /// general_profile_idc (1 = Main, 2 = Main 10).
    pub profile_idc: u8,
    /// general_profile_compatibility_flag[0..32], as four bytes.
    pub compatibility_flags: [u8; 4],
    /// The 48 bits of constraint flags.
    pub constraint_flags: [u8; 6],
    /// general_level_idc (30 × level).
    pub level_idc: u8,
}

impl HevcConfig {
    /// Parses profile_tier_level out of the SPS.
    pub fn new(
        vps: Vec<u8>,
        sps: Vec<u8>,
        pps: Vec<u8>,
        width: u16,
        height: u16,
    ) -> Result<Self, CodecError> {
        // Two-byte NAL header, then one byte of vps_id/max_sub_layers/nesting, then the
        // 12 bytes of general profile_tier_level (H.265 7.3.2.2.1, 7.3.3).
        let rbsp = unescape_rbsp(&sps);
        if rbsp.len() < 15 {
            return Err(CodecError::Truncated("HEVC SPS", sps.len()));
        }
        let ptl = &rbsp[3..15];
        let profile = HevcProfileTierLevel {
            profile_space: ptl[0] >> 6,
            tier_flag: ptl[0] & 0x20 != 0,
            profile_idc: ptl[0] & 0x1f,
            compatibility_flags: [ptl[1], ptl[2], ptl[3], ptl[4]],
            constraint_flags: [ptl[5], ptl[6], ptl[7], ptl[8], ptl[9], ptl[10]],
            level_idc: ptl[11],
        };
        Ok(Self {
            vps,
            sps,
            pps,
            width,
            height,
            profile,
        })
    }

    /// `hvc1.P.C.TL.CC` per ISO/IEC 14496-15 annex E.3: profile space and idc, the
    /// compatibility flags bit-reversed in hex, tier and level, then the constraint bytes
    /// with trailing zero bytes dropped.
    pub fn rfc6381(&self) -> String {
        let p = &self.profile;
        let space = match p.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let compat = u32::from_be_bytes(p.compatibility_flags).reverse_bits();
        let tier = if p.tier_flag { 'H' } else { 'L' };
        let mut s = format!(
            "hvc1.{space}{}.{compat:X}.{tier}{}",
            p.profile_idc, p.level_idc
        );
        let last_nonzero = p.constraint_flags.iter().rposition(|&b| b != 0);
        if let Some(last) = last_nonzero {
            for b in &p.constraint_flags[..=last] {
                s.push_str(&format!(".{b:X}"));
            }
        }
        s
    }
}

/// AAC decoder configuration: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig bytes exactly as the encoder produced them.
    pub audio_specific_config: Vec<u8>,
    /// audioObjectType (2 = AAC-LC, 5 = SBR, 29 = PS).
    pub object_type: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// channelConfiguration (number of channels for 1..=6).
    pub channels: u8,
}

/// ISO/IEC 14496-3 table 1.18: samplingFrequencyIndex → Hz.
const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacConfig {
    /// Parses object type, rate and channels from a real AudioSpecificConfig.
    pub fn from_audio_specific_config(asc: &[u8]) -> Result<Self, CodecError> {
        if asc.len() < 2 {
            return Err(CodecError::InvalidAudioSpecificConfig(
                "shorter than 2 bytes",
            ));
        }
        let mut bits = BitReader::new(asc);
        let invalid = CodecError::InvalidAudioSpecificConfig("truncated");
        let mut object_type = bits.read_bits(5).ok_or(invalid.clone())? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read_bits(6).ok_or(invalid.clone())? as u8;
        }
        if object_type == 0 {
            return Err(CodecError::InvalidAudioSpecificConfig("audioObjectType 0"));
        }
        let index = bits.read_bits(4).ok_or(invalid.clone())? as usize;
        let sample_rate = if index == 15 {
            bits.read_bits(24).ok_or(invalid.clone())?
        } else {
            *AAC_SAMPLE_RATES
                .get(index)
                .ok_or(CodecError::InvalidAudioSpecificConfig(
                    "reserved samplingFrequencyIndex",
                ))?
        };
        if !(1..=96_000).contains(&sample_rate) {
            // An explicit rate of 0 would be a timescale of 0 (a division by zero
            // downstream); above 96 kHz is no AAC rate.
            return Err(CodecError::InvalidAudioSpecificConfig(
                "sampling rate not within 1 Hz to 96 kHz",
            ));
        }
        let channels = bits.read_bits(4).ok_or(invalid)? as u8;
        Ok(Self {
            audio_specific_config: asc.to_vec(),
            object_type,
            sample_rate,
            channels,
        })
    }

    /// `mp4a.40.AOT` (RFC 6381 3.3): MPEG-4 audio, then the audioObjectType.
    pub fn rfc6381(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`), H.264 7.4.1.
fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader for the fixed-width fields read here: HEVC profile_tier_level
/// and AAC's AudioSpecificConfig (h264-reader parses the H.264 SPS).
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, bit: 0 }
    }

    fn read_bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.bit / 8)?;
        let v = (byte >> (7 - self.bit % 8)) & 1;
        self.bit += 1;
        Some(u32::from(v))
    }

    fn read_bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.read_bit()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS of a libx264 High profile level 3.1 stream (1280×720).
    const X264_HIGH_31_SPS: [u8; 28] = [
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x80, 0x50, 0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02,
        0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8c, 0x18, 0xcd,
    ];

    /// SPS of a libx264 High 4:2:2 profile stream, 10 bits (`-pix_fmt yuv422p10le`).
    const X264_HIGH_422_10_SPS: [u8; 25] = [
        0x67, 0x7a, 0x00, 0x0d, 0xb6, 0xcd, 0x94, 0x14, 0x1f, 0xb0, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x14, 0x29, 0x96,
    ];

    #[test]
    fn the_avcc_extension_carries_the_sps_chroma_format_and_bit_depths() {
        let pps = vec![0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let high = AvcConfig::new(X264_HIGH_31_SPS.to_vec(), pps.clone(), 1280, 720).expect("SPS");
        assert_eq!(high.avcc_extension(), Some((1, 8, 8)));
        let high422 =
            AvcConfig::new(X264_HIGH_422_10_SPS.to_vec(), pps.clone(), 320, 240).expect("SPS");
        assert_eq!(high422.profile_idc(), 122);
        assert_eq!(high422.avcc_extension(), Some((2, 10, 10)));
        let mut main = X264_HIGH_31_SPS.to_vec();
        main[1] = 77;
        let main = AvcConfig::new(main, pps, 1280, 720).expect("SPS");
        assert_eq!(main.avcc_extension(), None, "Main has no extension");
    }

    #[test]
    fn avc_codec_string_comes_from_sps_profile_constraints_and_level() {
        let config =
            AvcConfig::new(X264_HIGH_31_SPS.to_vec(), vec![0x68, 0xe9], 1280, 720).expect("valid");
        assert_eq!(config.rfc6381(), "avc1.64001f");
        assert_eq!(config.chroma_and_bit_depth(), (1, 8, 8));
        let baseline =
            AvcConfig::new(vec![0x67, 0x42, 0xc0, 0x1e], vec![0x68], 640, 360).expect("valid");
        assert_eq!(baseline.rfc6381(), "avc1.42c01e");
    }

    #[test]
    fn a_level_change_alone_is_told_apart_from_other_changes() {
        let pps = vec![0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let config = |sps: Vec<u8>, pps: Vec<u8>| AvcConfig::new(sps, pps, 1280, 720).expect("SPS");
        let first = config(X264_HIGH_31_SPS.to_vec(), pps.clone());
        let mut level_32 = X264_HIGH_31_SPS.to_vec();
        level_32[3] = 0x20;
        assert!(first.differs_only_in_level(&config(level_32, pps.clone())));
        let mut other_syntax = X264_HIGH_31_SPS.to_vec();
        other_syntax[5] ^= 0x01;
        assert!(!first.differs_only_in_level(&config(other_syntax, pps.clone())));
        assert!(!first.differs_only_in_level(&config(
            X264_HIGH_31_SPS.to_vec(),
            vec![0x68, 0xee, 0x3c, 0x80]
        )));
        let smaller = AvcConfig::new(X264_HIGH_31_SPS.to_vec(), pps, 640, 360).expect("SPS");
        assert!(!first.differs_only_in_level(&smaller));
    }

    #[test]
    fn aac_lc_48k_stereo_audio_specific_config() {
        let config = AacConfig::from_audio_specific_config(&[0x11, 0x90]).expect("valid");
        assert_eq!(config.object_type, 2);
        assert_eq!(config.sample_rate, 48000);
        assert_eq!(config.channels, 2);
        assert_eq!(config.rfc6381(), "mp4a.40.2");
        let he = AacConfig::from_audio_specific_config(&[0x2b, 0x92, 0x08, 0x00]).expect("valid");
        assert_eq!(he.rfc6381(), "mp4a.40.5");
    }

    #[test]
    fn invalid_audio_specific_config_is_an_error() {
        assert!(AacConfig::from_audio_specific_config(&[0x11]).is_err());
        assert!(AacConfig::from_audio_specific_config(&[0x00, 0x00]).is_err());
        assert!(AacConfig::from_audio_specific_config(&[0x17, 0x80]).is_err()); // index 14
        // Index 15 with an explicit rate of 0 (a timescale of 0 downstream; found by
        // review of the push path, which takes any publisher's AudioSpecificConfig).
        assert!(AacConfig::from_audio_specific_config(&[0x17, 0x80, 0, 0, 0x10]).is_err());
    }

    #[test]
    fn hevc_codec_string_from_main_profile_sps() {
        // x265 Main profile, level 3.1 (93), Main tier: SPS header bytes.
        let sps = vec![
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16,
        ];
        let config =
            HevcConfig::new(vec![0x40, 0x01], sps, vec![0x44, 0x01], 1280, 720).expect("valid");
        assert_eq!(config.profile.profile_idc, 1);
        assert_eq!(config.profile.level_idc, 93);
        assert_eq!(config.rfc6381(), "hvc1.1.6.L93.90");
    }
}
