//! The CMAF writer: an arbitrary stream of video and audio samples (sizes, timing,
//! keyframes, out-of-order and bad ones included) goes through the segmenter; every
//! part it emits parses back with mp4-atom as one `moof` and one `mdat` holding
//! exactly the bytes the `trun`s say, and every refused sample is an error, not a
//! panic.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mirror::cmaf::{
    AacConfig, AvcConfig, CodecConfig, Sample, Segmenter, SegmenterConfig, SegmenterEvent,
    Timescale, TrackInfo,
};
use mp4_atom::{Atom, Decode, Moof};

/// SPS and PPS of a libx264 High profile stream, the ASC of AAC-LC 48 kHz stereo.
const SPS: [u8; 28] = [
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x00, 0x00,
];
const PPS: [u8; 5] = [0x68, 0xe9, 0x7b, 0x2c, 0x8b];
const ASC: [u8; 2] = [0x11, 0x90];
/// The segmenter's sample bound here. Sizes up to 512 bytes past it are drawn, so about
/// one sample in ten is refused; payloads stay small so that a run makes millions of
/// executions (at up to 64 KiB a sample, it made a few hundred a second).
const MAX_SAMPLE_BYTES: usize = 4096;
/// Every sample's bytes, a prefix of this: what they hold does not matter to the
/// writer, and none is allocated per sample.
static PAYLOAD: [u8; MAX_SAMPLE_BYTES + 512] = [0xab; MAX_SAMPLE_BYTES + 512];

#[derive(Debug, Arbitrary)]
struct FuzzSample {
    audio: bool,
    /// Decode time step from the previous sample of its track (may be zero or huge).
    step: u16,
    back: bool,
    offset: i16,
    keyframe: bool,
    len: u16,
}

fuzz_target!(|samples: Vec<FuzzSample>| {
    let tracks = vec![
        TrackInfo {
            track_id: 1,
            timescale: Timescale::VIDEO_90K,
            codec: CodecConfig::Avc(
                AvcConfig::new(SPS.to_vec(), PPS.to_vec(), 1280, 720).expect("valid"),
            ),
            nominal_sample_ticks: 3000,
            average_bitrate: 2_500_000,
        },
        TrackInfo {
            track_id: 2,
            timescale: Timescale(48_000),
            codec: CodecConfig::Aac(AacConfig::from_audio_specific_config(&ASC).expect("valid")),
            nominal_sample_ticks: 1024,
            average_bitrate: 128_000,
        },
    ];
    let mut segmenter = Segmenter::new(
        SegmenterConfig {
            tracks,
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            // Small, so that both kept and refused sizes are cheap to reach.
            max_sample_bytes: MAX_SAMPLE_BYTES,
            keyframes_on_segment_grid: false,
        },
        0,
    );
    let now = SystemTime::UNIX_EPOCH;
    let mut times = [0u64; 2];
    for s in samples.iter().take(2000) {
        let track = usize::from(s.audio);
        times[track] = if s.back {
            times[track].saturating_sub(u64::from(s.step))
        } else {
            times[track] + u64::from(s.step)
        };
        let sample = Sample {
            track_id: 1 + u32::from(s.audio),
            decode_ticks: times[track],
            composition_offset_ticks: i32::from(s.offset),
            keyframe: s.keyframe,
            data: Bytes::from_static(&PAYLOAD[..usize::from(s.len) % PAYLOAD.len()]),
            captured_at: now,
        };
        let _ = segmenter.push(sample, now);
        while let Some(event) = segmenter.poll_event() {
            if let SegmenterEvent::Part(part) = event {
                check(&part.bytes);
            }
        }
    }
    let _ = segmenter.finish(now);
    while let Some(event) = segmenter.poll_event() {
        if let SegmenterEvent::Part(part) = event {
            check(&part.bytes);
        }
    }
});

/// One `moof` and one `mdat`, whose size is what the `trun`s add up to.
fn check(part: &[u8]) {
    let mut buf = part;
    let moof = Moof::decode(&mut buf).expect("a part starts with a moof");
    // The mdat's header, and exactly its payload after it. (mp4-atom's `Mdat` decodes
    // its payload a byte at a time, which under coverage instrumentation was nine
    // tenths of this target's time.)
    let header = mp4_atom::Header::decode(&mut buf).expect("an mdat header");
    assert_eq!(header.kind, mp4_atom::Mdat::KIND, "a moof, then an mdat");
    assert_eq!(header.size, Some(buf.len()), "the mdat ends the part");
    let described: u64 = moof
        .traf
        .iter()
        .flat_map(|traf| traf.trun.iter())
        .map(|trun| match &trun.samples {
            mp4_atom::TrunSamples::Explicit(entries) => entries
                .iter()
                .map(|e| u64::from(e.size.unwrap_or(0)))
                .sum::<u64>(),
            _ => 0,
        })
        .sum();
    assert_eq!(described, buf.len() as u64, "trun sizes and mdat disagree");
}
