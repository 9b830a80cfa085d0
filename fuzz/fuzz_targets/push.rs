//! What a publisher sends, past the protocol crates: FLV tag bodies (RTMP), MPEG-TS in
//! arbitrary chunks (SRT), the H.264 Annex B and ADTS inside it, and SRT stream ids.
//! Each is taken or refused; never a panic, never a NAL unit that runs past its sample.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mirror::ingest::push::srt::parse_stream_id;
use mirror::cmaf::codec::{ParameterSets, VideoCodec, annexb_to_length_prefixed};
use mirror::ingest::push::ts::{EsUnit, TsDemuxer, adts_frames};
use mirror::ingest::push::{flv, hash_key};

/// Every 4-byte length in `sample` is followed by that many bytes, to the end exactly.
fn lengths_hold(sample: &[u8]) -> bool {
    let mut rest = sample;
    while !rest.is_empty() {
        let Some(prefix) = rest.get(..4) else {
            return false;
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let Some(after) = rest.get(4 + len..) else {
            return false;
        };
        rest = after;
    }
    true
}

/// An Annex B access unit as the SRT path converts it (empty when it has no NAL unit).
fn converted(annex_b: &[u8]) -> Bytes {
    annexb_to_length_prefixed(VideoCodec::H264, annex_b, &mut ParameterSets::default())
        .map(|unit| unit.data)
        .unwrap_or_default()
}

fuzz_target!(|input: (u8, u16, &[u8])| {
    let (choice, split, data) = input;
    let bytes = Bytes::copy_from_slice(data);
    match choice % 5 {
        0 => {
            if let Ok(flv::VideoTag::Frame { nal_units, .. }) = flv::video(&bytes) {
                for size in [1, 2, 4] {
                    if let Some(four) = flv::four_byte_lengths(nal_units.clone(), size) {
                        assert!(size == 4 || lengths_hold(&four));
                    }
                }
            }
        }
        1 => {
            let _ = flv::audio(&bytes);
        }
        2 => {
            // The same stream in two chunks at any split gives the same units.
            let at = usize::from(split).min(data.len());
            let mut whole = TsDemuxer::default();
            let mut chunked = TsDemuxer::default();
            let once = whole.push(data);
            let mut twice = chunked.push(&data[..at]);
            twice.extend(chunked.push(&data[at..]));
            assert_eq!(once, twice);
            for unit in once {
                if let EsUnit::Video { data, .. } = unit {
                    assert!(lengths_hold(&converted(&data)));
                }
            }
        }
        3 => {
            assert!(lengths_hold(&converted(data)));
            if let Some((config, frames)) = adts_frames(data) {
                assert!(config.sample_rate > 0);
                assert!(frames.iter().map(Bytes::len).sum::<usize>() <= data.len());
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                if let Some(asked) = parse_stream_id(text) {
                    assert!(!asked.stream.is_empty());
                }
                let _ = hash_key(text);
            }
        }
    }
});
