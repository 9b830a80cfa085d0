//! The media thread's path: one frame or sample from the source, through the encoders
//! when there are any, into every rendition's segmenter, and the segmenters' events
//! into the store and the playlists. Opening the source and readying the renditions
//! ([`MediaLoop::connect`]) is here too; what happens when it fails is the
//! [`supervisor`](super::supervisor)'s.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::StreamOptions;
use super::bandwidth::Advertised;
use super::opening::{Input, Opening, Transcoding, open_encoded, open_raw};
use super::outage::Outage;
use super::output::Output;
use super::publisher::StreamPublisher;
use super::sink::MediaSink;
use super::status::SourceState;
use super::supervisor::place_after_outage;
use crate::cmaf::{AUDIO_TRACK_ID, Sample, Timescale, TrackInfo, VIDEO_TRACK_ID};
use crate::ingest::{OpenedSource, RawMedia, SourceFormat, SourceFrame, SourceSpec};
use crate::llhls::RenditionReport;

/// Why the media path stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum MediaError {
    #[error(transparent)]
    Source(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error(transparent)]
    Open(#[from] super::opening::OpenError),
    #[error("init segment: {0}")]
    Init(#[from] crate::cmaf::init::InitError),
    #[error(transparent)]
    Sink(#[from] super::sink::SinkError),
    #[error("the encoders produced nothing for {0:?}")]
    EncoderStalled(Duration),
    #[error(
        "rendition {rendition}: no keyframe for {after:?} (the cap is three segment \
         targets); restarting the source"
    )]
    NoKeyframe { rendition: String, after: Duration },
    #[error("the media thread panicked: {0}")]
    Panicked(String),
    #[error("cannot start a thread to open the source: {0}")]
    Thread(std::io::Error),
}

/// The media thread's state.
pub(super) struct MediaLoop {
    pub(super) stream: String,
    pub(super) spec: SourceSpec,
    pub(super) options: StreamOptions,
    /// The source opened at start-up, used by the first connect.
    pub(super) first: Option<OpenedSource>,
    pub(super) input: Option<Input>,
    pub(super) outputs: Vec<Output>,
    pub(super) epoch: SystemTime,
    /// Media time just past everything delivered so far: a reopened source starts its
    /// timestamps at zero again, and is shifted to continue from here.
    pub(super) delivered_end: Duration,
    /// Shift applied to the current source instance's timestamps.
    pub(super) resume_offset: Duration,
    /// Where finished parts and segments go.
    pub(super) sink: Box<dyn MediaSink>,
    /// Release the source at real time (live); false: as fast as it encodes (a
    /// recording of a local source).
    pub(super) realtime: bool,
    /// Stop once this much media (by capture time) has gone in: a recording.
    pub(super) until: Option<Duration>,
    /// Capture time of the first frame or sample, for `until`.
    pub(super) first_capture: Option<SystemTime>,
    /// Samples the segmenters refused (each logged).
    pub(super) refused_samples: u64,
    /// The multivariant playlist and the status (the renditions publish through their
    /// outputs).
    pub(super) publisher: StreamPublisher,
    pub(super) stop: Arc<AtomicBool>,
    /// Where the publisher's bitrate was last measured from: when, and the source's
    /// byte count then.
    pub(super) bitrate_mark: Option<(std::time::Instant, u64)>,
    /// The multivariant playlist's renditions and the bit rates it gives them; `None`
    /// before the source first opens.
    pub(super) advertised: Option<Advertised>,
    /// The source's outage being listed as a gap (`source.outage = "gap"`), or, after a
    /// slate, where the source's media is to be placed when it is back.
    pub(super) outage: Option<Outage>,
    /// The slate playing while the source is down (`source.outage = "slate"`).
    pub(super) slate: Option<super::slate::SlateRun>,
    /// A slate ran out (or failed) since the source last played: the next failure
    /// waits without one.
    pub(super) slate_spent: bool,
}

/// How often a publisher's bitrate in `/streams` is measured anew.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);

impl MediaLoop {
    /// One frame or sample from the source, through the encoders when there are any.
    /// False when a recording has all the media it wants (the frame is not used).
    pub(super) fn step(&mut self, out: &mut Vec<(usize, Sample)>) -> Result<bool, MediaError> {
        fail::fail_point!("media-step", |_| Ok(true));
        let stall = self.options.stall_timeout();
        match self.input.as_mut() {
            None => Ok(true),
            Some(Input::Raw { source, transcoder }) => {
                let mut frame = source.next_frame()?;
                if past_the_end(self.until, &mut self.first_capture, frame.captured_at) {
                    return Ok(false);
                }
                let format = source.format();
                // After an outage, media goes on with a picture placed on its timeline.
                let placed = place_after_outage(
                    &mut self.outage,
                    &mut self.outputs,
                    &self.publisher,
                    &mut self.resume_offset,
                    matches!(frame.media, RawMedia::Video(_)),
                    frame.captured_at,
                    || Some(frame_time(&frame)),
                );
                if !placed {
                    return Ok(true);
                }
                let end = shift_frame(&mut frame, self.resume_offset, format);
                self.delivered_end = self.delivered_end.max(end);
                self.publisher.counters().received(source.take_bytes_read());
                transcoder.push(frame, out)?;
                for (output, frames) in self.outputs.iter().zip(transcoder.frames_held()) {
                    output.counters().set_encoder_queue(frames);
                }
                Ok(true)
            }
            Some(Input::Encoded {
                source,
                copies,
                transcoding,
                audio,
                silence,
            }) => {
                let mut sample = source.next_sample(stall)?;
                // A camera that stops sending keyframes, for the supervision tests.
                #[cfg(feature = "failpoints")]
                if fail::eval("no-keyframes", |_| ()).is_some() {
                    sample.keyframe = false;
                }
                if past_the_end(self.until, &mut self.first_capture, sample.captured_at) {
                    return Ok(false);
                }
                self.publisher.counters().received(sample.data.len() as u64);
                let foreign = source
                    .foreign_audio()
                    .filter(|_| sample.track_id == AUDIO_TRACK_ID);
                let timing = source
                    .tracks()
                    .iter()
                    .find(|t| t.track_id == sample.track_id)
                    .map(|t| (t.timescale, u64::from(t.nominal_sample_ticks)))
                    .or(foreign.map(|f| (Timescale(f.rate()), f.duration_of(&sample.data))));
                // After an outage, media goes on at a keyframe placed on its timeline;
                // what comes before that keyframe has no place to go.
                let placed = place_after_outage(
                    &mut self.outage,
                    &mut self.outputs,
                    &self.publisher,
                    &mut self.resume_offset,
                    sample.track_id == VIDEO_TRACK_ID && sample.keyframe,
                    sample.captured_at,
                    || timing.map(|(timescale, _)| timescale.to_duration(sample.decode_ticks)),
                );
                if !placed {
                    return Ok(true);
                }
                if let Some((timescale, length)) = timing {
                    sample.decode_ticks += timescale.ticks(self.resume_offset);
                    let end = timescale.to_duration(sample.decode_ticks + length);
                    self.delivered_end = self.delivered_end.max(end);
                    // Silence up to the end of this picture, so that each part has
                    // the sound of its own time.
                    if let Some(silence) = silence.as_mut()
                        && sample.track_id == VIDEO_TRACK_ID
                    {
                        for aac in silence.fill(end, sample.captured_at)? {
                            deliver(aac, copies, transcoding, out)?;
                        }
                    }
                }
                match (audio, foreign) {
                    (Some(audio), Some(_)) => {
                        audio.encoder.push(&sample, &mut audio.samples)?;
                        for aac in audio.samples.drain(..) {
                            deliver(aac, copies, transcoding, out)?;
                        }
                    }
                    _ => deliver(sample, copies, transcoding, out)?,
                }
                if let Some(t) = transcoding {
                    for (&index, frames) in t.outputs.iter().zip(t.transcoder.frames_held()) {
                        self.outputs[index].counters().set_encoder_queue(frames);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Hands encoded samples to their renditions' segmenters; a refused sample is
    /// logged and counted, and the stream goes on.
    pub(super) fn feed(&mut self, samples: &mut Vec<(usize, Sample)>) {
        let now = SystemTime::now();
        for (index, sample) in samples.drain(..) {
            let output = &mut self.outputs[index];
            let Some(segmenter) = output.segmenter.as_mut() else {
                continue;
            };
            let (bytes, video) = (sample.data.len(), sample.track_id == VIDEO_TRACK_ID);
            match segmenter.push(sample, now) {
                Ok(()) => output.counters().took(bytes, video),
                Err(error) => {
                    self.refused_samples += 1;
                    tracing::warn!(stream = %self.stream, %error, "sample refused");
                }
            }
        }
    }

    /// A segment that has grown past three segment targets without a keyframe (a
    /// camera whose GOP never ends): the source is restarted, which closes it and
    /// starts the next one after a discontinuity at the keyframe a new session begins
    /// with, instead of one segment (and its parts) growing for ever.
    pub(super) fn overlong_segment(&self) -> Option<MediaError> {
        self.outputs.iter().find_map(|output| {
            let segmenter = output.segmenter.as_ref()?;
            let after = segmenter.open_duration()?;
            (after > segmenter.segment_target() * 3).then(|| MediaError::NoKeyframe {
                rendition: output.id.clone(),
                after,
            })
        })
    }

    /// Opens the source (or takes the one opened at start-up), opens the encoders, and
    /// readies every rendition: at the first connect, its names, init segment and
    /// playlist; after a failure, a new segmenter that goes on with the next MSN after an
    /// EXT-X-DISCONTINUITY.
    pub(super) fn connect(&mut self) -> Result<(), MediaError> {
        let opened = match self.first.take() {
            Some(opened) => opened,
            None => {
                // Say what the wait is for while it lasts: a listener waits for its
                // sender, anything else is being opened (within the open timeout).
                let state = if self.spec.listens() {
                    SourceState::Waiting
                } else {
                    SourceState::Opening
                };
                self.publisher.update_status(|status| status.state = state);
                self.open_source()?
            }
        };
        let Opening {
            input,
            prepared,
            fps,
            mode,
        } = match opened {
            OpenedSource::Raw(source) => open_raw(&self.options, &self.outputs, source)?,
            OpenedSource::Encoded(source) => open_encoded(&self.options, &self.outputs, source)?,
        };
        let renditions: Vec<(String, Vec<TrackInfo>)> = self
            .outputs
            .iter()
            .zip(&prepared)
            .map(|(o, p)| (o.id.clone(), p.tracks.clone()))
            .collect();
        let now = SystemTime::now();
        // Media goes on after a gap when the gap was still being listed and the source
        // came back alike; otherwise the gap ends here and a discontinuity follows. After
        // a slate the source's media is placed by its capture time, after a discontinuity.
        let after_gap = self
            .outage
            .as_ref()
            .is_some_and(|o| o.fills() && !o.is_over())
            && self
                .outputs
                .iter()
                .zip(&prepared)
                .all(|(o, p)| o.decodes_alike(&p.tracks));
        match self.outage.as_mut() {
            Some(outage) if after_gap || !outage.fills() => outage.source_back(),
            Some(outage) => {
                let end = outage.listed();
                outage.finish(&mut self.outputs, end, now);
                self.delivered_end = self.delivered_end.max(end);
                self.outage = None;
                self.publisher.update_status(|status| status.filling = None);
            }
            None => {}
        }
        self.resume_offset = self.delivered_end;
        let window = self.options.window_segments;
        for (output, prepared) in self.outputs.iter_mut().zip(prepared) {
            output.ready(prepared, self.epoch, window, now, &self.stream, after_gap)?;
        }
        let advertised = Advertised::new(renditions, fps);
        self.publisher
            .set_multivariant(Bytes::from(advertised.render()));
        self.advertised = Some(advertised);
        let (jitter, publisher) = match &input {
            Input::Encoded { source, .. } => (source.buffer_fill(), source.publisher()),
            Input::Raw { .. } => (None, None),
        };
        self.input = Some(input);
        self.slate_spent = false;
        self.bitrate_mark = None;
        self.publisher.update_status(|status| {
            status.state = SourceState::Live;
            status.mode = Some(mode);
            status.jitter_buffer = jitter;
            status.publisher = publisher;
        });
        tracing::info!(stream = %self.stream, mode = mode.as_str(), source = %self.spec, "stream live");
        Ok(())
    }

    /// Takes every rendition's new parts and segments into the sink and its playlist,
    /// brings the rendition reports up to date, and publishes the renditions that
    /// changed.
    pub(super) fn publish_events(&mut self) -> Result<(), MediaError> {
        let changed = self
            .outputs
            .iter_mut()
            .map(|output| output.drain_events(self.sink.as_mut()))
            .collect::<Result<Vec<bool>, _>>()?;
        if changed.iter().any(|&c| c) {
            self.publish_changed(&changed);
        }
        Ok(())
    }

    /// Brings the rendition reports up to date and publishes the renditions that
    /// changed, and the multivariant playlist when their measured bit rates moved it.
    pub(super) fn publish_changed(&mut self, changed: &[bool]) {
        if self.outputs.len() > 1 {
            // RFC 8216bis 4.4.5.4: each playlist reports where the others are. Every
            // rendition gets its parts from the same frame, so reports are at most one
            // part behind.
            let edges: Vec<RenditionReport> = self
                .outputs
                .iter()
                .filter_map(|o| {
                    let (last_msn, last_part) = o.live.last_part()?;
                    Some(RenditionReport {
                        uri: format!("{}.m3u8", o.id),
                        last_msn,
                        last_part,
                    })
                })
                .collect();
            for output in &mut self.outputs {
                let own = format!("{}.m3u8", output.id);
                let reports = edges.iter().filter(|r| r.uri != own).cloned().collect();
                output.live.set_rendition_reports(reports);
            }
        }
        if let Some(Input::Encoded { source, .. }) = &self.input {
            let fill = source.buffer_fill();
            let bitrate = source.publisher().and_then(|_| self.publisher_bitrate());
            self.publisher.update_status(|status| {
                status.jitter_buffer = fill;
                if let (Some(publisher), Some(bps)) = (status.publisher.as_mut(), bitrate) {
                    publisher.bitrate_bps = Some(bps);
                }
            });
        }
        for (output, &changed) in self.outputs.iter_mut().zip(changed) {
            if changed {
                output.publish();
            }
        }
        if let Some(advertised) = self.advertised.as_mut() {
            let measured: Vec<_> = self.outputs.iter().map(|o| o.rates.measured()).collect();
            if advertised.update(&measured) {
                self.publisher
                    .set_multivariant(Bytes::from(advertised.render()));
            }
        }
    }
}

impl MediaLoop {
    /// The publisher's bitrate over the last [`BITRATE_WINDOW`], once one has passed
    /// since the last measurement.
    fn publisher_bitrate(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let bytes = self.publisher.counters().source_bytes();
        let Some((since, then)) = self.bitrate_mark else {
            self.bitrate_mark = Some((now, bytes));
            return None;
        };
        let elapsed = now.duration_since(since);
        if elapsed < BITRATE_WINDOW {
            return None;
        }
        self.bitrate_mark = Some((now, bytes));
        let bits = bytes.saturating_sub(then).saturating_mul(8);
        Some(
            u64::try_from(u128::from(bits) * 1000 / elapsed.as_millis().max(1)).unwrap_or(u64::MAX),
        )
    }
}

/// Whether media captured at `at` is past the end of a recording of `until` that began
/// at `first` (the first call's `at`).
fn past_the_end(until: Option<Duration>, first: &mut Option<SystemTime>, at: SystemTime) -> bool {
    let Some(until) = until else {
        return false;
    };
    let first = *first.get_or_insert(at);
    at.duration_since(first).unwrap_or_default() >= until
}

/// An encoded source's sample to the renditions that pass it through, and to the
/// decoder of those that transcode.
fn deliver(
    sample: Sample,
    copies: &[usize],
    transcoding: &mut Option<Box<Transcoding>>,
    out: &mut Vec<(usize, Sample)>,
) -> Result<(), MediaError> {
    if let Some(t) = transcoding {
        if sample.track_id == VIDEO_TRACK_ID {
            t.decoder.push(&sample, &mut t.frames)?;
            for frame in t.frames.drain(..) {
                t.transcoder.push(frame, &mut t.samples)?;
                out.extend(t.samples.drain(..).map(|(j, s)| (t.outputs[j], s)));
            }
        } else {
            // Sound is not transcoded: every rendition carries the same samples.
            out.extend(t.outputs.iter().map(|&index| (index, sample.clone())));
        }
    }
    if let Some((&last, rest)) = copies.split_last() {
        for &index in rest {
            out.push((index, sample.clone()));
        }
        out.push((last, sample));
    }
    Ok(())
}

/// Where `frame` is on its source's own timeline.
fn frame_time(frame: &SourceFrame) -> Duration {
    let tb = frame.time_base;
    let pts = match &frame.media {
        RawMedia::Video(v) => v.pts(),
        RawMedia::Audio(a) => a.pts(),
    };
    let nanos =
        i128::from(pts.unwrap_or(0).max(0)) * i128::from(tb.numerator().max(1)) * 1_000_000_000
            / i128::from(tb.denominator().max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// Moves `frame` past everything delivered before the source was last reopened.
/// Returns the media time just past the frame.
fn shift_frame(frame: &mut SourceFrame, resume_offset: Duration, format: SourceFormat) -> Duration {
    let tb = frame.time_base;
    let (num, den) = (
        i128::from(tb.numerator().max(1)),
        i128::from(tb.denominator().max(1)),
    );
    let offset =
        i128::try_from(resume_offset.as_nanos()).unwrap_or(0) * den / (num * 1_000_000_000);
    let offset = i64::try_from(offset).unwrap_or(0);
    let (pts, length) = match &mut frame.media {
        RawMedia::Video(v) => {
            let pts = v.pts().unwrap_or(0) + offset;
            v.set_pts(Some(pts));
            let fps = format.frame_rate;
            let nanos =
                1_000_000_000 * i64::from(fps.denominator()) / i64::from(fps.numerator().max(1));
            (pts, Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
        }
        RawMedia::Audio(a) => {
            let pts = a.pts().unwrap_or(0) + offset;
            a.set_pts(Some(pts));
            let rate = u64::from(format.sample_rate.max(1));
            (
                pts,
                Duration::from_nanos(a.samples() as u64 * 1_000_000_000 / rate),
            )
        }
    };
    let at = i128::from(pts.max(0)) * num * 1_000_000_000 / den;
    let at = Duration::from_nanos(u64::try_from(at).unwrap_or(0));
    at + length
}
