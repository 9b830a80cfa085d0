//! The tracks of a passed-through camera, from retina's codec parameters.

use retina::codec::{ParametersRef, VideoParameters, VideoParametersCodec};

use crate::cmaf::{AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::cmaf::{AacConfig, AvcConfig, CodecConfig, HevcConfig, Timescale, TrackInfo};
use crate::ingest::IngestError;

/// The rendition's tracks from retina's parameters.
pub(super) fn tracks_of(
    name: &str,
    video: Option<ParametersRef<'_>>,
    audio: Option<ParametersRef<'_>>,
    frame_ticks: u32,
) -> Result<Vec<TrackInfo>, IngestError> {
    let unsupported = |reason: String| IngestError::Unsupported {
        source_name: name.to_string(),
        reason,
    };
    let Some(ParametersRef::Video(video)) = video else {
        return Err(unsupported("no video parameters after a keyframe".into()));
    };
    let mut tracks = vec![TrackInfo {
        track_id: VIDEO_TRACK_ID,
        timescale: Timescale::VIDEO_90K,
        codec: video_codec(video).map_err(unsupported)?,
        nominal_sample_ticks: frame_ticks,
        average_bitrate: 0,
    }];
    if let Some(ParametersRef::Audio(audio)) = audio {
        let aac = AacConfig::from_audio_specific_config(audio.extra_data())
            .map_err(|e| unsupported(format!("audio: {e}")))?;
        tracks.push(TrackInfo {
            track_id: AUDIO_TRACK_ID,
            timescale: Timescale(audio.clock_rate()),
            codec: CodecConfig::Aac(aac),
            nominal_sample_ticks: audio.frame_length().map_or(1024, |n| n.get()),
            average_bitrate: 0,
        });
    }
    Ok(tracks)
}

fn video_codec(video: &VideoParameters) -> Result<CodecConfig, String> {
    let (width, height) = video.pixel_dimensions();
    let width = u16::try_from(width).unwrap_or(u16::MAX);
    let height = u16::try_from(height).unwrap_or(u16::MAX);
    Ok(match video.codec_params() {
        VideoParametersCodec::H264 { sps, pps } => {
            AvcConfig::new(sps.to_vec(), pps.to_vec(), width, height)
                .map(CodecConfig::Avc)
                .map_err(|e| e.to_string())?
        }
        VideoParametersCodec::H265 { vps, sps, pps } => {
            HevcConfig::new(vps.to_vec(), sps.to_vec(), pps.to_vec(), width, height)
                .map(CodecConfig::Hevc)
                .map_err(|e| e.to_string())?
        }
        other => return Err(format!("video codec {other:?} cannot be passed through")),
    })
}
