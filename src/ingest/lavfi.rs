//! A live source made of two libavfilter graphs, one ending in a video sink and one in
//! an audio sink: the test pattern (`testsrc2` + `sine`) and files (`movie` + `amovie`)
//! are both this. It interleaves the two in capture order, releases each frame when the
//! wall clock reaches its media time (a live source, not as fast as possible), and, for
//! a looping source, rebuilds the graphs at the end and continues the timestamps.

use std::time::{Duration, Instant, SystemTime};

use ffmpeg::{filter, frame};
use ffmpeg_next as ffmpeg;

use super::{IngestError, RawMedia, SourceFormat, SourceFrame};
use crate::libav::{AUDIO_FRAME_SAMPLES, media_time, ticks};

/// The two filter chains of a source, as libavfilter graph descriptions ending in the
/// formats the encoders take (yuv420p; fltp stereo), and what they produce.
#[derive(Debug, Clone)]
pub(crate) struct GraphSpecs {
    /// The video chain.
    pub(crate) video: String,
    /// The audio chain.
    pub(crate) audio: String,
    /// Picture width the video chain outputs.
    pub(crate) width: u32,
    /// Picture height the video chain outputs.
    pub(crate) height: u32,
    /// Its constant frame rate.
    pub(crate) frame_rate: ffmpeg::Rational,
    /// Sampling rate the audio chain outputs.
    pub(crate) sample_rate: u32,
}

/// One stream's graph and its progress.
struct Branch {
    graph: filter::Graph,
    time_base: ffmpeg::Rational,
    /// Media time just past the last frame taken from this graph instance.
    end: Duration,
    done: bool,
}

/// See the module docs.
pub(crate) struct LavfiSource {
    name: String,
    specs: GraphSpecs,
    looping: bool,
    video: Branch,
    audio: Branch,
    format: SourceFormat,
    /// Monotonic instant of media time zero: frames are released at `start + media time`.
    start: Instant,
    /// Wall clock of media time zero: a frame's capture time is `start_wall + media time`.
    start_wall: SystemTime,
    realtime: bool,
    /// Media time added to this pass of a looping source.
    loop_offset: Duration,
    /// Where the previous pass's audio ended (absolute media time): audio of this pass
    /// before it would overlap and is dropped.
    audio_floor: Duration,
    pending_video: Option<(frame::Video, Duration)>,
    pending_audio: Option<(frame::Audio, Duration)>,
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

impl Branch {
    fn open(spec: &str, sink: &str, frame_size: Option<u32>) -> Result<Self, ffmpeg::Error> {
        let mut graph = sink_graph(spec, sink, frame_size)?;
        let time_base = graph
            .get("out")
            .ok_or(ffmpeg::Error::FilterNotFound)?
            .sink()
            .time_base();
        Ok(Self {
            graph,
            time_base,
            end: Duration::ZERO,
            done: false,
        })
    }

    /// The next frame and its media time within this pass; `None` at the end.
    fn pull<F: std::ops::DerefMut<Target = frame::Frame>>(
        &mut self,
        mut frame: F,
        duration_of: impl Fn(&F) -> Duration,
    ) -> Result<Option<(F, Duration)>, ffmpeg::Error> {
        if self.done {
            return Ok(None);
        }
        let mut out = self.graph.get("out").ok_or(ffmpeg::Error::FilterNotFound)?;
        match out.sink().frame(&mut frame) {
            Ok(()) => {
                let at = media_time(frame.pts().unwrap_or(0), self.time_base);
                self.end = self.end.max(at + duration_of(&frame));
                Ok(Some((frame, at)))
            }
            Err(ffmpeg::Error::Eof) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl LavfiSource {
    /// Builds both graphs. `realtime = false` delivers frames as fast as they are made
    /// (tests and benchmarks); capture times then still follow media time.
    pub(crate) fn open(
        name: &str,
        specs: GraphSpecs,
        looping: bool,
        realtime: bool,
        start_wall: SystemTime,
    ) -> Result<Self, IngestError> {
        let err = |what| IngestError::libav(name, what);
        crate::libav::init().map_err(err("initialising libav"))?;
        let video = Branch::open(&specs.video, "buffersink", None)
            .map_err(err("building the video graph"))?;
        let audio = Branch::open(&specs.audio, "abuffersink", Some(AUDIO_FRAME_SAMPLES))
            .map_err(err("building the audio graph"))?;
        let format = SourceFormat {
            width: specs.width,
            height: specs.height,
            frame_rate: specs.frame_rate,
            video_time_base: video.time_base,
            sample_rate: specs.sample_rate,
            audio_time_base: audio.time_base,
        };
        Ok(Self {
            name: name.to_string(),
            specs,
            looping,
            video,
            audio,
            format,
            start: Instant::now(),
            start_wall,
            realtime,
            loop_offset: Duration::ZERO,
            audio_floor: Duration::ZERO,
            pending_video: None,
            pending_audio: None,
        })
    }

    pub(crate) fn format(&self) -> SourceFormat {
        self.format
    }

    fn error(&self, what: &'static str) -> impl FnOnce(ffmpeg::Error) -> IngestError + use<> {
        IngestError::libav(&self.name, what)
    }

    fn fill(&mut self) -> Result<(), IngestError> {
        let frame_duration = media_time(
            i64::from(self.format.frame_rate.denominator()),
            ffmpeg::Rational(1, self.format.frame_rate.numerator().max(1)),
        );
        if self.pending_video.is_none() {
            let pulled = self.video.pull(frame::Video::empty(), |_| frame_duration);
            self.pending_video = pulled.map_err(self.error("reading video"))?;
        }
        while self.pending_audio.is_none() {
            let rate = self.format.sample_rate.max(1);
            let pulled = self.audio.pull(frame::Audio::empty(), |f| {
                Duration::from_nanos(f.samples() as u64 * 1_000_000_000 / u64::from(rate))
            });
            match pulled.map_err(self.error("reading audio"))? {
                // The sink cuts whole encoder frames; only the end of a pass leaves a
                // shorter one, which the AAC encoder takes only as the very last frame of
                // a stream. It is dropped: a gap of less than one frame at the loop point.
                Some((f, _)) if f.samples() < AUDIO_FRAME_SAMPLES as usize => continue,
                Some((_, at)) if at + self.loop_offset < self.audio_floor => continue,
                pulled => {
                    self.pending_audio = pulled;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Starts the next pass of a looping source: fresh graphs, timestamps continuing
    /// right after the video (the lead track stays continuous; audio that would overlap
    /// the previous pass's longer tail is dropped, a shorter tail leaves a gap).
    fn rewind(&mut self) -> Result<(), IngestError> {
        self.audio_floor = self.loop_offset + self.audio.end;
        self.loop_offset += self.video.end.max(Duration::from_millis(1));
        self.video = Branch::open(&self.specs.video, "buffersink", None)
            .map_err(self.error("reopening video"))?;
        self.audio = Branch::open(&self.specs.audio, "abuffersink", Some(AUDIO_FRAME_SAMPLES))
            .map_err(self.error("reopening audio"))?;
        Ok(())
    }

    pub(crate) fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        self.fill()?;
        if self.pending_video.is_none() && self.pending_audio.is_none() {
            if !self.looping {
                return Err(IngestError::Ended(self.name.clone()));
            }
            self.rewind()?;
            self.fill()?;
            if self.pending_video.is_none() && self.pending_audio.is_none() {
                return Err(IngestError::Ended(self.name.clone()));
            }
        }
        let video_at = self.pending_video.as_ref().map(|(_, at)| *at);
        let audio_at = self.pending_audio.as_ref().map(|(_, at)| *at);
        // Deliver in capture order, so that the muxer sees both tracks advance together.
        let audio_first = match (video_at, audio_at) {
            (Some(v), Some(a)) => a < v,
            (None, Some(_)) => true,
            _ => false,
        };
        let offset = self.loop_offset;
        let (media, time_base, at) = if audio_first {
            let (mut f, at) = self
                .pending_audio
                .take()
                .ok_or(IngestError::Ended(self.name.clone()))?;
            let tb = self.format.audio_time_base;
            let pts = f.pts().map(|pts| pts + ticks(offset, tb));
            f.set_pts(pts);
            (RawMedia::Audio(f), tb, at + offset)
        } else {
            let (mut f, at) = self
                .pending_video
                .take()
                .ok_or(IngestError::Ended(self.name.clone()))?;
            let tb = self.format.video_time_base;
            let pts = f.pts().map(|pts| pts + ticks(offset, tb));
            f.set_pts(pts);
            (RawMedia::Video(f), tb, at + offset)
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
