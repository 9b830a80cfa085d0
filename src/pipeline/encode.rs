//! The encoders: video through [`super::select`] (libx264, libx265 or a GPU encoder;
//! low latency, closed GOP, a keyframe every segment target) and libav's native `aac`.

use std::collections::VecDeque;
use std::time::SystemTime;

use ffmpeg::software::scaling;
use ffmpeg::{Rational, codec, encoder, format, frame, picture};
use ffmpeg_next as ffmpeg;

use super::EncoderOptions;
use super::PipelineError;
use super::select::{EncoderId, ProbeOptions, open_video, pixel_format};
use crate::cmaf::codec::{ParameterSets, VideoCodec, annexb_to_length_prefixed};
use crate::cmaf::{AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::cmaf::{AacConfig, CodecConfig, Sample, Timescale, TrackInfo};
use crate::ingest::SourceFormat;
use crate::libav::ffi;

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
pub(super) fn libav(
    encoder: &'static str,
    what: &'static str,
) -> impl FnOnce(ffmpeg::Error) -> PipelineError {
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

/// One rendition's video: what encoder, what size, what rate.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoProfile {
    /// The libav encoder, as selected at start-up.
    pub encoder: EncoderId,
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Bit rate, kbit/s (also the VBV max rate).
    pub bitrate_kbps: u32,
}

/// A video encoder (libx264, libx265 or a GPU encoder) → samples on a 90 kHz timeline.
/// Frames of any size or format are scaled to the profile first (swscale), so one
/// decoded picture feeds every rendition of a ladder.
pub struct VideoEncoder {
    encoder: encoder::video::Encoder,
    name: &'static str,
    codec: VideoCodec,
    pixel_format: format::Pixel,
    scaler: Option<(ScalerInput, ffi::SendScaler)>,
    track: TrackInfo,
    time_base: Rational,
    /// Frames between forced keyframes; `None`: where the source has them.
    keyframe_interval: Option<u64>,
    frames_in: u64,
    params: ParameterSets,
    /// Added to every DTS so the decode timeline starts at zero even when B-frames make
    /// the encoder start it negative; presentation times then get signed offsets.
    decode_shift: Option<i64>,
    capture: CaptureTimes,
}

/// The input a scaler was made for.
type ScalerInput = (format::Pixel, u32, u32);

impl VideoEncoder {
    /// Opens the encoder of `profile` for frames at `frame_rate`, with a keyframe every
    /// `gop` frames.
    pub fn open(
        profile: &VideoProfile,
        options: &EncoderOptions,
        frame_rate: Rational,
        gop: u32,
    ) -> Result<Self, PipelineError> {
        let mut encoder = Self::open_following(profile, options, frame_rate, gop)?;
        encoder.keyframe_interval = Some(u64::from(gop.max(1)));
        Ok(encoder)
    }

    /// Opens the encoder of `profile` with a keyframe wherever the frames pushed are
    /// keyframes (decoded from a source with its own GOP); `max_gop` bounds the
    /// encoder's own interval.
    pub fn open_following(
        profile: &VideoProfile,
        options: &EncoderOptions,
        frame_rate: Rational,
        gop: u32,
    ) -> Result<Self, PipelineError> {
        let e = options;
        let id = profile.encoder;
        let options = ProbeOptions {
            preset: Some(e.preset.clone()),
            vbv_buffer_ms: e.vbv_buffer_ms,
            bframes: e.bframes,
            threads: e.threads,
        };
        let encoder = open_video(
            id,
            profile.width,
            profile.height,
            profile.bitrate_kbps,
            frame_rate,
            gop,
            &options,
        )?;
        let codec_error = |error| PipelineError::Codec {
            encoder: id.name,
            error,
        };
        let mut params = ParameterSets::default();
        let extradata = ffi::extradata(&encoder);
        annexb_to_length_prefixed(id.codec, &extradata, &mut params).map_err(codec_error)?;
        let width = u16::try_from(profile.width).unwrap_or(u16::MAX);
        let height = u16::try_from(profile.height).unwrap_or(u16::MAX);
        let codec = match id.codec {
            VideoCodec::H264 => {
                CodecConfig::Avc(params.avc_config(width, height).map_err(codec_error)?)
            }
            VideoCodec::H265 => {
                CodecConfig::Hevc(params.hevc_config(width, height).map_err(codec_error)?)
            }
        };
        let nominal =
            90_000 * i64::from(frame_rate.denominator()) / i64::from(frame_rate.numerator().max(1));
        Ok(Self {
            encoder,
            name: id.name,
            codec: id.codec,
            pixel_format: pixel_format(id),
            scaler: None,
            track: TrackInfo {
                track_id: VIDEO_TRACK_ID,
                timescale: Timescale::VIDEO_90K,
                codec,
                nominal_sample_ticks: u32::try_from(nominal).unwrap_or(3000),
                average_bitrate: profile.bitrate_kbps * 1000,
            },
            time_base: Rational(1, 90_000),
            keyframe_interval: None,
            frames_in: 0,
            params,
            decode_shift: None,
            capture: CaptureTimes::default(),
        })
    }

    /// `picture` as this encoder wants it: the same frame when it already fits, else a
    /// scaled copy.
    fn fit<'a>(
        &mut self,
        picture: &'a frame::Video,
    ) -> Result<std::borrow::Cow<'a, frame::Video>, PipelineError> {
        let wanted = (
            self.pixel_format,
            self.encoder.width(),
            self.encoder.height(),
        );
        let input = (picture.format(), picture.width(), picture.height());
        if input == wanted {
            return Ok(std::borrow::Cow::Borrowed(picture));
        }
        if self
            .scaler
            .as_ref()
            .is_none_or(|(made_for, _)| *made_for != input)
        {
            let context = scaling::Context::get(
                input.0,
                input.1,
                input.2,
                wanted.0,
                wanted.1,
                wanted.2,
                scaling::Flags::BICUBIC,
            )
            .map_err(libav(self.name, "creating the scaler"))?;
            self.scaler = Some((input, ffi::SendScaler(context)));
        }
        let mut scaled = frame::Video::empty();
        if let Some((_, scaler)) = self.scaler.as_mut() {
            scaler
                .0
                .run(picture, &mut scaled)
                .map_err(libav(self.name, "scaling"))?;
        }
        scaled.set_pts(picture.pts());
        Ok(std::borrow::Cow::Owned(scaled))
    }

    /// The track this encoder feeds.
    pub fn track(&self) -> &TrackInfo {
        &self.track
    }

    /// Pictures sent to the encoder that it has not put out yet: its lookahead and
    /// B-frames when it keeps up, growing when it does not.
    pub fn frames_held(&self) -> usize {
        self.capture.0.len()
    }

    /// Encodes one picture whose `pts` is in `time_base`.
    pub fn push(
        &mut self,
        picture: &frame::Video,
        time_base: Rational,
        captured_at: SystemTime,
        out: &mut Vec<Sample>,
    ) -> Result<(), PipelineError> {
        // Whether this picture starts a GOP, decided before scaling (a scaled copy does
        // not keep the decoder's key flag).
        let boundary = match self.keyframe_interval {
            Some(interval) => self.frames_in.is_multiple_of(interval),
            None => picture.is_key(),
        };
        let mut picture = self.fit(picture)?.into_owned();
        if (picture.width(), picture.height(), picture.format())
            != (
                self.encoder.width(),
                self.encoder.height(),
                self.pixel_format,
            )
        {
            return Err(PipelineError::FrameMismatch {
                encoder: self.name,
                reason: format!(
                    "{}x{} {:?}, opened for {}x{} {:?}",
                    picture.width(),
                    picture.height(),
                    picture.format(),
                    self.encoder.width(),
                    self.encoder.height(),
                    self.pixel_format
                ),
            });
        }
        let pts = rescale(picture.pts().unwrap_or(0), time_base, self.time_base);
        picture.set_pts(Some(pts));
        // Force the IDR where the segment boundary falls, whatever the encoder's own GOP
        // counting thinks (forced-idr makes a forced I an IDR). Every rendition of a
        // ladder counts the same frames, so their keyframes fall at the same times.
        picture.set_kind(if boundary {
            picture::Type::I
        } else {
            picture::Type::None
        });
        self.frames_in += 1;
        self.capture.insert(pts, captured_at);
        self.encoder
            .send_frame(&picture)
            .map_err(libav(self.name, "sending a frame"))?;
        self.drain(out)
    }

    /// Flushes the frames the encoder still holds.
    pub fn finish(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        self.encoder
            .send_eof()
            .map_err(libav(self.name, "flushing"))?;
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let (Some(pts), Some(dts)) = (packet.pts(), packet.dts()) else {
                tracing::warn!(encoder = self.name, "packet without timestamps dropped");
                continue;
            };
            let Some(data) = packet.data() else { continue };
            let shift = *self.decode_shift.get_or_insert((-dts).max(0));
            let decode = dts + shift;
            let converted = match annexb_to_length_prefixed(self.codec, data, &mut self.params) {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(encoder = self.name, %error, pts, "unusable packet dropped");
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
    pub fn open(options: &EncoderOptions, format: SourceFormat) -> Result<Self, PipelineError> {
        let mut audio = encoder_context(AAC)?
            .audio()
            .map_err(libav(AAC, "creating the context"))?;
        let rate = i32::try_from(format.sample_rate).unwrap_or(48_000);
        let time_base = Rational(1, rate);
        audio.set_rate(rate);
        audio.set_channel_layout(ffmpeg::ChannelLayout::STEREO);
        audio.set_channels(2);
        audio.set_format(format::Sample::F32(format::sample::Type::Planar));
        audio.set_bit_rate(options.audio_bitrate_kbps as usize * 1000);
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
                average_bitrate: options.audio_bitrate_kbps * 1000,
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
