//! The slate: what viewers see while a source is down with `source.outage = "slate"`:
//! a still dark card saying the source is unavailable, with silence, made by libav's
//! lavfi (`color` + `drawtext`, `anullsrc`) at real time like the test pattern, so the
//! media path encodes it as it would a camera.
//!
//! Imports nothing outside `ingest`.

use std::time::SystemTime;

use ffmpeg_next as ffmpeg;

use super::SourceOptions;
use super::lavfi::{GraphSpecs, LavfiSource};
use super::{IngestError, Source, SourceFormat, SourceFrame};

/// The slate source. See the module docs.
pub struct Slate(LavfiSource);

impl Slate {
    /// A slate of `width`×`height` at `fps` frames a second, its silence at the
    /// configured sampling rate, released at real time from now.
    pub fn open(
        options: &SourceOptions,
        width: u32,
        height: u32,
        fps: (u32, u32),
    ) -> Result<Self, IngestError> {
        let font = if options.font_file.exists() {
            format!("fontfile='{}':", options.font_file.display())
        } else {
            String::new()
        };
        let size = (height / 14).max(10);
        let video = format!(
            "color=c=0x202428:size={width}x{height}:rate={num}/{den},format=yuv420p,\
             drawtext={font}text='Source unavailable':x=(w-tw)/2:y=(h-th)/2:\
             fontsize={size}:fontcolor=0xd0d0d0",
            num = fps.0.max(1),
            den = fps.1.max(1),
        );
        let audio = format!(
            "anullsrc=channel_layout=stereo:sample_rate={rate},\
             aformat=sample_fmts=fltp:channel_layouts=stereo",
            rate = options.sample_rate
        );
        let specs = GraphSpecs {
            video,
            audio,
            width,
            height,
            frame_rate: ffmpeg::Rational(
                i32::try_from(fps.0.max(1)).unwrap_or(30),
                i32::try_from(fps.1.max(1)).unwrap_or(1),
            ),
            sample_rate: options.sample_rate,
        };
        LavfiSource::open("slate", specs, false, true, SystemTime::now()).map(Self)
    }
}

impl Source for Slate {
    fn format(&self) -> SourceFormat {
        self.0.format()
    }

    fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        self.0.next_frame()
    }
}
