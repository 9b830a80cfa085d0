//! Files as live sources: any file libav can open, decoded (libavfilter `movie` and
//! `amovie`), converted to what the encoders take (constant frame rate, even size,
//! yuv420p; 48 kHz stereo float), played at real time and, as live, looped with
//! continuous timestamps. A file without sound gets silence.

use std::path::Path;
use std::time::SystemTime;

use ffmpeg_next as ffmpeg;

use super::lavfi::{GraphSpecs, LavfiSource};
use super::{IngestError, Source, SourceFormat, SourceFrame};

/// Sampling rate files are resampled to.
const SAMPLE_RATE: u32 = 48_000;

/// A file played as a live source. See the module docs.
pub struct FileSource(LavfiSource);

impl FileSource {
    /// Opens `path`; `looping` plays it again and again as one live stream.
    pub fn open(path: &Path, looping: bool, realtime: bool) -> Result<Self, IngestError> {
        let name = path.display().to_string();
        let err = |what| IngestError::libav(&name, what);
        crate::libav::init().map_err(err("initialising libav"))?;
        let text = path.to_str().filter(|p| !p.contains('\'')).ok_or_else(|| {
            IngestError::Unsupported {
                source_name: name.clone(),
                reason: "the path must be UTF-8 without a single quote".into(),
            }
        })?;
        let input = ffmpeg::format::input(&path).map_err(err("opening"))?;
        let video = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| IngestError::Unsupported {
                source_name: name.clone(),
                reason: "no video stream".into(),
            })?;
        let decoder = ffmpeg::codec::context::Context::from_parameters(video.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(err("reading the video stream's parameters"))?;
        let rate = video.avg_frame_rate();
        let frame_rate = if rate.numerator() > 0 && rate.denominator() > 0 {
            rate
        } else {
            ffmpeg::Rational(30, 1)
        };
        // yuv420p wants even sizes.
        let (width, height) = (decoder.width() & !1, decoder.height() & !1);
        if width == 0 || height == 0 {
            return Err(IngestError::Unsupported {
                source_name: name,
                reason: "the video has no size".into(),
            });
        }
        let has_audio = input.streams().best(ffmpeg::media::Type::Audio).is_some();
        let seconds = input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE);
        let video_spec = format!(
            "movie=filename='{text}':s=dv,fps={}/{},scale={width}:{height},format=yuv420p",
            frame_rate.numerator(),
            frame_rate.denominator()
        );
        let audio_spec = if has_audio {
            format!(
                "amovie=filename='{text}':s=da,aresample={SAMPLE_RATE},\
                 aformat=sample_fmts=fltp:channel_layouts=stereo"
            )
        } else {
            format!(
                "anullsrc=r={SAMPLE_RATE}:cl=stereo,atrim=duration={:.3},\
                 aformat=sample_fmts=fltp:channel_layouts=stereo",
                seconds.max(0.1)
            )
        };
        let specs = GraphSpecs {
            video: video_spec,
            audio: audio_spec,
            width,
            height,
            frame_rate,
            sample_rate: SAMPLE_RATE,
        };
        LavfiSource::open(&name, specs, looping, realtime, SystemTime::now()).map(Self)
    }
}

impl Source for FileSource {
    fn format(&self) -> SourceFormat {
        self.0.format()
    }

    fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        self.0.next_frame()
    }
}
