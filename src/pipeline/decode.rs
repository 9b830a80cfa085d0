//! Encoded samples (an RTSP camera's) decoded back into frames, for renditions that
//! transcode what others of the same stream pass through.
//!
//! The decoders are given self-describing input, so no `extradata` has to be written
//! into libav's structures: video as Annex B with the parameter sets before every
//! keyframe, AAC wrapped in ADTS headers. Audio leaves as stereo float planar in
//! 1024-sample frames at the source's rate, what the AAC encoder takes; a source
//! without sound gets silence, so every rendition has the same tracks.

use std::collections::VecDeque;
use std::time::SystemTime;

use ffmpeg::{Rational, codec, decoder, filter, frame};
use ffmpeg_next as ffmpeg;

use super::PipelineError;
use crate::cmaf::{AacConfig, CodecConfig, Sample, TrackInfo, TrackKind};
use crate::ingest::lavfi::{AUDIO_FRAME_SAMPLES, buffer_graph, silence_frame};
use crate::ingest::{G711, RawMedia, SourceFormat, SourceFrame};

/// The time base of decoded pictures: the samples' 90 kHz.
const VIDEO_TIME_BASE: Rational = Rational(1, 90_000);
/// Rate of the silence made for a source without sound.
const SILENCE_RATE: u32 = 48_000;

fn libav(what: &'static str) -> impl FnOnce(ffmpeg::Error) -> PipelineError {
    move |error| PipelineError::Libav {
        encoder: "decoder",
        what,
        error,
    }
}

/// The audio side: decoder, and the graph to fltp stereo 1024-sample frames (built at
/// the first decoded frame, whose layout it needs).
struct AudioPath {
    track: TrackInfo,
    aac: AacConfig,
    decoder: decoder::Audio,
    graph: Option<filter::Graph>,
}

/// See the module docs.
pub struct SampleDecoder {
    video_track: TrackInfo,
    video: decoder::Video,
    audio: Option<AudioPath>,
    format: SourceFormat,
    /// Capture times of samples inside the video decoder, by pts.
    capture: VecDeque<(i64, SystemTime)>,
    annexb: Vec<u8>,
    /// Where made-up silence has got to, in 1/`SILENCE_RATE`.
    silence_end: i64,
}

impl SampleDecoder {
    /// Opens decoders for `tracks` (video first); `frame_rate` is the source's.
    pub fn open(tracks: &[TrackInfo], frame_rate: Rational) -> Result<Self, PipelineError> {
        crate::ingest::init_libav().map_err(libav("initialising"))?;
        let video_track = tracks
            .iter()
            .find(|t| t.kind() == TrackKind::Video)
            .cloned()
            .ok_or(PipelineError::EncoderMissing("a video track to decode"))?;
        let (id, width, height) = match &video_track.codec {
            CodecConfig::Avc(c) => (codec::Id::H264, c.width, c.height),
            CodecConfig::Hevc(c) => (codec::Id::HEVC, c.width, c.height),
            CodecConfig::Aac(_) => return Err(PipelineError::EncoderMissing("a video decoder")),
        };
        let video = decoder::find(id)
            .ok_or(PipelineError::EncoderMissing("h264/hevc decoder"))
            .and_then(|c| {
                let mut context = codec::context::Context::new_with_codec(c);
                // Frames out as soon as they are decoded: cameras send no B-frames.
                context.set_flags(codec::Flags::LOW_DELAY);
                context
                    .decoder()
                    .video()
                    .map_err(libav("opening the video decoder"))
            })?;
        let audio = match tracks.iter().find(|t| t.kind() == TrackKind::Audio) {
            Some(track) => {
                let CodecConfig::Aac(aac) = &track.codec else {
                    return Err(PipelineError::EncoderMissing("an AAC decoder"));
                };
                let decoder = decoder::find(codec::Id::AAC)
                    .ok_or(PipelineError::EncoderMissing("aac decoder"))
                    .and_then(|c| {
                        codec::context::Context::new_with_codec(c)
                            .decoder()
                            .audio()
                            .map_err(libav("opening the audio decoder"))
                    })?;
                Some(AudioPath {
                    track: track.clone(),
                    aac: aac.clone(),
                    decoder,
                    graph: None,
                })
            }
            None => None,
        };
        let sample_rate = audio.as_ref().map_or(SILENCE_RATE, |a| a.aac.sample_rate);
        Ok(Self {
            format: SourceFormat {
                width: u32::from(width) & !1,
                height: u32::from(height) & !1,
                frame_rate,
                video_time_base: VIDEO_TIME_BASE,
                sample_rate,
                audio_time_base: Rational(1, i32::try_from(sample_rate).unwrap_or(48_000)),
            },
            video_track,
            video,
            audio,
            capture: VecDeque::new(),
            annexb: Vec::new(),
            silence_end: 0,
        })
    }

    /// What the decoded frames are, for the encoders.
    pub fn format(&self) -> SourceFormat {
        self.format
    }

    /// Decodes one sample; the frames it completes are appended to `out`. A sample the
    /// decoder refuses is dropped (the next keyframe recovers).
    pub fn push(
        &mut self,
        sample: &Sample,
        out: &mut Vec<SourceFrame>,
    ) -> Result<(), PipelineError> {
        if sample.track_id == self.video_track.track_id {
            self.push_video(sample, out)
        } else if self
            .audio
            .as_ref()
            .is_some_and(|a| a.track.track_id == sample.track_id)
        {
            self.push_audio(sample, out)
        } else {
            Ok(())
        }
    }

    fn push_video(
        &mut self,
        sample: &Sample,
        out: &mut Vec<SourceFrame>,
    ) -> Result<(), PipelineError> {
        self.annexb.clear();
        const START: [u8; 4] = [0, 0, 0, 1];
        if sample.keyframe {
            let sets: Vec<&[u8]> = match &self.video_track.codec {
                CodecConfig::Avc(c) => vec![&c.sps, &c.pps],
                CodecConfig::Hevc(c) => vec![&c.vps, &c.sps, &c.pps],
                CodecConfig::Aac(_) => Vec::new(),
            };
            for set in sets {
                self.annexb.extend_from_slice(&START);
                self.annexb.extend_from_slice(set);
            }
        }
        let mut rest = &sample.data[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(nal) = rest.get(4..4 + len) else {
                break;
            };
            self.annexb.extend_from_slice(&START);
            self.annexb.extend_from_slice(nal);
            rest = &rest[4 + len..];
        }
        let pts = i64::try_from(sample.decode_ticks).unwrap_or(0)
            + i64::from(sample.composition_offset_ticks);
        let mut packet = ffmpeg::Packet::copy(&self.annexb);
        packet.set_pts(Some(pts));
        packet.set_dts(i64::try_from(sample.decode_ticks).ok());
        if sample.keyframe {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        self.capture.push_back((pts, sample.captured_at));
        while self.capture.len() > 256 {
            self.capture.pop_front();
        }
        if let Err(error) = self.video.send_packet(&packet) {
            tracing::debug!(%error, "video sample refused by the decoder");
            return Ok(());
        }
        let mut decoded = frame::Video::empty();
        while self.video.receive_frame(&mut decoded).is_ok() {
            let pts = decoded.timestamp().or(decoded.pts()).unwrap_or(pts);
            decoded.set_pts(Some(pts));
            let captured_at = self
                .capture
                .iter()
                .position(|&(p, _)| p == pts)
                .and_then(|i| self.capture.remove(i))
                .map_or(sample.captured_at, |(_, at)| at);
            if self.audio.is_none() {
                // Silence up to this picture, so the audio track keeps up.
                let until = pts * i64::from(SILENCE_RATE) / 90_000;
                while self.silence_end <= until {
                    out.push(SourceFrame {
                        media: RawMedia::Audio(silence_frame(SILENCE_RATE, self.silence_end)),
                        time_base: self.format.audio_time_base,
                        captured_at,
                    });
                    self.silence_end += i64::from(AUDIO_FRAME_SAMPLES);
                }
            }
            out.push(SourceFrame {
                media: RawMedia::Video(decoded.clone()),
                time_base: VIDEO_TIME_BASE,
                captured_at,
            });
        }
        Ok(())
    }

    fn push_audio(
        &mut self,
        sample: &Sample,
        out: &mut Vec<SourceFrame>,
    ) -> Result<(), PipelineError> {
        let Some(audio) = self.audio.as_mut() else {
            return Ok(());
        };
        let adts = adts_frame(&audio.aac, &sample.data);
        let mut packet = ffmpeg::Packet::copy(&adts);
        let pts = i64::try_from(sample.decode_ticks).unwrap_or(0);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(pts));
        if let Err(error) = audio.decoder.send_packet(&packet) {
            tracing::debug!(%error, "audio sample refused by the decoder");
            return Ok(());
        }
        let rate = audio.aac.sample_rate;
        let mut decoded = frame::Audio::empty();
        while audio.decoder.receive_frame(&mut decoded).is_ok() {
            decoded.set_pts(Some(pts));
            if decoded.channel_layout().is_empty() {
                decoded.set_channel_layout(ffmpeg::ChannelLayout::default(i32::from(
                    decoded.channels(),
                )));
            }
            if audio.graph.is_none() {
                let args = format!(
                    "time_base=1/{rate}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
                    decoded.rate(),
                    decoded.format().name(),
                    decoded.channel_layout().bits()
                );
                let spec =
                    format!("aresample={rate},aformat=sample_fmts=fltp:channel_layouts=stereo");
                let mut graph = buffer_graph("abuffer", &args, "abuffersink", &spec)
                    .map_err(libav("building the audio graph"))?;
                if let Some(mut sink) = graph.get("out") {
                    sink.sink().set_frame_size(AUDIO_FRAME_SAMPLES);
                }
                audio.graph = Some(graph);
            }
            if let Some(mut input) = audio.graph.as_mut().and_then(|g| g.get("in")) {
                input
                    .source()
                    .add(&decoded)
                    .map_err(libav("filtering audio"))?;
            }
        }
        let mut filtered = frame::Audio::empty();
        while let Some(mut sink) = audio.graph.as_mut().and_then(|g| g.get("out")) {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            if filtered.samples() != AUDIO_FRAME_SAMPLES as usize {
                continue;
            }
            out.push(SourceFrame {
                media: RawMedia::Audio(filtered.clone()),
                time_base: self.format.audio_time_base,
                captured_at: sample.captured_at,
            });
        }
        Ok(())
    }
}

/// `payload` behind a 7-byte ADTS header (ISO/IEC 13818-7 6.2) describing `aac`.
fn adts_frame(aac: &AacConfig, payload: &[u8]) -> Vec<u8> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let index = RATES
        .iter()
        .position(|&r| r == aac.sample_rate)
        .unwrap_or(3) as u8;
    let profile = aac.object_type.saturating_sub(1) & 0x3;
    let channels = aac.channels & 0x7;
    let len = payload.len() + 7;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[
        0xFF,
        0xF1, // MPEG-4, layer 0, no CRC
        (profile << 6) | (index << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 0x3),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1F,
        0xFC,
    ]);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_header_describes_the_frame() {
        let aac = AacConfig::from_audio_specific_config(&[0x11, 0x90]).expect("LC 48 kHz stereo");
        let frame = adts_frame(&aac, &[0xAA; 100]);
        assert_eq!(frame.len(), 107);
        assert_eq!(&frame[..2], &[0xFF, 0xF1]);
        assert_eq!(frame[2] >> 6, 1, "profile = AOT 2 − 1");
        assert_eq!((frame[2] >> 2) & 0xF, 3, "48 kHz");
        let channels = ((frame[2] & 1) << 2) | (frame[3] >> 6);
        assert_eq!(channels, 2);
        let len = (usize::from(frame[3] & 3) << 11)
            | (usize::from(frame[4]) << 3)
            | usize::from(frame[5] >> 5);
        assert_eq!(len, 107);
    }
}

/// Sound a camera sends in a codec HLS cannot carry (G.711 μ-law or A-law), decoded
/// (G.711 is a table lookup, done here) and encoded to AAC at 48 kHz stereo: one AAC
/// track shared by every rendition.
pub struct AudioTranscoder {
    law: G711,
    sample_rate: u32,
    graph: filter::Graph,
    encoder: super::AudioEncoder,
    frames: Vec<frame::Audio>,
}

/// One G.711 sample to 16-bit linear PCM (ITU-T G.711).
pub fn decode_g711(law: G711, byte: u8) -> i16 {
    {
        match law {
            G711::MuLaw => {
                let u = !byte;
                let exponent = (u >> 4) & 7;
                let magnitude = (((i32::from(u & 0x0F)) << 3) + 0x84) << exponent;
                let sample = magnitude - 0x84;
                (if u & 0x80 != 0 { -sample } else { sample }) as i16
            }
            G711::ALaw => {
                let a = byte ^ 0x55;
                let exponent = (a >> 4) & 7;
                let mantissa = i32::from(a & 0x0F);
                let magnitude = if exponent == 0 {
                    (mantissa << 4) + 8
                } else {
                    ((mantissa << 4) + 0x108) << (exponent - 1)
                };
                (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
            }
        }
    }
}

/// The rate AAC is made at from transcoded sound.
const AAC_RATE: u32 = 48_000;

impl AudioTranscoder {
    /// Ready for mono G.711 at `sample_rate` (its RTP clock), to AAC per `settings`.
    pub fn open(
        settings: &crate::config::Settings,
        law: G711,
        sample_rate: u32,
    ) -> Result<Self, PipelineError> {
        crate::ingest::init_libav().map_err(libav("initialising"))?;
        let args = format!(
            "time_base=1/{sample_rate}:sample_rate={sample_rate}:sample_fmt=s16:channel_layout=0x{:x}",
            ffmpeg::ChannelLayout::MONO.bits()
        );
        let spec = format!("aresample={AAC_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo");
        let mut graph = buffer_graph("abuffer", &args, "abuffersink", &spec)
            .map_err(libav("building the audio graph"))?;
        if let Some(mut sink) = graph.get("out") {
            sink.sink().set_frame_size(AUDIO_FRAME_SAMPLES);
        }
        let encoder = super::AudioEncoder::open(
            settings,
            SourceFormat {
                width: 0,
                height: 0,
                frame_rate: Rational(1, 1),
                video_time_base: VIDEO_TIME_BASE,
                sample_rate: AAC_RATE,
                audio_time_base: Rational(1, AAC_RATE as i32),
            },
        )?;
        Ok(Self {
            law,
            sample_rate,
            graph,
            encoder,
            frames: Vec::new(),
        })
    }

    /// The AAC track it makes.
    pub fn track(&self) -> &TrackInfo {
        self.encoder.track()
    }

    /// Decodes one G.711 sample (its ticks at the source's rate) and appends the AAC
    /// samples that come out to `out`.
    pub fn push(&mut self, sample: &Sample, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        let mut pcm = frame::Audio::new(
            ffmpeg::format::Sample::I16(ffmpeg::format::sample::Type::Packed),
            sample.data.len(),
            ffmpeg::ChannelLayout::MONO,
        );
        pcm.set_rate(self.sample_rate);
        for (linear, &byte) in pcm.plane_mut::<i16>(0).iter_mut().zip(sample.data.iter()) {
            *linear = decode_g711(self.law, byte);
        }
        pcm.set_pts(i64::try_from(sample.decode_ticks).ok());
        if let Some(mut input) = self.graph.get("in") {
            input.source().add(&pcm).map_err(libav("filtering audio"))?;
        }
        let mut filtered = frame::Audio::empty();
        while let Some(mut sink) = self.graph.get("out") {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            if filtered.samples() == AUDIO_FRAME_SAMPLES as usize {
                self.frames.push(filtered.clone());
            }
        }
        for frame in self.frames.drain(..) {
            self.encoder
                .push(frame, Rational(1, AAC_RATE as i32), sample.captured_at, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod g711_tests {
    use super::{G711, decode_g711};

    #[test]
    fn g711_decodes_per_the_tables() {
        // μ-law: 0xFF and 0x7F are the two zeros, 0x00 the most negative value.
        assert_eq!(decode_g711(G711::MuLaw, 0xFF), 0);
        assert_eq!(decode_g711(G711::MuLaw, 0x7F), 0);
        assert_eq!(decode_g711(G711::MuLaw, 0x00), -32124);
        assert_eq!(decode_g711(G711::MuLaw, 0x80), 32124);
        // A-law: 0xD5 and 0x55 are the smallest magnitudes, ±8.
        assert_eq!(decode_g711(G711::ALaw, 0xD5), 8);
        assert_eq!(decode_g711(G711::ALaw, 0x55), -8);
        assert_eq!(decode_g711(G711::ALaw, 0xAA), 32256);
        assert_eq!(decode_g711(G711::ALaw, 0x2A), -32256);
    }
}
