//! The media thread's life: it runs the media path, and when the source or the pipeline
//! fails, or goes silent longer than the watchdog allows, it closes what was made,
//! records why in the status, waits (exponential backoff with jitter) and reconnects.
//! The playlist stays served meanwhile, its outage listed as a gap when that is on
//! ([`outage`](super::outage)); the stream resumes with the next MSN, after an
//! EXT-X-DISCONTINUITY or on the gap's timeline.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::media::{MediaError, MediaLoop};
use super::outage::Outage;
use super::output::Output;
use super::publisher::StreamPublisher;
use super::status::SourceState;
use std::thread::JoinHandle;

use crate::ingest::{IngestError, OpenedSource};

/// Delays between attempts to reopen a failed source: 0.5 s doubling to 30 s, each
/// with up to 25 % jitter, so that a fleet of streams does not retry in step.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub(super) fn next(&mut self) -> Duration {
        let base = Duration::from_millis(500) * 2u32.saturating_pow(self.failures.min(6));
        self.failures += 1;
        let base = base.min(Duration::from_secs(30));
        // Jitter from the clock's low bits: spreading retries needs no random generator.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    /// The source works again.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The longest wait between attempts to reopen a source while its outage is listed as
/// a gap.
const GAP_RETRY_CEILING: Duration = Duration::from_secs(1);

impl MediaLoop {
    /// Runs until the stream is stopped. A panic anywhere on the media path (a source,
    /// an encoder, a segmenter) is caught, counted in the status and recovered from like
    /// a failed source: what was open is dropped, the source reopened with backoff. The
    /// other streams, each on its own thread, never notice.
    pub(super) fn supervise(mut self) {
        let mut backoff = Backoff::default();
        loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.run(&mut backoff))) {
                Ok(()) => return,
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into());
                    // The source and encoders the panic went through are dropped.
                    self.input = None;
                    self.publisher.update_status(|status| status.panics += 1);
                    let error = MediaError::Panicked(message);
                    let failed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        self.fail(&error, &mut backoff)
                    }));
                    if failed.is_err() {
                        // Closing what was open panicked too: start every rendition anew.
                        for output in &mut self.outputs {
                            output.segmenter = None;
                        }
                    }
                }
            }
        }
    }

    /// The media path until the stream is stopped (or a panic).
    fn run(&mut self, backoff: &mut Backoff) {
        let mut samples = Vec::new();
        let mut last_output = Instant::now();
        // The watchdog for encoders: frames go in, nothing comes out.
        let encoder_limit = self.options.stall_timeout().max(Duration::from_secs(2));
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_slate();
            if self.input.is_none() {
                match self.connect() {
                    Ok(()) => last_output = Instant::now(),
                    Err(error) => {
                        self.fail(&error, backoff);
                        continue;
                    }
                }
            }
            // A source back after a gap whose keyframe is awaited: the gap goes on.
            let resuming = self.outage.is_some();
            if resuming {
                self.tick_outage();
            }
            let stepped = self.step(&mut samples).and_then(|_| {
                if !samples.is_empty() || resuming {
                    last_output = Instant::now();
                    Ok(())
                } else if last_output.elapsed() > encoder_limit {
                    Err(MediaError::EncoderStalled(encoder_limit))
                } else {
                    Ok(())
                }
            });
            if let Err(error) = stepped {
                self.input = None;
                self.fail(&error, backoff);
                continue;
            }
            backoff.reset();
            self.feed(&mut samples);
            if let Some(error) = self.overlong_segment() {
                self.input = None;
                self.fail(&error, backoff);
                continue;
            }
            if let Err(error) = self.publish_events() {
                self.input = None;
                self.fail(&error, backoff);
            }
        }
    }

    /// The source or the pipeline failed: close every open segment (so the playlist
    /// lists what was made), log it, note it in the status, and wait before the next
    /// connect. Blocked reloads end with 503 after three target durations.
    fn fail(&mut self, error: &MediaError, backoff: &mut Backoff) {
        // The slate itself failed: the source is retried as without one.
        let slate_failed = self.slate.take().is_some();
        self.slate_spent |= slate_failed;
        if slate_failed {
            self.publisher.update_status(|status| status.filling = None);
        }
        let now = SystemTime::now();
        // When a slate follows, it publishes the closed playlists with its break listed
        // (see `Output::close`).
        let slate_next = !slate_failed && self.slate_follows();
        for output in &mut self.outputs {
            if let Err(error) = output.close(&self.stream, self.sink.as_mut(), !slate_next, now) {
                tracing::warn!(stream = %self.stream, %error, "the last part and segment are lost");
            }
        }
        self.begin_outage();
        if slate_next {
            if self.start_slate() {
                tracing::warn!(stream = %self.stream, %error, "source failed; the slate plays while it is reopened");
                self.note_failure(error);
                return;
            }
            for output in &mut self.outputs {
                output.publish();
            }
        }
        // While the outage is listed as a gap, every second counts: a source back sooner
        // is a shorter gap for every viewer.
        let delay = match &self.outage {
            Some(outage) if !outage.is_over() => backoff.next().min(GAP_RETRY_CEILING),
            _ => backoff.next(),
        };
        tracing::warn!(stream = %self.stream, %error, retry_in = ?delay, "source failed; retrying");
        self.note_failure(error);
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            self.tick_outage();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl MediaLoop {
    /// Opens the source again. While an outage is listed as a gap, the opening runs on a
    /// thread of its own (it can take the open timeout, or wait for a publisher) and
    /// this one goes on listing the gap.
    pub(super) fn open_source(&mut self) -> Result<OpenedSource, MediaError> {
        let limits = self.options.open_limits(&self.stop);
        if self.outage.as_ref().is_none_or(Outage::is_over) {
            return Ok(self
                .spec
                .open_any(&self.options.source, self.realtime, &limits)?);
        }
        let opening = self.spawn_opener().map_err(MediaError::Thread)?;
        while !opening.is_finished() {
            self.tick_outage();
            std::thread::sleep(Duration::from_millis(20));
        }
        match opening.join() {
            Ok(opened) => Ok(opened?),
            Err(_) => Err(MediaError::Panicked("opening the source".into())),
        }
    }

    /// The source opened on a thread of its own, so that this one goes on with the gap
    /// or the slate meanwhile.
    pub(super) fn spawn_opener(
        &self,
    ) -> std::io::Result<JoinHandle<Result<OpenedSource, IngestError>>> {
        let (spec, options, realtime) = (
            self.spec.clone(),
            self.options.source.clone(),
            self.realtime,
        );
        let limits = self.options.open_limits(&self.stop);
        std::thread::Builder::new()
            .name(format!("open-{}", self.stream))
            .spawn(move || spec.open_any(&options, realtime, &limits))
    }

    /// Where the media made so far ends, on the media timeline and by capture time (the
    /// furthest rendition's); `None` before any part.
    pub(super) fn media_end(&self) -> Option<(Duration, SystemTime)> {
        self.outputs
            .iter()
            .filter_map(|o| o.media_end)
            .max_by_key(|(end, _)| *end)
    }

    /// What `/streams` says of a failure.
    fn note_failure(&self, error: &MediaError) {
        self.publisher.update_status(|status| {
            status.state = SourceState::Retrying;
            status.publisher = None;
            status.last_error = Some(error.to_string());
            status.restarts += 1;
        });
    }

    /// The source failed: its outage begins (listed as a gap when that is on, the
    /// stream is live and has made media), or goes on if its media was not placed yet.
    pub(super) fn begin_outage(&mut self) {
        if let Some(outage) = self.outage.as_mut() {
            outage.source_lost();
            return;
        }
        let Some(limit) = self.options.source.outage_gap().filter(|_| self.realtime) else {
            return;
        };
        let Some((start, start_wall)) = self.media_end() else {
            return;
        };
        tracing::info!(stream = %self.stream, limit = ?limit, "source down: its time is listed as a gap");
        self.publisher
            .update_status(|status| status.filling = Some("gap"));
        self.outage = Some(Outage::new(
            start,
            start_wall,
            limit,
            self.options.cmaf.part_target(),
            self.options.cmaf.segment_target(),
        ));
    }

    /// Lists the gap parts now due, and publishes them.
    pub(super) fn tick_outage(&mut self) {
        let Some(outage) = self.outage.as_mut() else {
            return;
        };
        let changed = outage.tick(&mut self.outputs, SystemTime::now());
        if outage.is_over() && outage.fills() {
            self.publisher.update_status(|status| status.filling = None);
        }
        if changed {
            let changed = vec![true; self.outputs.len()];
            self.publish_changed(&changed);
        }
    }
}

/// While a source back after an outage has no media placed yet: whether what it just
/// delivered goes on, placed. Only a frame that `starts` media (a keyframe, or a
/// picture to encode) is placed, where its capture time falls after what the outage
/// listed; `source_at` (where it is on its source's own timeline, asked only then) sets
/// the shift of everything after it, and the gap is listed up to it. Anything else is
/// dropped. Always true outside that wait.
pub(super) fn place_after_outage(
    outage: &mut Option<Outage>,
    outputs: &mut [Output],
    publisher: &StreamPublisher,
    resume_offset: &mut Duration,
    starts: bool,
    captured_at: SystemTime,
    source_at: impl FnOnce() -> Option<Duration>,
) -> bool {
    let Some(waiting) = outage.as_ref().filter(|o| o.is_resuming()) else {
        return true;
    };
    let Some(at) = starts.then(|| waiting.place(captured_at)).flatten() else {
        return false;
    };
    let Some(source_at) = source_at() else {
        return false;
    };
    *resume_offset = at.saturating_sub(source_at);
    end_gap(outage, outputs, publisher, at.max(source_at));
    true
}

/// The source's media is placed at `resume_at`: the gap is listed up to it, and every
/// rendition goes on from there.
fn end_gap(
    outage: &mut Option<Outage>,
    outputs: &mut [Output],
    publisher: &StreamPublisher,
    resume_at: Duration,
) {
    let Some(mut ended) = outage.take() else {
        return;
    };
    publisher.update_status(|status| status.filling = None);
    let now = SystemTime::now();
    ended.finish(outputs, resume_at, now);
    for output in outputs.iter_mut() {
        output.resume_after_gap(now);
    }
    if ended.fills() {
        tracing::info!(gap = ?ended.length(), "media resumes after the gap, on the same timeline");
    } else {
        tracing::info!("the source's media goes on where its capture time falls after the slate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling_with_bounded_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next()).collect();
        for (i, delay) in delays.iter().enumerate() {
            let base = (Duration::from_millis(500)
                * 2u32.pow(u32::try_from(i.min(6)).unwrap_or(6)))
            .min(Duration::from_secs(30));
            assert!(
                *delay >= base && *delay <= base.mul_f64(1.25),
                "{i}: {delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(625));
    }
}
