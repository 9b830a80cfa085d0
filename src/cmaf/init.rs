//! The CMAF init segment: `ftyp` + `moov` with one `trak` per track and an `mvex/trex`
//! for each, so that every sample lives in fragments (ISO/IEC 23000-19 7.3).

use mp4_atom::{
    Audio, Avc1, Avcc, AvccExt, Btrt, Codec, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Hvc1,
    HvcCArray, Hvcc, Mdhd, Mdia, Minf, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tkhd, Trak,
    Trex, Url, Visual, Vmhd, esds,
};

use super::{AacConfig, AvcConfig, CodecConfig, HevcConfig, TrackInfo};

/// Why an init segment could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A rendition needs at least one track.
    #[error("a rendition needs at least one track")]
    NoTracks,
    /// `mp4-atom` refused a box (a field out of its range).
    #[error("encoding the {0} box failed: {1}")]
    Encode(&'static str, mp4_atom::Error),
}

/// CMAF brands (ISO/IEC 23000-19 7.2): `cmfc` for the structural brand, `cmf2` because
/// every fragment carries `tfdt` and default-base-is-moof; `iso6` for the ISOBMFF
/// version those need. Safari insists on a compatible brand it knows.
fn ftyp() -> Ftyp {
    Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"cmfc"),
            FourCC::new(b"cmf2"),
            FourCC::new(b"mp41"),
        ],
    }
}

/// Writes the init segment for `tracks` (ftyp + moov).
pub fn write_init_segment(tracks: &[TrackInfo]) -> Result<Vec<u8>, InitError> {
    if tracks.is_empty() {
        return Err(InitError::NoTracks);
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: tracks.iter().map(|t| t.track_id).max().unwrap_or(0) + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex {
                    track_id: t.track_id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak: tracks.iter().map(trak).collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp()
        .encode(&mut out)
        .map_err(|e| InitError::Encode("ftyp", e))?;
    moov.encode(&mut out)
        .map_err(|e| InitError::Encode("moov", e))?;
    Ok(out)
}

fn trak(track: &TrackInfo) -> Trak {
    let (handler, name, width, height, volume) = match &track.codec {
        CodecConfig::Avc(AvcConfig { width, height, .. })
        | CodecConfig::Hevc(HevcConfig { width, height, .. }) => {
            (b"vide", "Mirror video", *width, *height, 0)
        }
        CodecConfig::Aac(_) => (b"soun", "Mirror audio", 0, 0, 1),
    };
    let is_video = handler == b"vide";
    Trak {
        tkhd: Tkhd {
            track_id: track.track_id,
            enabled: true,
            in_movie: true,
            volume: volume.into(),
            // ISOBMFF 8.3.2: audio tracks share alternate group... none here: each track
            // of a rendition is presented together.
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: track.timescale.0,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(handler),
                name: name.into(),
            },
            minf: Minf {
                vmhd: is_video.then(Vmhd::default),
                smhd: (!is_video).then(Smhd::default),
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![sample_entry(track)],
                    },
                    // Empty tables: every sample is in a fragment (ISOBMFF 8.8.1).
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn btrt(track: &TrackInfo) -> Option<Btrt> {
    (track.average_bitrate > 0).then_some(Btrt {
        buffer_size_db: 0,
        max_bitrate: track.average_bitrate,
        avg_bitrate: track.average_bitrate,
    })
}

fn visual(width: u16, height: u16, compressor: &str) -> Visual {
    Visual {
        data_reference_index: 1,
        width,
        height,
        compressor: compressor.into(),
        ..Default::default()
    }
}

fn sample_entry(track: &TrackInfo) -> Codec {
    match &track.codec {
        CodecConfig::Avc(c) => avc1(c, btrt(track)).into(),
        CodecConfig::Hevc(c) => hvc1(c, btrt(track)).into(),
        CodecConfig::Aac(c) => mp4a(c, track).into(),
    }
}

fn avc1(c: &AvcConfig, btrt: Option<Btrt>) -> Avc1 {
    let ext = c.avcc_extension().map(
        |(chroma_format, bit_depth_luma, bit_depth_chroma)| AvccExt {
            chroma_format,
            bit_depth_luma,
            bit_depth_chroma,
            sequence_parameter_sets_ext: vec![],
        },
    );
    Avc1 {
        visual: visual(c.width, c.height, "Mirror AVC"),
        avcc: Avcc {
            configuration_version: 1,
            avc_profile_indication: c.sps[1],
            profile_compatibility: c.sps[2],
            avc_level_indication: c.sps[3],
            length_size: 4,
            sequence_parameter_sets: vec![c.sps.clone()],
            picture_parameter_sets: vec![c.pps.clone()],
            ext,
        },
        btrt,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
        spatial: None,
    }
}

fn hvc1(c: &HevcConfig, btrt: Option<Btrt>) -> Hvc1 {
    let p = &c.profile;
    let array = |nal_unit_type: u8, nal: &[u8]| HvcCArray {
        completeness: true,
        nal_unit_type,
        nalus: vec![nal.to_vec()],
    };
    Hvc1 {
        visual: visual(c.width, c.height, "Mirror HEVC"),
        hvcc: Hvcc {
            configuration_version: 1,
            general_profile_space: p.profile_space,
            general_tier_flag: p.tier_flag,
            general_profile_idc: p.profile_idc,
            general_profile_compatibility_flags: p.compatibility_flags,
            general_constraint_indicator_flags: p.constraint_flags,
            general_level_idc: p.level_idc,
            min_spatial_segmentation_idc: 0,
            parallelism_type: 0,
            chroma_format_idc: 1,
            bit_depth_luma_minus8: 0,
            bit_depth_chroma_minus8: 0,
            avg_frame_rate: 0,
            constant_frame_rate: 0,
            num_temporal_layers: 1,
            temporal_id_nested: true,
            length_size_minus_one: 3,
            arrays: vec![array(32, &c.vps), array(33, &c.sps), array(34, &c.pps)],
        },
        lhvc: None,
        btrt,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
        ccst: None,
        spatial: None,
    }
}

fn mp4a(c: &AacConfig, track: &TrackInfo) -> Mp4a {
    Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(c.channels.max(1)),
            sample_size: 16,
            // The 16.16 field cannot hold rates above 65535 Hz; 0 then, as ISOBMFF allows
            // when the decoder config carries the real rate.
            sample_rate: u16::try_from(c.sample_rate).unwrap_or(0).into(),
        },
        esds: Esds {
            es_desc: esds::EsDescriptor {
                es_id: u16::try_from(track.track_id).unwrap_or(0),
                dec_config: esds::DecoderConfig {
                    // ISO/IEC 14496-1 table 5: 0x40 = MPEG-4 audio; stream type 5 = audio.
                    object_type_indication: 0x40,
                    stream_type: 5,
                    max_bitrate: track.average_bitrate,
                    avg_bitrate: track.average_bitrate,
                    dec_specific: Some(esds::DecoderSpecific {
                        profile: c.object_type,
                        chan_conf: c.channels,
                        raw: c.audio_specific_config.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        btrt: btrt(track),
        taic: None,
    }
}
