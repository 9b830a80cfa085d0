//! The built-in test pattern: libav's lavfi `testsrc2` picture and a `sine` tone, with
//! the capture wall clock drawn on the picture. It runs at real time, like a camera:
//! each frame is released when the wall clock reaches its capture time.

use std::time::{SystemTime, UNIX_EPOCH};

use ffmpeg_next as ffmpeg;

use super::SourceOptions;
use super::lavfi::{GraphSpecs, LavfiSource};
use super::{IngestError, Source, SourceFormat, SourceFrame};

/// The test pattern source. See the module docs.
pub struct TestPattern(LavfiSource);

impl TestPattern {
    /// Builds the lavfi graphs. `realtime = false` delivers frames as fast as they are
    /// made (for tests and benchmarks); capture times then still follow media time.
    pub fn open(options: &SourceOptions, realtime: bool) -> Result<Self, IngestError> {
        let start_wall = SystemTime::now();
        let since_epoch = start_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        // drawtext's `pts:hms:OFFSET` prints pts + OFFSET as HH:MM:SS.mmm; with the
        // seconds since UTC midnight of media time zero as the offset, that is the
        // capture wall clock of each frame, to the millisecond.
        let midnight_offset = since_epoch.as_secs_f64() % 86_400.0;
        let mut video = format!(
            "testsrc2=size={w}x{h}:rate={fps},format=yuv420p",
            w = options.width,
            h = options.height,
            fps = options.fps
        );
        if options.clock_overlay {
            let font = if options.font_file.exists() {
                format!("fontfile='{}':", options.font_file.display())
            } else {
                String::new()
            };
            let size = (options.height / 12).max(12);
            video.push_str(&format!(
                ",drawtext={font}text='%{{pts\\:hms\\:{midnight_offset:.3}}} UTC':\
                 x=(w-tw)/2:y=h-th-{margin}:fontsize={size}:fontcolor=white:box=1:\
                 boxcolor=black@0.7:boxborderw={border}",
                margin = size,
                border = size / 4,
            ));
        }
        let audio = format!(
            "sine=frequency={hz}:sample_rate={rate},aformat=sample_fmts=fltp:channel_layouts=stereo",
            hz = options.tone_hz,
            rate = options.sample_rate
        );
        let fps = i32::try_from(options.fps).unwrap_or(30);
        let specs = GraphSpecs {
            video,
            audio,
            width: options.width,
            height: options.height,
            frame_rate: ffmpeg::Rational(fps, 1),
            sample_rate: options.sample_rate,
        };
        LavfiSource::open("testsrc", specs, false, realtime, start_wall).map(Self)
    }
}

impl Source for TestPattern {
    fn format(&self) -> SourceFormat {
        self.0.format()
    }

    fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        self.0.next_frame()
    }
}
