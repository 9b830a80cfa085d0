//! `[encoder]`: how renditions are encoded. Owned here, parsed by the configuration;
//! this file imports nothing outside `pipeline`.

use serde::Deserialize;

use super::EncoderChoice;

/// `[encoder]`: the video encoder (libx264 by default), libav's `aac` for audio.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderOptions {
    /// "auto" (default: the first GPU encoder that opens, else libx264/libx265), "x264",
    /// "x265", "nvenc", "vaapi" or "qsv". Probed at start-up: an encoder named here that
    /// cannot open stops start-up with libav's error.
    pub encoder: EncoderChoice,
    /// x264 preset. Default "veryfast". Slower presets cost CPU, not latency: with
    /// `tune=zerolatency` there is no lookahead either way.
    pub preset: String,
    /// Video bit rate, kbit/s (also the VBV max rate). Default 2500.
    pub video_bitrate_kbps: u32,
    /// VBV buffer, milliseconds of `video_bitrate_kbps`. Default 1000. Smaller keeps part
    /// sizes even (steadier delivery), larger keeps quality.
    pub vbv_buffer_ms: u32,
    /// Audio bit rate, kbit/s. Default 128.
    pub audio_bitrate_kbps: u32,
    /// Consecutive B-frames. Default 0: each B-frame adds a frame of encoder delay.
    pub bframes: u32,
    /// Encoder threads; 0 lets x264 decide. Default 0. zerolatency uses slice threads,
    /// which add no delay.
    pub threads: u32,
    /// Give a source that sends no sound (a camera without a microphone) a silent AAC
    /// track, timed by its pictures. Default false. iOS players have shown a black
    /// picture for HLS without audio.
    pub silent_audio: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            encoder: EncoderChoice::Auto,
            preset: "veryfast".into(),
            video_bitrate_kbps: 2500,
            vbv_buffer_ms: 1000,
            audio_bitrate_kbps: 128,
            bframes: 0,
            threads: 0,
            silent_audio: false,
        }
    }
}
