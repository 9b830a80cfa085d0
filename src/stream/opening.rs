//! Turning an opened source into samples for every rendition: a decoded source is
//! encoded into each (Mirror's own keyframe grid); an encoded one is passed through to
//! the renditions that copy it and decoded once for those that transcode it (keyframes
//! where the source has them). Each rendition gets its tracks, how to cut them, and the
//! typed profile its media names hash.

use std::time::Duration;

use super::StreamOptions;
use super::output::{Output, Prepared};
use super::status::StreamMode;
use crate::cmaf::codec::{CodecConfig, VideoCodec};
use crate::cmaf::{SegmenterConfig, TrackInfo, TrackKind};
use crate::ingest::slate::Slate;
use crate::ingest::{EncodedSource, Source};
use crate::pipeline::decode::AudioTranscoder;
use crate::pipeline::plan::{EncoderKnobs, VideoMaking};
use crate::pipeline::silence::SilentAudio;
use crate::pipeline::{
    Keyframes, RenditionPlan, RenditionProfile, SampleDecoder, Transcoder, VideoProfile,
};

/// An open source with what turns it into samples.
pub(super) enum Input {
    /// Decoded frames, encoded into every rendition.
    Raw {
        source: Box<dyn Source + Send>,
        transcoder: Box<Transcoder>,
    },
    /// Encoded samples, passed through to the `copies` renditions and decoded for the
    /// others.
    Encoded {
        source: Box<dyn EncodedSource + Send>,
        copies: Vec<usize>,
        transcoding: Option<Box<Transcoding>>,
        /// G.711 sound made into AAC for every rendition.
        audio: Option<Box<AudioToAac>>,
        /// Silence for every rendition of a source without sound
        /// (`encoder.silent_audio`), timed by its pictures.
        silence: Option<Box<SilentAudio>>,
    },
}

/// A camera's G.711 sound on its way to AAC.
pub(super) struct AudioToAac {
    pub(super) encoder: AudioTranscoder,
    pub(super) samples: Vec<crate::cmaf::Sample>,
}

/// The renditions of an encoded source that are transcoded: its samples decoded once
/// and encoded for each.
pub(super) struct Transcoding {
    pub(super) decoder: SampleDecoder,
    pub(super) transcoder: Transcoder,
    /// Output index of each of the transcoder's renditions.
    pub(super) outputs: Vec<usize>,
    pub(super) frames: Vec<crate::ingest::SourceFrame>,
    pub(super) samples: Vec<(usize, crate::cmaf::Sample)>,
}

/// What a connect produced: the input, and per rendition what to ready it with.
pub(super) struct Opening {
    pub(super) input: Input,
    pub(super) prepared: Vec<Prepared>,
    pub(super) fps: Option<(u32, u32)>,
    pub(super) mode: StreamMode,
}

/// Why a source could not be readied.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("rendition {0} is passthrough but the source is decoded")]
    CopyOfDecoded(String),
    #[error("the slate: {0}")]
    Slate(String),
}

/// The encoded profile of `video` made with `options`.
fn encoded_video(
    video: &VideoProfile,
    options: &StreamOptions,
    keyframes: Keyframes,
    frame_rate: (u32, u32),
) -> VideoMaking {
    VideoMaking::Encoded {
        encoder: video.encoder.name,
        width: video.width,
        height: video.height,
        bitrate_kbps: video.bitrate_kbps,
        options: EncoderKnobs::from(&options.encoder),
        keyframes,
        frame_rate,
    }
}

/// The video profile of an encoded rendition at the source's size unless it has its
/// own.
fn video_profile(plan: &RenditionPlan, source_size: (u32, u32)) -> Option<VideoProfile> {
    match plan {
        RenditionPlan::Passthrough => None,
        RenditionPlan::Transcode {
            encoder,
            size,
            bitrate_kbps,
        } => {
            let (width, height) = size.unwrap_or(source_size);
            Some(VideoProfile {
                encoder: *encoder,
                width,
                height,
                bitrate_kbps: *bitrate_kbps,
            })
        }
    }
}

/// A decoded source: every rendition encoded, on Mirror's own keyframe grid.
pub(super) fn open_raw(
    options: &StreamOptions,
    outputs: &[Output],
    source: Box<dyn Source + Send>,
) -> Result<Opening, OpenError> {
    let format = source.format();
    let profiles = outputs
        .iter()
        .map(|o| {
            video_profile(&o.plan, (format.width, format.height))
                .ok_or_else(|| OpenError::CopyOfDecoded(o.id.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    encode_all(options, source, profiles, true)
}

/// The slate while the source is down (`source.outage = "slate"`): every rendition
/// encoded from a still card at the picture size and codec its playlist has now (a
/// passed-through one by the configured encoder of its codec), with silence.
pub(super) fn open_slate(
    options: &StreamOptions,
    outputs: &[Output],
) -> Result<Opening, OpenError> {
    let pictures: Vec<(u32, u32, VideoCodec)> = outputs
        .iter()
        .map(|o| {
            o.tracks()
                .iter()
                .find_map(|t| match &t.codec {
                    CodecConfig::Avc(c) => Some((c.width, c.height, VideoCodec::H264)),
                    CodecConfig::Hevc(c) => Some((c.width, c.height, VideoCodec::H265)),
                    CodecConfig::Aac(_) => None,
                })
                .map_or(
                    (
                        options.source.width,
                        options.source.height,
                        VideoCodec::H264,
                    ),
                    |(w, h, codec)| (u32::from(w), u32::from(h), codec),
                )
        })
        .collect();
    let (width, height, _) = pictures
        .iter()
        .copied()
        .max_by_key(|&(w, h, _)| w * h)
        .unwrap_or((
            options.source.width,
            options.source.height,
            VideoCodec::H264,
        ));
    let profiles = outputs
        .iter()
        .zip(&pictures)
        .map(|(o, &(width, height, codec))| {
            let (encoder, bitrate_kbps) = match &o.plan {
                RenditionPlan::Transcode {
                    encoder,
                    bitrate_kbps,
                    ..
                } => (*encoder, *bitrate_kbps),
                RenditionPlan::Passthrough => (
                    crate::pipeline::select::select_encoder(options.encoder.encoder, codec)
                        .map_err(|e| OpenError::Slate(e.to_string()))?,
                    options.encoder.video_bitrate_kbps,
                ),
            };
            Ok(VideoProfile {
                encoder,
                width: width & !1,
                height: height & !1,
                bitrate_kbps,
            })
        })
        .collect::<Result<Vec<_>, OpenError>>()?;
    let source = Slate::open(
        &options.source,
        width & !1,
        height & !1,
        (options.source.fps, 1),
    )
    .map_err(|e| OpenError::Slate(e.to_string()))?;
    // The same tracks as the playlists have: silence only where there was sound.
    let with_audio = outputs
        .iter()
        .any(|o| o.tracks().iter().any(|t| t.kind() == TrackKind::Audio));
    encode_all(options, Box::new(source), profiles, with_audio)
}

/// A decoded source encoded into every rendition's `profiles` (and its sound, with
/// `with_audio`), keyframes on Mirror's own grid.
fn encode_all(
    options: &StreamOptions,
    source: Box<dyn Source + Send>,
    profiles: Vec<VideoProfile>,
    with_audio: bool,
) -> Result<Opening, OpenError> {
    let format = source.format();
    let fps = format.frame_rate;
    let fps = (
        u32::try_from(fps.numerator()).unwrap_or(30),
        u32::try_from(fps.denominator()).unwrap_or(1),
    );
    let keyframes = Keyframes::Every {
        frames: options.cmaf.keyframe_interval_frames(fps.0, fps.1),
    };
    let transcoder = Transcoder::open(&options.encoder, format, &profiles, keyframes, with_audio)?;
    let prepared = profiles
        .iter()
        .enumerate()
        .map(|(index, video)| {
            let tracks = transcoder.tracks(index).to_vec();
            let config = options.cmaf.segmenter_config(tracks.clone());
            Prepared {
                profile: RenditionProfile {
                    video: encoded_video(video, options, keyframes, fps),
                    audio_bitrate_kbps: with_audio.then_some(options.encoder.audio_bitrate_kbps),
                    source_codecs: None,
                    part_target: config.part_target,
                    segment_target: config.segment_target,
                },
                tracks,
                config,
            }
        })
        .collect();
    Ok(Opening {
        input: Input::Raw {
            source,
            transcoder: Box::new(transcoder),
        },
        prepared,
        fps: Some(fps),
        mode: StreamMode::Transcode,
    })
}

/// An encoded source: renditions passed through, and the others decoded once and
/// encoded with the source's keyframes; segments follow the source's GOP.
pub(super) fn open_encoded(
    options: &StreamOptions,
    outputs: &[Output],
    source: Box<dyn EncodedSource + Send>,
) -> Result<Opening, OpenError> {
    // G.711 or Opus sound becomes an AAC track of every rendition.
    let audio = match source.foreign_audio() {
        Some(foreign) => Some(Box::new(AudioToAac {
            encoder: AudioTranscoder::open(&options.encoder, foreign)?,
            samples: Vec::new(),
        })),
        None => None,
    };
    let mut tracks = source.tracks().to_vec();
    if let Some(audio) = &audio {
        tracks.push(audio.encoder.track().clone());
    }
    let silence =
        if options.encoder.silent_audio && !tracks.iter().any(|t| t.kind() == TrackKind::Audio) {
            let silence = SilentAudio::open(&options.encoder)?;
            tracks.push(silence.track().clone());
            Some(Box::new(silence))
        } else {
            None
        };
    let made_aac = audio.is_some() || silence.is_some();
    let source_codecs = crate::cmaf::codecs(&tracks);
    // Segments follow the source's GOP: a segment ends at the first keyframe at or after
    // the target, so the target is at least one GOP.
    let gop = source.keyframe_interval();
    let fps = source.frame_rate().unwrap_or((30, 1));
    if gop > options.cmaf.segment_target() + options.cmaf.part_target() {
        // An encoder's 2-10 s GOP makes 2-10 s segments: playback starts further
        // from the live edge. The encoder's keyframe interval is the fix.
        tracing::warn!(
            gop_ms = gop.as_millis(),
            segment_target_ms = options.cmaf.segment_target().as_millis(),
            "the source's GOP is longer than the segment target: segments follow the GOP; \
             set the encoder's keyframe interval to the segment target"
        );
    }
    let mut base = options.cmaf.segmenter_config(Vec::new());
    base.keyframes_on_segment_grid = false;
    base.segment_target = base.segment_target.max(gop);
    let config = |tracks: &[TrackInfo]| SegmenterConfig {
        tracks: tracks.to_vec(),
        ..base.clone()
    };
    let copies: Vec<usize> = (0..outputs.len())
        .filter(|&i| outputs[i].plan == RenditionPlan::Passthrough)
        .collect();
    let encoded: Vec<usize> = (0..outputs.len()).filter(|i| !copies.contains(i)).collect();
    let (transcoding, videos) = if encoded.is_empty() {
        (None, Vec::new())
    } else {
        let (transcoding, videos) =
            open_transcoding(options, &tracks, gop, fps, outputs, &encoded)?;
        (Some(Box::new(transcoding)), videos)
    };
    let gop_frames = gop_frames(gop, fps);
    let prepared = (0..outputs.len())
        .map(|index| {
            let (tracks, video) = match encoded.iter().position(|&i| i == index) {
                Some(j) => {
                    // The transcoded picture with the source's own sound.
                    let sound = tracks.iter().filter(|t| t.kind() == TrackKind::Audio);
                    let picture: &[TrackInfo] =
                        transcoding.as_ref().map_or(&[], |t| t.transcoder.tracks(j));
                    (
                        picture.iter().chain(sound).cloned().collect(),
                        encoded_video(
                            &videos[j],
                            options,
                            Keyframes::FollowSource { gop_frames },
                            fps,
                        ),
                    )
                }
                None => (tracks.clone(), VideoMaking::Copy),
            };
            let config = config(&tracks);
            Prepared {
                profile: RenditionProfile {
                    video,
                    audio_bitrate_kbps: made_aac.then_some(options.encoder.audio_bitrate_kbps),
                    source_codecs: Some(source_codecs.clone()),
                    part_target: config.part_target,
                    segment_target: config.segment_target,
                },
                tracks,
                config,
            }
        })
        .collect();
    let mode = match (transcoding.is_some(), copies.is_empty()) {
        (false, _) => StreamMode::Passthrough,
        (true, true) => StreamMode::Transcode,
        (true, false) => StreamMode::Mixed,
    };
    let fps = source.frame_rate();
    Ok(Opening {
        input: Input::Encoded {
            source,
            copies,
            transcoding,
            audio,
            silence,
        },
        prepared,
        fps,
        mode,
    })
}

/// The source's GOP in frames at `fps`.
fn gop_frames(gop: Duration, (num, den): (u32, u32)) -> u32 {
    ((gop.as_secs_f64() * f64::from(num) / f64::from(den.max(1))).round() as u32).max(1)
}

/// Renditions that transcode what the others pass through: the pictures decoded once
/// and encoded for each with the source's keyframes, so that every rendition's segments
/// start at the same frames. Only the pictures are decoded: the source's sound (or the
/// AAC made from its G.711) goes to these renditions as it is.
fn open_transcoding(
    options: &StreamOptions,
    tracks: &[TrackInfo],
    gop: Duration,
    fps: (u32, u32),
    outputs: &[Output],
    encoded: &[usize],
) -> Result<(Transcoding, Vec<VideoProfile>), OpenError> {
    let rate = ffmpeg_next::Rational(
        i32::try_from(fps.0).unwrap_or(30),
        i32::try_from(fps.1).unwrap_or(1),
    );
    let decoder = SampleDecoder::open(tracks, rate)?;
    let format = decoder.format();
    let videos: Vec<VideoProfile> = encoded
        .iter()
        .filter_map(|&i| video_profile(&outputs[i].plan, (format.width, format.height)))
        .collect();
    let transcoder = Transcoder::open(
        &options.encoder,
        format,
        &videos,
        Keyframes::FollowSource {
            gop_frames: gop_frames(gop, fps),
        },
        false,
    )?;
    Ok((
        Transcoding {
            decoder,
            transcoder,
            outputs: encoded.to_vec(),
            frames: Vec::new(),
            samples: Vec::new(),
        },
        videos,
    ))
}
