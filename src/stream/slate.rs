//! The slate while a source is down (`source.outage = "slate"`). When the source fails,
//! a still card with silence ([`crate::ingest::slate`]) takes its place as the media
//! thread's input, encoded into every rendition at the picture size and codec it had,
//! after an EXT-X-DISCONTINUITY and with an init segment of its own: every player plays
//! on, VHS included, which loads EXT-X-GAP media as if it were there. The slate is
//! placed where its capture time falls on the stream's timeline. Meanwhile the source
//! is reopened on a thread of its own, at least once a second; once it opens, the slate
//! ends and the source takes its place after another discontinuity. A slate that has
//! played `outage_max_ms` ends, and the source is retried as without one.
//!
//! Never imports the HTTP layer or the configuration.

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::media::MediaLoop;
use super::opening::open_slate;
use super::outage::Outage;
#[cfg(doc)]
use super::output::Output;
use super::status::SourceState;
use super::supervisor::Backoff;
use crate::ingest::{IngestError, OpenedSource};

/// The longest wait between attempts to reopen the source while the slate plays.
const RETRY_CEILING: Duration = Duration::from_secs(1);

/// A slate playing. See the module docs.
pub(super) struct SlateRun {
    since: Instant,
    limit: Duration,
    /// The source being reopened.
    opener: Option<JoinHandle<Result<OpenedSource, IngestError>>>,
    next_attempt: Instant,
    backoff: Backoff,
}

impl MediaLoop {
    /// Whether a slate takes the source's place when it fails now: the slate is on, the
    /// stream is live and has made media, and no slate ran out since the source last
    /// played.
    pub(super) fn slate_follows(&self) -> bool {
        self.options.source.outage_slate().is_some()
            && self.realtime
            && !self.slate_spent
            && self.media_end().is_some()
    }

    /// The source failed: the slate takes its place (see [`MediaLoop::slate_follows`]).
    /// Returns whether it did.
    pub(super) fn start_slate(&mut self) -> bool {
        let (Some(limit), Some((end, end_wall))) =
            (self.options.source.outage_slate(), self.media_end())
        else {
            return false;
        };
        let opening = match open_slate(&self.options, &self.outputs) {
            Ok(opening) => opening,
            Err(error) => {
                tracing::warn!(stream = %self.stream, %error, "no slate");
                return false;
            }
        };
        // Its first frame, captured now, goes where now is on the stream's timeline.
        let now = SystemTime::now();
        self.resume_offset = end + now.duration_since(end_wall).unwrap_or_default();
        let window = self.options.window_segments;
        for (output, prepared) in self.outputs.iter_mut().zip(opening.prepared) {
            if let Err(error) = output.ready(prepared, self.epoch, window, now, &self.stream, false)
            {
                tracing::warn!(stream = %self.stream, %error, "no slate");
                return false;
            }
        }
        self.input = Some(opening.input);
        // A placement after an earlier slate is moot: this one ends with its own.
        self.outage = None;
        let mut backoff = Backoff::default();
        self.slate = Some(SlateRun {
            since: Instant::now(),
            limit,
            opener: None,
            next_attempt: Instant::now() + backoff.next().min(RETRY_CEILING),
            backoff,
        });
        tracing::info!(stream = %self.stream, limit = ?limit, "source down: the slate plays");
        self.publisher
            .update_status(|status| status.filling = Some("slate"));
        true
    }

    /// While the slate plays: the source is reopened in the background; once it opens,
    /// the slate ends and the next connect takes the opened source. Past the limit the
    /// slate ends, and the source is retried as without one.
    pub(super) fn poll_slate(&mut self) {
        let Some(slate) = self.slate.as_mut() else {
            return;
        };
        if slate.since.elapsed() >= slate.limit {
            tracing::warn!(stream = %self.stream, limit = ?slate.limit, "the source is still down: the slate ends");
            self.slate_spent = true;
            self.end_slate(true);
            return;
        }
        match slate.opener.take() {
            Some(opener) if opener.is_finished() => {
                let opened = opener.join().unwrap_or_else(|_| {
                    Err(IngestError::Network {
                        source_name: self.spec.to_string(),
                        reason: "reopening it panicked".into(),
                    })
                });
                match opened {
                    Ok(opened) => {
                        tracing::info!(stream = %self.stream, "source back: the slate ends");
                        // The next connect publishes, with the break listed.
                        self.end_slate(false);
                        self.outage = self
                            .media_end()
                            .map(|(end, end_wall)| Outage::after_slate(end, end_wall));
                        self.first = Some(opened);
                    }
                    Err(error) => {
                        let delay = slate.backoff.next().min(RETRY_CEILING);
                        slate.next_attempt = Instant::now() + delay;
                        tracing::warn!(stream = %self.stream, %error, retry_in = ?delay, "source still down; the slate plays on");
                        self.publisher.update_status(|status| {
                            status.last_error = Some(error.to_string());
                            status.restarts += 1;
                        });
                    }
                }
            }
            Some(opener) => slate.opener = Some(opener),
            None if Instant::now() >= slate.next_attempt => self.reopen_behind_slate(),
            None => {}
        }
    }

    /// Starts reopening the source on a thread of its own.
    fn reopen_behind_slate(&mut self) {
        let state = if self.spec.listens() {
            SourceState::Waiting
        } else {
            SourceState::Opening
        };
        self.publisher.update_status(|status| status.state = state);
        let spawned = self.spawn_opener();
        let Some(slate) = self.slate.as_mut() else {
            return;
        };
        match spawned {
            Ok(opener) => slate.opener = Some(opener),
            Err(error) => {
                tracing::warn!(stream = %self.stream, %error, "cannot start a thread to reopen the source");
                slate.next_attempt = Instant::now() + RETRY_CEILING;
            }
        }
    }

    /// Closes the slate's segments (so the playlists list what it made) and drops it
    /// as the input; a discontinuity follows at the next connect. Published now with
    /// `publish`; otherwise by the connect that follows (see [`Output::close`]).
    pub(super) fn end_slate(&mut self, publish: bool) {
        self.slate = None;
        self.publisher.update_status(|status| status.filling = None);
        self.input = None;
        let now = SystemTime::now();
        for output in &mut self.outputs {
            if let Err(error) = output.close(&self.stream, self.sink.as_mut(), publish, now) {
                tracing::warn!(stream = %self.stream, %error, "the slate's last part is lost");
            }
        }
    }
}
