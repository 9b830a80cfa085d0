//! The encoders: libx264 (tune zerolatency, closed GOP, a keyframe every segment
//! target) and libav's native `aac`.

use std::collections::VecDeque;
use std::time::SystemTime;

use ffmpeg::{Dictionary, Rational, codec, encoder, format, frame, picture};
use ffmpeg_next as ffmpeg;

use super::{AUDIO_TRACK_ID, PipelineError, VIDEO_TRACK_ID, ffi};
use crate::cmaf::codec::{ParameterSets, VideoCodec, annexb_to_length_prefixed};
use crate::cmaf::{AacConfig, CodecConfig, Sample, Timescale, TrackInfo};
use crate::config::Settings;
use crate::ingest::SourceFormat;

const X264: &str = "libx264";
const AAC: &str = "aac";

/// Capture times of frames inside an encoder, keyed by their pts in the encoder's time
/// base. The encoder may hold frames (B-frames) and reorder them, so each packet looks
/// its capture time up by pts.
#[derive(Default)]
struct CaptureTimes(VecDeque<(i64, SystemTime)>);

impl CaptureTimes {
    fn insert(&mut self, pts: i64, at: SystemTime) {
        self.0.push_back((pts, at));
    }

    /// The capture time of `pts`, forgetting it and any older frame the encoder dropped.
    fn take(&mut self, pts: i64) -> SystemTime {
        let found = self.0.iter().position(|&(p, _)| p == pts);
        match found {
            Some(i) => {
                let at = self.0[i].1;
                self.0.remove(i);
                // Frames more than a few GOPs older can no longer come out.
                while self.0.len() > 512 {
                    self.0.pop_front();
                }
                at
            }
            None => SystemTime::now(),
        }
    }
}

/// Wraps a libav error with the encoder and what it was doing.
fn libav(encoder: &'static str, what: &'static str) -> impl FnOnce(ffmpeg::Error) -> PipelineError {
    move |error| PipelineError::Libav {
        encoder,
        what,
        error,
    }
}

/// A fresh, unopened encoder context for the libav encoder `name`.
fn encoder_context(name: &'static str) -> Result<encoder::Encoder, PipelineError> {
    let codec = encoder::find_by_name(name).ok_or(PipelineError::EncoderMissing(name))?;
    Ok(codec::context::Context::new_with_codec(codec).encoder())
}

fn rescale(pts: i64, from: Rational, to: Rational) -> i64 {
    let num = i128::from(pts) * i128::from(from.numerator()) * i128::from(to.denominator());
    let den = i128::from(from.denominator()) * i128::from(to.numerator());
    i64::try_from(num / den.max(1)).unwrap_or(i64::MAX)
}

/// libx264 → H.264 samples on a 90 kHz timeline.
pub struct VideoEncoder {
    encoder: encoder::video::Encoder,
    track: TrackInfo,
    time_base: Rational,
    keyframe_interval: u64,
    frames_in: u64,
    params: ParameterSets,
    /// Added to every DTS so the decode timeline starts at zero even when B-frames make
    /// libx264 start it negative; presentation times then get signed offsets.
    decode_shift: Option<i64>,
    capture: CaptureTimes,
}

impl VideoEncoder {
    /// Opens libx264 for frames of `format`.
    pub fn open(settings: &Settings, format: SourceFormat) -> Result<Self, PipelineError> {
        let mut video = encoder_context(X264)?
            .video()
            .map_err(libav(X264, "creating the context"))?;
        let time_base = Rational(1, 90_000);
        let e = &settings.encoder;
        let fps = format.frame_rate;
        let gop = settings.keyframe_interval_frames(
            u32::try_from(fps.numerator()).unwrap_or(30),
            u32::try_from(fps.denominator()).unwrap_or(1),
        );
        video.set_width(format.width);
        video.set_height(format.height);
        video.set_format(format::Pixel::YUV420P);
        video.set_time_base(time_base);
        video.set_frame_rate(Some(format.frame_rate));
        video.set_bit_rate(e.video_bitrate_kbps as usize * 1000);
        video.set_max_bit_rate(e.video_bitrate_kbps as usize * 1000);
        video.set_gop(gop);
        video.set_max_b_frames(e.bframes as usize);
        // SPS/PPS once in extradata, so the init segment can be written before the first
        // frame and samples carry no parameter sets.
        video.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut options = Dictionary::new();
        options.set("preset", &e.preset);
        options.set("tune", "zerolatency");
        options.set("forced-idr", "1");
        if e.threads > 0 {
            options.set("threads", &e.threads.to_string());
        }
        // Closed GOPs of exactly one segment target, no scene-cut keyframes: segments
        // start with an IDR at the same times in every run.
        let vbv_kbit = u64::from(e.video_bitrate_kbps) * u64::from(e.vbv_buffer_ms) / 1000;
        options.set(
            "x264-params",
            &format!(
                "keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={b}:\
                 vbv-maxrate={rate}:vbv-bufsize={vbv_kbit}",
                b = e.bframes,
                rate = e.video_bitrate_kbps,
            ),
        );
        let encoder = video.open_with(options).map_err(libav(X264, "opening"))?;
        let mut params = ParameterSets::default();
        let extradata = ffi::extradata(&encoder);
        annexb_to_length_prefixed(VideoCodec::H264, &extradata, &mut params).map_err(|error| {
            PipelineError::Codec {
                encoder: X264,
                error,
            }
        })?;
        let width = u16::try_from(format.width).unwrap_or(u16::MAX);
        let height = u16::try_from(format.height).unwrap_or(u16::MAX);
        let avc = params
            .avc_config(width, height)
            .map_err(|error| PipelineError::Codec {
                encoder: X264,
                error,
            })?;
        let nominal = 90_000 * i64::from(fps.denominator()) / i64::from(fps.numerator().max(1));
        Ok(Self {
            encoder,
            track: TrackInfo {
                track_id: VIDEO_TRACK_ID,
                timescale: Timescale::VIDEO_90K,
                codec: CodecConfig::Avc(avc),
                nominal_sample_ticks: u32::try_from(nominal).unwrap_or(3000),
                average_bitrate: e.video_bitrate_kbps * 1000,
            },
            time_base,
            keyframe_interval: u64::from(gop),
            frames_in: 0,
            params,
            decode_shift: None,
            capture: CaptureTimes::default(),
        })
    }

    /// The track this encoder feeds.
    pub fn track(&self) -> &TrackInfo {
        &self.track
    }

    /// Encodes one picture whose `pts` is in `time_base`.
    pub fn push(
        &mut self,
        mut picture: frame::Video,
        time_base: Rational,
        captured_at: SystemTime,
        out: &mut Vec<Sample>,
    ) -> Result<(), PipelineError> {
        if (picture.width(), picture.height(), picture.format())
            != (
                self.encoder.width(),
                self.encoder.height(),
                format::Pixel::YUV420P,
            )
        {
            return Err(PipelineError::FrameMismatch {
                encoder: X264,
                reason: format!(
                    "{}x{} {:?}, opened for {}x{} yuv420p",
                    picture.width(),
                    picture.height(),
                    picture.format(),
                    self.encoder.width(),
                    self.encoder.height()
                ),
            });
        }
        let pts = rescale(picture.pts().unwrap_or(0), time_base, self.time_base);
        picture.set_pts(Some(pts));
        // Force the IDR where the segment boundary falls, whatever the encoder's own GOP
        // counting thinks (forced-idr=1 makes a forced I an IDR).
        let boundary = self.frames_in.is_multiple_of(self.keyframe_interval);
        picture.set_kind(if boundary {
            picture::Type::I
        } else {
            picture::Type::None
        });
        self.frames_in += 1;
        self.capture.insert(pts, captured_at);
        self.encoder
            .send_frame(&picture)
            .map_err(libav(X264, "sending a frame"))?;
        self.drain(out)
    }

    /// Flushes the frames libx264 still holds.
    pub fn finish(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        self.encoder.send_eof().map_err(libav(X264, "flushing"))?;
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let (Some(pts), Some(dts)) = (packet.pts(), packet.dts()) else {
                tracing::warn!("libx264 packet without timestamps dropped");
                continue;
            };
            let Some(data) = packet.data() else { continue };
            let shift = *self.decode_shift.get_or_insert((-dts).max(0));
            let decode = dts + shift;
            let converted =
                match annexb_to_length_prefixed(VideoCodec::H264, data, &mut self.params) {
                    Ok(c) => c,
                    Err(error) => {
                        tracing::warn!(%error, pts, "unusable libx264 packet dropped");
                        continue;
                    }
                };
            out.push(Sample {
                track_id: VIDEO_TRACK_ID,
                decode_ticks: u64::try_from(decode).unwrap_or(0),
                composition_offset_ticks: i32::try_from(pts - decode).unwrap_or(0),
                keyframe: packet.is_key() && converted.has_idr,
                data: converted.data,
                captured_at: self.capture.take(pts),
            });
        }
        Ok(())
    }
}

/// libav's `aac` → AAC-LC samples on a timeline of the sampling rate.
pub struct AudioEncoder {
    encoder: encoder::audio::Encoder,
    track: TrackInfo,
    time_base: Rational,
    capture: CaptureTimes,
}

impl AudioEncoder {
    /// Opens the AAC encoder for the source's sampling rate, stereo, float planar.
    pub fn open(settings: &Settings, format: SourceFormat) -> Result<Self, PipelineError> {
        let mut audio = encoder_context(AAC)?
            .audio()
            .map_err(libav(AAC, "creating the context"))?;
        let rate = i32::try_from(format.sample_rate).unwrap_or(48_000);
        let time_base = Rational(1, rate);
        audio.set_rate(rate);
        audio.set_channel_layout(ffmpeg::ChannelLayout::STEREO);
        audio.set_channels(2);
        audio.set_format(format::Sample::F32(format::sample::Type::Planar));
        audio.set_bit_rate(settings.encoder.audio_bitrate_kbps as usize * 1000);
        audio.set_time_base(time_base);
        audio.set_flags(codec::Flags::GLOBAL_HEADER);
        let encoder = audio.open().map_err(libav(AAC, "opening"))?;
        let asc = ffi::extradata(&encoder);
        let aac =
            AacConfig::from_audio_specific_config(&asc).map_err(|error| PipelineError::Codec {
                encoder: AAC,
                error,
            })?;
        Ok(Self {
            track: TrackInfo {
                track_id: AUDIO_TRACK_ID,
                timescale: Timescale(format.sample_rate),
                codec: CodecConfig::Aac(aac),
                nominal_sample_ticks: encoder.frame_size().max(1),
                average_bitrate: settings.encoder.audio_bitrate_kbps * 1000,
            },
            encoder,
            time_base,
            capture: CaptureTimes::default(),
        })
    }

    /// The track this encoder feeds.
    pub fn track(&self) -> &TrackInfo {
        &self.track
    }

    /// Encodes one block of `frame_size` samples whose `pts` is in `time_base`.
    pub fn push(
        &mut self,
        mut samples: frame::Audio,
        time_base: Rational,
        captured_at: SystemTime,
        out: &mut Vec<Sample>,
    ) -> Result<(), PipelineError> {
        let expected = (
            format::Sample::F32(format::sample::Type::Planar),
            2,
            self.encoder.frame_size() as usize,
        );
        if (samples.format(), samples.channels(), samples.samples()) != expected {
            return Err(PipelineError::FrameMismatch {
                encoder: AAC,
                reason: format!(
                    "{:?} × {} channels × {} samples, opened for fltp × 2 × {}",
                    samples.format(),
                    samples.channels(),
                    samples.samples(),
                    expected.2
                ),
            });
        }
        let pts = rescale(samples.pts().unwrap_or(0), time_base, self.time_base);
        samples.set_pts(Some(pts));
        self.capture.insert(pts, captured_at);
        self.encoder
            .send_frame(&samples)
            .map_err(libav(AAC, "sending samples"))?;
        self.drain(out)
    }

    /// Flushes the encoder's delayed frames.
    pub fn finish(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        self.encoder.send_eof().map_err(libav(AAC, "flushing"))?;
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let Some(pts) = packet.pts() else { continue };
            // The encoder's first packet carries its priming (pts < 0). A live fMP4 track
            // has no edit list to hide it, so it is dropped: the track then starts at
            // media time zero, in step with video; only the first 21 ms of sound are
            // decoded without their predecessor.
            if pts < 0 {
                continue;
            }
            let Some(data) = packet.data() else { continue };
            out.push(Sample {
                track_id: AUDIO_TRACK_ID,
                decode_ticks: u64::try_from(pts).unwrap_or(0),
                composition_offset_ticks: 0,
                keyframe: true,
                data: bytes::Bytes::copy_from_slice(data),
                captured_at: self.capture.take(pts),
            });
        }
        Ok(())
    }
}
