//! Choosing a video encoder: CPU (libx264, libx265) or GPU (NVENC, VAAPI, Quick Sync)
//! through libav, probed once at start-up by opening it.
//!
//! `auto` takes the first GPU encoder that opens and otherwise the CPU one; an encoder
//! asked for by name that cannot open stops start-up, naming the encoder and libav's
//! error. The GPU paths share everything with the CPU path but the libav name, the
//! options and the pixel format (NVENC and Quick Sync take frames from system memory;
//! VAAPI wants hardware frames, which Mirror does not upload, so VAAPI fails its probe
//! with libav's own message).

use std::collections::HashMap;
use std::sync::Mutex;

use ffmpeg::{Dictionary, Rational, codec, encoder, format};
use ffmpeg_next as ffmpeg;
use serde::Deserialize;

use super::PipelineError;
use crate::cmaf::codec::VideoCodec;

/// `encoder` in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    /// The first GPU encoder that opens, else the CPU one (default).
    #[default]
    Auto,
    /// libx264 (H.264 only).
    X264,
    /// libx265 (H.265 only).
    X265,
    /// NVIDIA NVENC.
    Nvenc,
    /// VAAPI (Intel, AMD on Linux).
    Vaapi,
    /// Intel Quick Sync.
    Qsv,
}

/// A concrete libav video encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncoderId {
    /// libav's name, e.g. `libx264`, `h264_nvenc`.
    pub name: &'static str,
    /// What it produces.
    pub codec: VideoCodec,
}

impl EncoderChoice {
    /// The libav encoder this choice means for `codec`, or why it cannot make it.
    fn candidate(self, codec: VideoCodec) -> Result<EncoderId, String> {
        let name = match (self, codec) {
            (EncoderChoice::X264, VideoCodec::H264) | (EncoderChoice::Auto, VideoCodec::H264) => {
                "libx264"
            }
            (EncoderChoice::X265, VideoCodec::H265) | (EncoderChoice::Auto, VideoCodec::H265) => {
                "libx265"
            }
            (EncoderChoice::X264, VideoCodec::H265) => return Err("x264 makes H.264 only".into()),
            (EncoderChoice::X265, VideoCodec::H264) => return Err("x265 makes H.265 only".into()),
            (EncoderChoice::Nvenc, VideoCodec::H264) => "h264_nvenc",
            (EncoderChoice::Nvenc, VideoCodec::H265) => "hevc_nvenc",
            (EncoderChoice::Vaapi, VideoCodec::H264) => "h264_vaapi",
            (EncoderChoice::Vaapi, VideoCodec::H265) => "hevc_vaapi",
            (EncoderChoice::Qsv, VideoCodec::H264) => "h264_qsv",
            (EncoderChoice::Qsv, VideoCodec::H265) => "hevc_qsv",
        };
        Ok(EncoderId { name, codec })
    }

    /// The order `auto` tries GPU encoders in.
    const GPUS: [EncoderChoice; 3] = [
        EncoderChoice::Nvenc,
        EncoderChoice::Qsv,
        EncoderChoice::Vaapi,
    ];
}

/// Why a requested encoder cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("encoder {choice:?} ({name}): {reason}")]
pub struct ProbeError {
    /// What was asked for.
    pub choice: EncoderChoice,
    /// The libav encoder tried.
    pub name: &'static str,
    /// libav's error, or why the choice cannot make the codec.
    pub reason: String,
}

/// Resolves `choice` for `codec`, opening each candidate once (results are cached for
/// the process: a GPU that is absent stays absent).
pub fn select_encoder(choice: EncoderChoice, codec: VideoCodec) -> Result<EncoderId, ProbeError> {
    if choice == EncoderChoice::Auto {
        // libav logs why each absent GPU fails; for `auto` that is expected, not news.
        let _ = crate::libav::init();
        let level = ffmpeg::util::log::get_level().unwrap_or(ffmpeg::util::log::Level::Quiet);
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
        let found = EncoderChoice::GPUS
            .into_iter()
            .find_map(|gpu| select_encoder(gpu, codec).ok());
        // Back to what `libav::init` chose (off unless MIRROR_LIBAV_LOG says).
        ffmpeg::util::log::set_level(level);
        if let Some(id) = found {
            tracing::info!(encoder = id.name, "auto: GPU encoder selected");
            return Ok(id);
        }
    }
    let id = choice.candidate(codec).map_err(|reason| ProbeError {
        choice,
        name: "-",
        reason,
    })?;
    static PROBED: Mutex<Option<HashMap<EncoderId, Result<(), String>>>> = Mutex::new(None);
    let mut cache = PROBED.lock().unwrap_or_else(|e| e.into_inner());
    let result = cache
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_insert_with(|| probe(id))
        .clone();
    result.map(|()| id).map_err(|reason| ProbeError {
        choice,
        name: id.name,
        reason,
    })
}

/// Opens `id` for a small picture and closes it again.
fn probe(id: EncoderId) -> Result<(), String> {
    crate::libav::init().map_err(|e| e.to_string())?;
    let frame_rate = Rational(30, 1);
    open_video(id, 320, 180, 500, frame_rate, 30, &ProbeOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The knobs of [`open_video`] besides size and rate.
#[derive(Debug, Clone, Default)]
pub(super) struct ProbeOptions {
    /// x264/x265 preset name.
    pub preset: Option<String>,
    /// VBV buffer in milliseconds of the bit rate.
    pub vbv_buffer_ms: u32,
    /// Consecutive B-frames.
    pub bframes: u32,
    /// Threads (0: the encoder decides).
    pub threads: u32,
}

/// The pixel format frames must have for `id`: yuv420p when it takes it, else NV12.
pub(super) fn pixel_format(id: EncoderId) -> format::Pixel {
    let formats: Vec<format::Pixel> = encoder::find_by_name(id.name)
        .and_then(|c| c.video().ok())
        .and_then(|v| v.formats().map(|f| f.collect()))
        .unwrap_or_default();
    if formats.is_empty() || formats.contains(&format::Pixel::YUV420P) {
        format::Pixel::YUV420P
    } else if formats.contains(&format::Pixel::NV12) {
        format::Pixel::NV12
    } else {
        formats[0]
    }
}

/// Opens encoder `id` for low-latency live encoding: closed GOPs of exactly `gop`
/// frames, no scene-cut keyframes, forced keyframes as IDRs, parameter sets in
/// extradata (global header).
pub(super) fn open_video(
    id: EncoderId,
    width: u32,
    height: u32,
    bitrate_kbps: u32,
    frame_rate: Rational,
    gop: u32,
    options: &ProbeOptions,
) -> Result<encoder::video::Encoder, PipelineError> {
    let codec = encoder::find_by_name(id.name).ok_or(PipelineError::EncoderMissing(id.name))?;
    let libav = |what| super::encode::libav(id.name, what);
    let mut video = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(libav("creating the context"))?;
    video.set_width(width);
    video.set_height(height);
    video.set_format(pixel_format(id));
    video.set_time_base(Rational(1, 90_000));
    video.set_frame_rate(Some(frame_rate));
    video.set_bit_rate(bitrate_kbps as usize * 1000);
    video.set_max_bit_rate(bitrate_kbps as usize * 1000);
    video.set_gop(gop);
    video.set_max_b_frames(options.bframes as usize);
    video.set_flags(codec::Flags::GLOBAL_HEADER);
    let vbv_kbit = u64::from(bitrate_kbps) * u64::from(options.vbv_buffer_ms.max(100)) / 1000;
    let b = options.bframes;
    let mut dict = Dictionary::new();
    match id.name {
        "libx264" | "libx265" => {
            dict.set("preset", options.preset.as_deref().unwrap_or("veryfast"));
            dict.set("tune", "zerolatency");
            dict.set("forced-idr", "1");
            if options.threads > 0 {
                dict.set("threads", &options.threads.to_string());
            }
            let common = format!(
                "keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={b}:\
                 vbv-maxrate={bitrate_kbps}:vbv-bufsize={vbv_kbit}"
            );
            if id.name == "libx264" {
                dict.set("x264-params", &common);
            } else {
                dict.set("x265-params", &format!("{common}:log-level=error"));
            }
        }
        name if name.ends_with("_nvenc") => {
            dict.set("preset", "p3");
            dict.set("tune", "ull");
            dict.set("zerolatency", "1");
            dict.set("forced-idr", "1");
            dict.set("rc", "cbr");
        }
        name if name.ends_with("_qsv") => {
            dict.set("preset", "veryfast");
            dict.set("async_depth", "1");
            dict.set("look_ahead", "0");
            dict.set("forced_idr", "1");
        }
        _ => {}
    }
    video.open_with(dict).map_err(libav("opening"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_the_cpu_encoder_without_a_gpu() {
        let id = select_encoder(EncoderChoice::Auto, VideoCodec::H264).expect("libx264 opens");
        // This machine has no GPU: auto must end at libx264. On a machine with one, the
        // GPU encoder it picked must be one that opened.
        assert!(
            ["libx264", "h264_nvenc", "h264_qsv", "h264_vaapi"].contains(&id.name),
            "{id:?}"
        );
        let hevc = select_encoder(EncoderChoice::X265, VideoCodec::H265).expect("libx265 opens");
        assert_eq!(hevc.name, "libx265");
    }

    #[test]
    fn a_named_encoder_that_cannot_open_names_itself_and_libavs_error() {
        // No NVIDIA driver here: the probe fails and says so.
        if let Err(error) = select_encoder(EncoderChoice::Nvenc, VideoCodec::H264) {
            let text = error.to_string();
            assert!(
                text.contains("Nvenc") && text.contains("h264_nvenc"),
                "{text}"
            );
            assert!(
                text.contains("opening") || text.contains("not available"),
                "{text}"
            );
        }
        let error = select_encoder(EncoderChoice::X264, VideoCodec::H265).expect_err("x264 ≠ HEVC");
        assert!(error.to_string().contains("H.264 only"), "{error}");
        let vaapi = select_encoder(EncoderChoice::Vaapi, VideoCodec::H264);
        assert!(
            vaapi.is_err(),
            "VAAPI needs hardware frames, which are never uploaded"
        );
    }
}
