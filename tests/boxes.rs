//! The boxes Mirror writes, parsed back with mp4-atom and compared field by field.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use common::fixtures::{PPS, SPS, segmenter_config, tracks};
use mirror::cmaf::fragment::{SAMPLE_FLAGS_NON_SYNC, SAMPLE_FLAGS_SYNC};
use mirror::cmaf::init::write_init_segment;
use mirror::cmaf::{Sample, Segmenter, SegmenterEvent};
use mp4_atom::{Codec, Decode, DecodeMaybe, Ftyp, Moof, Moov, TrunSamples};

#[test]
fn init_segment_declares_cmaf_brands_tracks_and_codec_configuration() {
    let bytes = write_init_segment(&tracks()).expect("writes");
    let mut buf = &bytes[..];
    let ftyp = Ftyp::decode(&mut buf).expect("ftyp");
    assert_eq!(ftyp.major_brand, b"iso6".into());
    assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
    let moov = Moov::decode(&mut buf).expect("moov");
    assert!(buf.is_empty(), "nothing after moov");

    let mvex = moov.mvex.as_ref().expect("mvex: samples live in fragments");
    assert_eq!(
        mvex.trex.iter().map(|t| t.track_id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(
        mvex.trex
            .iter()
            .all(|t| t.default_sample_description_index == 1)
    );
    assert_eq!(moov.mvhd.next_track_id, 3);

    let video = &moov.trak[0];
    assert_eq!(video.tkhd.track_id, 1);
    assert_eq!(
        (video.tkhd.width.integer(), video.tkhd.height.integer()),
        (1280, 720)
    );
    assert_eq!(video.mdia.mdhd.timescale, 90_000);
    assert_eq!(video.mdia.hdlr.handler, b"vide".into());
    assert!(video.mdia.minf.vmhd.is_some());
    let Codec::Avc1(avc1) = &video.mdia.minf.stbl.stsd.codecs[0] else {
        panic!("video sample entry is not avc1");
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (1280, 720));
    assert_eq!(avc1.avcc.avc_profile_indication, 0x64);
    assert_eq!(avc1.avcc.avc_level_indication, 0x1f);
    assert_eq!(avc1.avcc.length_size, 4);
    assert_eq!(avc1.avcc.sequence_parameter_sets, vec![SPS.to_vec()]);
    assert_eq!(avc1.avcc.picture_parameter_sets, vec![PPS.to_vec()]);
    let ext = avc1
        .avcc
        .ext
        .as_ref()
        .expect("High profile carries the avcC extension");
    assert_eq!(
        (ext.chroma_format, ext.bit_depth_luma, ext.bit_depth_chroma),
        (1, 8, 8)
    );

    let audio = &moov.trak[1];
    assert_eq!(audio.tkhd.track_id, 2);
    assert_eq!(audio.mdia.mdhd.timescale, 48_000);
    assert_eq!(audio.mdia.hdlr.handler, b"soun".into());
    assert!(audio.mdia.minf.smhd.is_some());
    let Codec::Mp4a(mp4a) = &audio.mdia.minf.stbl.stsd.codecs[0] else {
        panic!("audio sample entry is not mp4a");
    };
    assert_eq!(mp4a.audio.channel_count, 2);
    assert_eq!(mp4a.audio.sample_rate.integer(), 48_000);
    let config = &mp4a.esds.es_desc.dec_config;
    assert_eq!(config.object_type_indication, 0x40);
    assert_eq!(config.stream_type, 5);
    assert_eq!(
        config.dec_specific.as_ref().expect("ASC").raw,
        vec![0x11, 0x90]
    );
}

#[test]
fn part_is_moof_and_mdat_with_offsets_flags_and_signed_composition_offsets() {
    let mut segmenter = Segmenter::new(segmenter_config(false), 0);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // B-frame style offsets: decode order I P B B P B, some presented before decode time
    // plus a shift (negative offsets need trun version 1).
    let offsets = [3000, 12000, -3000, 0, 6000, -6000];
    for (k, audio_ticks) in [48_000u64, 49_024, 50_048].into_iter().enumerate() {
        segmenter
            .push(
                Sample {
                    track_id: 2,
                    decode_ticks: audio_ticks,
                    composition_offset_ticks: 0,
                    keyframe: true,
                    data: Bytes::from(vec![0xA0 + k as u8; 10 + k]),
                    captured_at: now,
                },
                now,
            )
            .expect("audio");
    }
    for (n, offset) in offsets.into_iter().enumerate() {
        segmenter
            .push(
                Sample {
                    track_id: 1,
                    decode_ticks: 90_000 + n as u64 * 3000,
                    composition_offset_ticks: offset,
                    keyframe: n == 0,
                    data: Bytes::from(vec![n as u8; 100 + n]),
                    captured_at: now,
                },
                now,
            )
            .expect("video");
    }
    let Some(SegmenterEvent::Part(part)) = segmenter.poll_event() else {
        panic!("a part after six frames");
    };
    let mut buf = &part.bytes[..];
    let moof = Moof::decode(&mut buf).expect("moof");
    assert_eq!(moof.mfhd.sequence_number, 1);
    assert_eq!(moof.traf.len(), 2);
    let moof_len = part.bytes.len() - buf.len();
    let mdat = mp4_atom::Mdat::decode_maybe(&mut buf)
        .expect("mdat")
        .expect("present");
    assert!(buf.is_empty());

    let v = &moof.traf[0];
    assert_eq!(v.tfhd.track_id, 1);
    assert!(v.tfhd.default_base_is_moof);
    assert_eq!(
        v.tfdt.as_ref().expect("tfdt").base_media_decode_time,
        90_000
    );
    let TrunSamples::Explicit(entries) = &v.trun[0].samples else {
        panic!("explicit trun")
    };
    assert_eq!(entries.len(), 6);
    for (n, e) in entries.iter().enumerate() {
        assert_eq!(e.duration, Some(3000));
        assert_eq!(e.size, Some(100 + n as u32));
        assert_eq!(
            e.flags,
            Some(if n == 0 {
                SAMPLE_FLAGS_SYNC
            } else {
                SAMPLE_FLAGS_NON_SYNC
            })
        );
        assert_eq!(e.cts, Some(i64::from(offsets[n])));
    }
    // data_offset counts from the first byte of moof and lands on the first video byte.
    let video_offset = usize::try_from(v.trun[0].data_offset.expect("offset")).expect("positive");
    assert_eq!(video_offset, moof_len + 8);
    assert_eq!(&mdat.data[..100], &[0u8; 100][..]);

    let a = &moof.traf[1];
    assert_eq!(a.tfhd.track_id, 2);
    assert_eq!(
        a.tfdt.as_ref().expect("tfdt").base_media_decode_time,
        48_000
    );
    let TrunSamples::Explicit(audio) = &a.trun[0].samples else {
        panic!("explicit trun")
    };
    assert_eq!(
        audio.iter().map(|e| e.duration).collect::<Vec<_>>(),
        [Some(1024); 3]
    );
    assert_eq!(
        audio.iter().map(|e| e.size).collect::<Vec<_>>(),
        [Some(10), Some(11), Some(12)]
    );
    assert!(audio.iter().all(|e| e.cts.is_none()));
    let audio_offset = usize::try_from(a.trun[0].data_offset.expect("offset")).expect("positive");
    let video_bytes: usize = (0..6).map(|n| 100 + n).sum();
    assert_eq!(audio_offset, video_offset + video_bytes);
    assert_eq!(
        &part.bytes[audio_offset..audio_offset + 10],
        &[0xA0; 10][..]
    );
}
