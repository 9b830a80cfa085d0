//! H.264 and HEVC access units as Annex B byte streams carry them (start codes,
//! parameter sets in-band: MPEG-TS, WebRTC, libav's encoders) made into the
//! length-prefixed samples MP4 wants, their parameter sets collected for the sample
//! entry. Imports only the codec configurations it builds.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{AvcConfig, CodecError, HevcConfig};

/// H.264 NAL unit types that matter here (H.264 table 7-1).
mod avc_nal {
    pub(super) const IDR: u8 = 5;
    pub(super) const SPS: u8 = 7;
    pub(super) const PPS: u8 = 8;
    pub(super) const AUD: u8 = 9;
}

/// HEVC NAL unit types that matter here (H.265 table 7-1).
mod hevc_nal {
    pub(super) const VPS: u8 = 32;
    pub(super) const SPS: u8 = 33;
    pub(super) const PPS: u8 = 34;
    pub(super) const AUD: u8 = 35;
}

/// Splits an Annex B byte stream at its start codes (`00 00 01` or `00 00 00 01`),
/// yielding each NAL unit without its start code and without trailing zero bytes.
pub fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| s - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        let mut end = e;
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        (end > s).then(|| &data[s..end])
    })
}

/// Parameter sets found in-band, the latest of each kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterSets {
    /// HEVC VPS.
    pub vps: Option<Vec<u8>>,
    /// SPS (H.264 or HEVC).
    pub sps: Option<Vec<u8>>,
    /// PPS (H.264 or HEVC).
    pub pps: Option<Vec<u8>>,
}

/// Which video codec an Annex B stream carries; selects the NAL header layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// One-byte NAL header, type in the low 5 bits.
    H264,
    /// Two-byte NAL header, type in bits 1..7 of the first byte.
    H265,
}

/// The result of converting one Annex B access unit.
#[derive(Debug)]
pub struct ConvertedAccessUnit {
    /// Length-prefixed (4-byte big-endian) NAL units, parameter sets and access unit
    /// delimiters removed: in `avc1`/`hvc1` they belong in the sample entry only.
    pub data: Bytes,
    /// Whether an IDR/IRAP NAL unit was present.
    pub has_idr: bool,
}

/// Converts an Annex B access unit to the length-prefixed form MP4 wants, collecting
/// parameter sets into `params` as they pass.
pub fn annexb_to_length_prefixed(
    codec: VideoCodec,
    data: &[u8],
    params: &mut ParameterSets,
) -> Result<ConvertedAccessUnit, CodecError> {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    let mut has_idr = false;
    let mut any = false;
    for nal in annexb_nal_units(data) {
        any = true;
        match codec {
            VideoCodec::H264 => match nal[0] & 0x1f {
                avc_nal::SPS => params.sps = Some(nal.to_vec()),
                avc_nal::PPS => params.pps = Some(nal.to_vec()),
                avc_nal::AUD => {}
                t => {
                    has_idr |= t == avc_nal::IDR;
                    push_length_prefixed(&mut out, nal);
                }
            },
            VideoCodec::H265 => match (nal[0] >> 1) & 0x3f {
                hevc_nal::VPS => params.vps = Some(nal.to_vec()),
                hevc_nal::SPS => params.sps = Some(nal.to_vec()),
                hevc_nal::PPS => params.pps = Some(nal.to_vec()),
                hevc_nal::AUD => {}
                t => {
                    // IRAP pictures: BLA, IDR and CRA (16..=21).
                    has_idr |= (16..=21).contains(&t);
                    push_length_prefixed(&mut out, nal);
                }
            },
        }
    }
    if !any {
        return Err(CodecError::EmptyAccessUnit);
    }
    Ok(ConvertedAccessUnit {
        data: out.freeze(),
        has_idr,
    })
}

fn push_length_prefixed(out: &mut BytesMut, nal: &[u8]) {
    // A NAL unit longer than 4 GiB cannot exist in a sample we accept (the segmenter caps
    // samples far below that), so the length always fits.
    out.put_u32(u32::try_from(nal.len()).unwrap_or(u32::MAX));
    out.put_slice(nal);
}

impl ParameterSets {
    /// The `avcC` content, if the SPS and PPS have been seen.
    pub fn avc_config(&self, width: u16, height: u16) -> Result<AvcConfig, CodecError> {
        let sps = self.sps.clone().ok_or(CodecError::MissingSps)?;
        let pps = self.pps.clone().ok_or(CodecError::MissingPps)?;
        AvcConfig::new(sps, pps, width, height)
    }

    /// The `hvcC` content, if VPS, SPS and PPS have been seen.
    pub fn hevc_config(&self, width: u16, height: u16) -> Result<HevcConfig, CodecError> {
        let vps = self
            .vps
            .clone()
            .ok_or(CodecError::MissingHevcParameterSet("VPS"))?;
        let sps = self
            .sps
            .clone()
            .ok_or(CodecError::MissingHevcParameterSet("SPS"))?;
        let pps = self
            .pps
            .clone()
            .ok_or(CodecError::MissingHevcParameterSet("PPS"))?;
        HevcConfig::new(vps, sps, pps, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An H.264 SPS (Constrained Baseline, level 3.0): its bytes only pass through.
    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1e];

    #[test]
    fn annexb_conversion_strips_parameter_sets_and_collects_them() {
        let mut au = vec![0, 0, 0, 1, 0x09, 0xf0]; // AUD
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&SPS);
        au.extend_from_slice(&[0, 0, 1, 0x68, 0xe9, 0x7b]);
        au.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0x00]);
        let mut params = ParameterSets::default();
        let converted =
            annexb_to_length_prefixed(VideoCodec::H264, &au, &mut params).expect("converts");
        assert!(converted.has_idr);
        assert_eq!(&converted.data[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        assert_eq!(params.sps.as_deref(), Some(&SPS[..]));
        assert_eq!(params.pps.as_deref(), Some(&[0x68, 0xe9, 0x7b][..]));
    }

    #[test]
    fn keyframe_without_sps_cannot_configure_a_track() {
        let au = [0, 0, 1, 0x68, 0xe9, 0, 0, 1, 0x65, 0x88];
        let mut params = ParameterSets::default();
        annexb_to_length_prefixed(VideoCodec::H264, &au, &mut params).expect("converts");
        assert_eq!(params.avc_config(1280, 720), Err(CodecError::MissingSps));
        assert_eq!(
            annexb_to_length_prefixed(VideoCodec::H264, &[0, 0, 0], &mut params).err(),
            Some(CodecError::EmptyAccessUnit)
        );
    }
}
