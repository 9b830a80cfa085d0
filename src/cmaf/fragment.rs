//! One CMAF chunk: `moof` (`mfhd`, then a `traf` per track with `tfhd`
//! default-base-is-moof, `tfdt` and `trun`) followed by one `mdat` holding every
//! track's samples, track after track (ISO/IEC 23000-19 7.3.2.3).

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Encode, Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry, TrunSamples};

/// `sample_flags` of a sync sample: sample_depends_on = 2 (depends on no other sample).
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: sample_depends_on = 1, sample_is_non_sync_sample.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Size of an `mdat` header with a 32-bit size.
const MDAT_HEADER_BYTES: usize = 8;

/// One sample as `trun` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSample {
    /// Duration in the track's timescale.
    pub duration_ticks: u32,
    /// Payload size in bytes.
    pub size: u32,
    /// Sync sample or not.
    pub keyframe: bool,
    /// Composition offset in the track's timescale (signed, trun version 1).
    pub composition_offset_ticks: i32,
}

/// One track's samples in a chunk.
#[derive(Debug, Clone)]
pub struct TrackRun<'a> {
    /// The track.
    pub track_id: u32,
    /// `tfdt.baseMediaDecodeTime`: decode time of the first sample.
    pub base_decode_ticks: u64,
    /// Whether to write per-sample composition offsets (video; audio never needs them).
    pub with_composition_offsets: bool,
    /// The samples, in decode order.
    pub samples: Vec<RunSample>,
    /// Their payloads, in the same order.
    pub payloads: Vec<&'a [u8]>,
}

/// Why a chunk could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    /// The chunk would not fit the 32-bit sizes and offsets used.
    #[error("chunk of {0} bytes is too large")]
    TooLarge(usize),
    /// `mp4-atom` refused a box.
    #[error("encoding moof failed: {0}")]
    Encode(mp4_atom::Error),
}

/// Writes `moof` + `mdat` for the non-empty runs in `runs`, with `sequence_number` in
/// `mfhd`. The bytes are written once into one buffer sized up front.
pub fn write_chunk(sequence_number: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, FragmentError> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: runs.iter().map(|run| traf(run)).collect(),
    };
    // trun.data_offset counts from the first byte of moof (default-base-is-moof), so it
    // depends on moof's own size: encode once to learn it. The size does not change when
    // the offsets are filled in, because the field is present either way.
    let mut sizing = Vec::with_capacity(256);
    moof.encode(&mut sizing).map_err(FragmentError::Encode)?;
    let moof_bytes = sizing.len();
    let payload_bytes: usize = runs
        .iter()
        .flat_map(|r| r.payloads.iter())
        .map(|p| p.len())
        .sum();
    let total = moof_bytes + MDAT_HEADER_BYTES + payload_bytes;
    let total_u32 = u32::try_from(total).map_err(|_| FragmentError::TooLarge(total))?;

    let mut offset = moof_bytes + MDAT_HEADER_BYTES;
    for (traf, run) in moof.traf.iter_mut().zip(&runs) {
        let data_offset = i32::try_from(offset).map_err(|_| FragmentError::TooLarge(total))?;
        traf.trun[0].data_offset = Some(data_offset);
        offset += run.payloads.iter().map(|p| p.len()).sum::<usize>();
    }

    let mut out = BytesMut::with_capacity(total);
    moof.encode(&mut out).map_err(FragmentError::Encode)?;
    debug_assert_eq!(out.len(), moof_bytes);
    out.put_u32(total_u32 - u32::try_from(moof_bytes).unwrap_or(0));
    out.put_slice(b"mdat");
    for run in &runs {
        for payload in &run.payloads {
            out.put_slice(payload);
        }
    }
    Ok(out.freeze())
}

fn traf(run: &TrackRun<'_>) -> Traf {
    let entries = run
        .samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration_ticks),
            size: Some(s.size),
            flags: Some(if s.keyframe {
                SAMPLE_FLAGS_SYNC
            } else {
                SAMPLE_FLAGS_NON_SYNC
            }),
            cts: run
                .with_composition_offsets
                .then_some(i64::from(s.composition_offset_ticks)),
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id: run.track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: run.base_decode_ticks,
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Default::default()
    }
}
