//! The bitstream parsers a camera's bytes reach: Annex B splitting and conversion to
//! length-prefixed NAL units, the avcC and hvcC builders over the SPS/PPS/VPS found
//! there (H.264 SPS through h264-reader), and the AAC AudioSpecificConfig.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirror::cmaf::codec::{ParameterSets, VideoCodec, annexb_nal_units, annexb_to_length_prefixed};
use mirror::cmaf::{AacConfig, AvcConfig, HevcConfig};

fuzz_target!(|data: &[u8]| {
    let nal_bytes: usize = annexb_nal_units(data).map(<[u8]>::len).sum();
    assert!(nal_bytes <= data.len());
    for codec in [VideoCodec::H264, VideoCodec::H265] {
        let mut params = ParameterSets::default();
        if let Ok(converted) = annexb_to_length_prefixed(codec, data, &mut params) {
            // Each NAL unit kept gains a 4-byte length in place of a 3- or 4-byte start
            // code: never more than the input plus one byte per unit.
            assert!(converted.data.len() <= data.len() * 2 + 4);
        }
        let _ = params
            .avc_config(1280, 720)
            .map(|c| (c.rfc6381(), c.avcc_extension()));
        let _ = params.hevc_config(1280, 720).map(|c| c.rfc6381());
    }
    // The same bytes taken as one parameter set each.
    let half = data.len() / 2;
    let _ = AvcConfig::new(data[..half].to_vec(), data[half..].to_vec(), 640, 360)
        .map(|c| (c.rfc6381(), c.chroma_and_bit_depth()));
    let _ =
        HevcConfig::new(data.to_vec(), data.to_vec(), data.to_vec(), 640, 360).map(|c| c.rfc6381());
    let _ = AacConfig::from_audio_specific_config(data).map(|c| c.rfc6381());
});
