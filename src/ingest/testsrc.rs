//! The built-in test pattern: libav's lavfi `testsrc2` picture and a `sine` tone, with
//! the capture wall clock drawn on the picture. It runs at real time, like a camera:
//! each frame is released when the wall clock reaches its capture time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ffmpeg::{filter, frame};
use ffmpeg_next as ffmpeg;

use super::{IngestError, RawMedia, Source, SourceFormat, SourceFrame};
use crate::config::SourceSettings;

/// AAC frames hold 1024 samples; the tone is cut to that size so that one source frame
/// is one encoder frame.
const AUDIO_FRAME_SAMPLES: u32 = 1024;

/// The test pattern source. See the module docs.
pub struct TestPattern {
    video: filter::Graph,
    audio: filter::Graph,
    format: SourceFormat,
    /// Monotonic instant of media time zero: frames are released at `start + pts`.
    start: Instant,
    /// Wall clock of media time zero: a frame's capture time is `start_wall + pts`.
    start_wall: SystemTime,
    /// Pace at real time (false in tests that want media fast).
    realtime: bool,
    pending_video: Option<frame::Video>,
    pending_audio: Option<frame::Audio>,
}

impl TestPattern {
    /// Builds the lavfi graphs. `realtime = false` delivers frames as fast as they are
    /// made (for tests and benchmarks); capture times then still follow media time.
    pub fn open(settings: &SourceSettings, realtime: bool) -> Result<Self, IngestError> {
        let err = libav_error;
        super::init_libav().map_err(err("initialising libav"))?;
        let start_wall = SystemTime::now();
        let since_epoch = start_wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        // drawtext's `pts:hms:OFFSET` prints pts + OFFSET as HH:MM:SS.mmm; with the
        // seconds since UTC midnight of media time zero as the offset, that is the
        // capture wall clock of each frame, to the millisecond.
        let midnight_offset = since_epoch.as_secs_f64() % 86_400.0;
        let mut video_spec = format!(
            "testsrc2=size={w}x{h}:rate={fps},format=yuv420p",
            w = settings.width,
            h = settings.height,
            fps = settings.fps
        );
        if settings.clock_overlay {
            let font = if settings.font_file.exists() {
                format!("fontfile='{}':", settings.font_file.display())
            } else {
                String::new()
            };
            let size = (settings.height / 12).max(12);
            video_spec.push_str(&format!(
                ",drawtext={font}text='%{{pts\\:hms\\:{midnight_offset:.3}}} UTC':\
                 x=(w-tw)/2:y=h-th-{margin}:fontsize={size}:fontcolor=white:box=1:\
                 boxcolor=black@0.7:boxborderw={border}",
                margin = size,
                border = size / 4,
            ));
        }
        let video =
            sink_graph(&video_spec, "buffersink", None).map_err(err("building the video graph"))?;
        let audio_spec = format!(
            "sine=frequency={hz}:sample_rate={rate},aformat=sample_fmts=fltp:channel_layouts=stereo",
            hz = settings.tone_hz,
            rate = settings.sample_rate
        );
        let audio = sink_graph(&audio_spec, "abuffersink", Some(AUDIO_FRAME_SAMPLES))
            .map_err(err("building the audio graph"))?;
        let format = SourceFormat {
            width: settings.width,
            height: settings.height,
            frame_rate: ffmpeg::Rational(i32::try_from(settings.fps).unwrap_or(30), 1),
            video_time_base: ffmpeg::Rational(1, i32::try_from(settings.fps).unwrap_or(30)),
            sample_rate: settings.sample_rate,
            audio_time_base: ffmpeg::Rational(
                1,
                i32::try_from(settings.sample_rate).unwrap_or(48_000),
            ),
        };
        Ok(Self {
            video,
            audio,
            format,
            start: Instant::now(),
            start_wall,
            realtime,
            pending_video: None,
            pending_audio: None,
        })
    }

    fn media_time(pts: i64, time_base: ffmpeg::Rational) -> Duration {
        let num = u64::try_from(time_base.numerator()).unwrap_or(1);
        let den = u64::try_from(time_base.denominator()).unwrap_or(1).max(1);
        let ticks = u64::try_from(pts).unwrap_or(0);
        Duration::from_nanos(ticks * num * 1_000_000_000 / den)
    }
}

/// Wraps a libav error with what the test pattern was doing.
fn libav_error(what: &'static str) -> impl Fn(ffmpeg::Error) -> IngestError {
    move |error| IngestError::Libav {
        source_name: "testsrc".into(),
        what,
        error,
    }
}

/// A graph from a source-only filter chain `spec` into a sink named "out".
fn sink_graph(
    spec: &str,
    sink: &str,
    frame_size: Option<u32>,
) -> Result<filter::Graph, ffmpeg::Error> {
    let mut graph = filter::Graph::new();
    let sink_filter = filter::find(sink).ok_or(ffmpeg::Error::FilterNotFound)?;
    graph.add(&sink_filter, "out", "")?;
    graph.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    if let (Some(samples), Some(mut out)) = (frame_size, graph.get("out")) {
        out.sink().set_frame_size(samples);
    }
    Ok(graph)
}

fn pull<F: std::ops::DerefMut<Target = frame::Frame>>(
    graph: &mut filter::Graph,
    mut frame: F,
) -> Result<F, ffmpeg::Error> {
    let mut out = graph.get("out").ok_or(ffmpeg::Error::FilterNotFound)?;
    out.sink().frame(&mut frame)?;
    Ok(frame)
}

impl Source for TestPattern {
    fn format(&self) -> SourceFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        let err = libav_error;
        if self.pending_video.is_none() {
            self.pending_video =
                Some(pull(&mut self.video, frame::Video::empty()).map_err(err("reading video"))?);
        }
        if self.pending_audio.is_none() {
            self.pending_audio =
                Some(pull(&mut self.audio, frame::Audio::empty()).map_err(err("reading audio"))?);
        }
        let video_at = self
            .pending_video
            .as_ref()
            .map(|f| Self::media_time(f.pts().unwrap_or(0), self.format.video_time_base))
            .unwrap_or_default();
        let audio_at = self
            .pending_audio
            .as_ref()
            .map(|f| Self::media_time(f.pts().unwrap_or(0), self.format.audio_time_base))
            .unwrap_or_default();
        // Deliver in capture order, so that the muxer sees both tracks advance together.
        let (media, time_base, at) = if audio_at < video_at {
            let f = self
                .pending_audio
                .take()
                .ok_or(IngestError::Ended("testsrc".into()))?;
            (RawMedia::Audio(f), self.format.audio_time_base, audio_at)
        } else {
            let f = self
                .pending_video
                .take()
                .ok_or(IngestError::Ended("testsrc".into()))?;
            (RawMedia::Video(f), self.format.video_time_base, video_at)
        };
        if self.realtime {
            let due = self.start + at;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        Ok(SourceFrame {
            media,
            time_base,
            captured_at: self.start_wall + at,
        })
    }
}
