//! Decoding what a camera sends, for renditions that transcode beside a passed-through
//! one: its pictures (fed to libav as Annex B with the parameter sets before every
//! keyframe, so no `extradata` has to be written into libav's structures; the sound goes
//! to every rendition as it is), and sound HLS cannot carry (a camera's G.711, a
//! browser's Opus) made into AAC.

use std::collections::VecDeque;
use std::time::SystemTime;

use ffmpeg::{Rational, codec, decoder, filter, frame};
use ffmpeg_next as ffmpeg;

use super::PipelineError;
use super::encode::libav;
use crate::cmaf::{CodecConfig, Sample, TrackInfo, TrackKind};
use crate::ingest::{ForeignAudio, G711, RawMedia, SourceFormat, SourceFrame};
use crate::libav::{AUDIO_FRAME_SAMPLES, buffer_graph};

/// The time base of decoded pictures: the samples' 90 kHz.
const VIDEO_TIME_BASE: Rational = Rational(1, 90_000);

/// A camera's pictures decoded back into frames.
pub struct SampleDecoder {
    video_track: TrackInfo,
    video: decoder::Video,
    format: SourceFormat,
    /// Capture times of samples inside the decoder, by pts.
    capture: VecDeque<(i64, SystemTime)>,
    annexb: Vec<u8>,
}

impl SampleDecoder {
    /// Opens a decoder for the video track of `tracks`; `frame_rate` is the source's.
    pub fn open(tracks: &[TrackInfo], frame_rate: Rational) -> Result<Self, PipelineError> {
        crate::libav::init().map_err(libav("decoder", "initialising"))?;
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
                    .map_err(libav("decoder", "opening the video decoder"))
            })?;
        Ok(Self {
            format: SourceFormat {
                width: u32::from(width) & !1,
                height: u32::from(height) & !1,
                frame_rate,
                video_time_base: VIDEO_TIME_BASE,
                // Unused: no sound is decoded here.
                sample_rate: 48_000,
                audio_time_base: Rational(1, 48_000),
            },
            video_track,
            video,
            capture: VecDeque::new(),
            annexb: Vec::new(),
        })
    }

    /// What the decoded pictures are, for the encoders.
    pub fn format(&self) -> SourceFormat {
        self.format
    }

    /// Decodes one video sample; the pictures it completes are appended to `out`. A
    /// sample the decoder refuses is dropped (the next keyframe recovers).
    pub fn push(
        &mut self,
        sample: &Sample,
        out: &mut Vec<SourceFrame>,
    ) -> Result<(), PipelineError> {
        if sample.track_id != self.video_track.track_id {
            return Ok(());
        }
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
            out.push(SourceFrame {
                media: RawMedia::Video(decoded.clone()),
                time_base: VIDEO_TIME_BASE,
                captured_at,
            });
        }
        Ok(())
    }
}

/// Sound a source sends in a codec HLS cannot carry ([`ForeignAudio`]: a camera's
/// G.711, a browser's Opus), decoded (G.711 is a table lookup, done here; Opus by
/// libav) and encoded to AAC at 48 kHz stereo: one AAC track shared by every rendition.
pub struct AudioTranscoder {
    decoding: Decoding,
    /// Resampling to the encoder's format, built for the first decoded frame's.
    graph: Option<filter::Graph>,
    encoder: super::AudioEncoder,
    frames: Vec<frame::Audio>,
}

/// How the foreign sound becomes PCM.
enum Decoding {
    G711 { law: G711, rate: u32 },
    Opus(decoder::Audio),
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
    /// Ready for `foreign` sound, to AAC per `options`.
    pub fn open(
        options: &super::EncoderOptions,
        foreign: ForeignAudio,
    ) -> Result<Self, PipelineError> {
        crate::libav::init().map_err(libav("decoder", "initialising"))?;
        let decoding = match foreign {
            ForeignAudio::G711(law, rate) => Decoding::G711 { law, rate },
            ForeignAudio::Opus => {
                let codec = decoder::find(codec::Id::OPUS)
                    .ok_or(PipelineError::EncoderMissing("opus (decoder)"))?;
                // No OpusHead: libav's decoder then takes mono or stereo as sent (a
                // browser's), which is all WebRTC sends.
                let opus = codec::Context::new_with_codec(codec)
                    .decoder()
                    .audio()
                    .map_err(libav("opus", "opening the decoder"))?;
                Decoding::Opus(opus)
            }
        };
        let encoder = super::AudioEncoder::open(
            options,
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
            decoding,
            graph: None,
            encoder,
            frames: Vec::new(),
        })
    }

    /// The AAC track it makes.
    pub fn track(&self) -> &TrackInfo {
        self.encoder.track()
    }

    /// Decodes one foreign sample (its ticks at the source's rate) and appends the AAC
    /// samples that come out to `out`.
    pub fn push(&mut self, sample: &Sample, out: &mut Vec<Sample>) -> Result<(), PipelineError> {
        let pts = i64::try_from(sample.decode_ticks).ok();
        let mut pcm = Vec::with_capacity(1);
        match &mut self.decoding {
            Decoding::G711 { law, rate } => {
                let mut g711 = frame::Audio::new(
                    ffmpeg::format::Sample::I16(ffmpeg::format::sample::Type::Packed),
                    sample.data.len(),
                    ffmpeg::ChannelLayout::MONO,
                );
                g711.set_rate(*rate);
                for (linear, &byte) in g711.plane_mut::<i16>(0).iter_mut().zip(sample.data.iter()) {
                    *linear = decode_g711(*law, byte);
                }
                g711.set_pts(pts);
                pcm.push((g711, *rate));
            }
            Decoding::Opus(opus) => {
                let mut packet = ffmpeg::Packet::copy(&sample.data);
                packet.set_pts(pts);
                if let Err(error) = opus.send_packet(&packet) {
                    // A packet libav cannot read loses its 20 ms, not the stream.
                    tracing::debug!(%error, "Opus packet dropped");
                    return Ok(());
                }
                let mut decoded = frame::Audio::empty();
                let mut next = pts;
                while opus.receive_frame(&mut decoded).is_ok() {
                    // Decoded frames at 48 kHz, timed by the packets'.
                    decoded.set_pts(next);
                    next = next.map(|p| p + decoded.samples() as i64);
                    pcm.push((
                        std::mem::replace(&mut decoded, frame::Audio::empty()),
                        AAC_RATE,
                    ));
                }
            }
        }
        for (pcm, rate) in &pcm {
            self.filter(pcm, *rate)?;
        }
        for frame in self.frames.drain(..) {
            self.encoder
                .push(frame, Rational(1, AAC_RATE as i32), sample.captured_at, out)?;
        }
        Ok(())
    }

    /// Resamples `pcm` (at `rate`, its pts in 1/`rate`) into AAC-sized frames.
    fn filter(&mut self, pcm: &frame::Audio, rate: u32) -> Result<(), PipelineError> {
        if self.graph.is_none() {
            let layout = if pcm.channel_layout().is_empty() {
                ffmpeg::ChannelLayout::default(i32::from(pcm.channels()))
            } else {
                pcm.channel_layout()
            };
            let args = format!(
                "time_base=1/{rate}:sample_rate={rate}:sample_fmt={}:channel_layout=0x{:x}",
                pcm.format().name(),
                layout.bits()
            );
            let spec =
                format!("aresample={AAC_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo");
            let mut graph = buffer_graph("abuffer", &args, "abuffersink", &spec)
                .map_err(libav("decoder", "building the audio graph"))?;
            if let Some(mut sink) = graph.get("out") {
                sink.sink().set_frame_size(AUDIO_FRAME_SAMPLES);
            }
            self.graph = Some(graph);
        }
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        if let Some(mut input) = graph.get("in") {
            input
                .source()
                .add(pcm)
                .map_err(libav("decoder", "filtering audio"))?;
        }
        let mut filtered = frame::Audio::empty();
        while let Some(mut sink) = graph.get("out") {
            if sink.sink().frame(&mut filtered).is_err() {
                break;
            }
            if filtered.samples() == AUDIO_FRAME_SAMPLES as usize {
                self.frames.push(filtered.clone());
            }
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
