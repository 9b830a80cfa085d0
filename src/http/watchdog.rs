//! Watchdogs over one connection's clock: when it has been idle too long
//! ([`IdleTracker`]), when its peer has stopped taking bytes ([`SendTimeout`]), and
//! logging that a flood cannot turn into a flood of log lines ([`LogThrottle`]).
//!
//! Never imports the handler or the media: these watch sockets and time only.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in flight on one connection and since when it has had none; the
/// connection's task waits on [`IdleTracker::idle`] to close it. A peer that keeps a
/// connection alive with pings (QUIC PING, HTTP/2 PING) but sends no request is idle.
#[derive(Debug, Clone)]
pub struct IdleTracker(Arc<Idle>);

#[derive(Debug)]
struct Idle {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for IdleTracker {
    fn default() -> Self {
        Self(Arc::new(Idle {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }
}

impl IdleTracker {
    /// A request started; the guard ends it.
    pub fn request(&self) -> RequestInFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestInFlight(self.0.clone())
    }

    fn idle_since(&self) -> Instant {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once the connection has had no request in flight for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            if self.0.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: it cannot have been idle long enough before a whole period.
                tokio::time::sleep(timeout).await;
                continue;
            }
            let deadline = self.idle_since() + timeout;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in flight; dropping it marks the end.
#[derive(Debug)]
pub struct RequestInFlight(Arc<Idle>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }
}

/// A byte stream whose writes fail with `TimedOut` once one has waited `timeout`
/// without progress: nginx's `send_timeout`, the time between two successful writes,
/// so a slow client still gets a long response while a stopped one is dropped.
#[derive(Debug)]
pub struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> SendTimeout<T> {
    /// `inner` with writes bounded by `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Called with a write's outcome: progress disarms the clock, waiting arms it and
    /// fails once it runs out.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no response bytes within the send timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// The response bodies of one connection: how many are open and when the protocol last
/// asked one for bytes. Over HTTP/2 hyper asks a body for bytes only when the peer's
/// flow control has room, and writes nothing while it waits, so a peer that stops
/// granting window (but answers pings) is seen here, not at the socket: no body asked
/// for in the send timeout while some are open.
#[derive(Debug)]
pub struct BodyProgress {
    base: Instant,
    last_ms: AtomicU64,
    open: AtomicUsize,
    /// Open bodies waiting for bytes of their own (a segment's next part), not for the
    /// peer: those are not stalled by it.
    waiting_on_source: AtomicUsize,
}

impl BodyProgress {
    /// A connection's, with no body open.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            waiting_on_source: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// `body` watched: each time it is asked for bytes counts as progress; `in_flight`
    /// is released when it ends (a request lasts as long as its response body).
    pub fn watch<S>(self: &Arc<Self>, body: S, in_flight: RequestInFlight) -> Watched<S> {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Watched {
            body,
            progress: self.clone(),
            waiting: false,
            _in_flight: in_flight,
        }
    }

    /// Returns once bodies are open and none has been asked for bytes for `timeout`.
    pub async fn stalled(&self, timeout: Duration) {
        let check = (timeout / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(check).await;
            let now = self.base.elapsed();
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let waiting_for_peer =
                self.open.load(Ordering::Acquire) > self.waiting_on_source.load(Ordering::Acquire);
            if waiting_for_peer && now.saturating_sub(last) > timeout {
                return;
            }
        }
    }
}

/// A response body under [`BodyProgress`].
pub struct Watched<S> {
    body: S,
    progress: Arc<BodyProgress>,
    /// Its last poll found no bytes ready: it waits on its source.
    waiting: bool,
    _in_flight: RequestInFlight,
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for Watched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if std::mem::take(&mut self.waiting) {
            self.progress
                .waiting_on_source
                .fetch_sub(1, Ordering::AcqRel);
        }
        self.progress.touch();
        let polled = Pin::new(&mut self.body).poll_next(cx);
        if polled.is_pending() {
            self.waiting = true;
            self.progress
                .waiting_on_source
                .fetch_add(1, Ordering::AcqRel);
        }
        polled
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if self.waiting {
            self.progress
                .waiting_on_source
                .fetch_sub(1, Ordering::AcqRel);
        }
        self.progress.open.fetch_sub(1, Ordering::AcqRel);
        // Ending counts as progress: the connection is not blamed for a body it finished.
        self.progress.touch();
    }
}

/// At most one log line per second for a repeated event, with the count of the ones
/// it stood for: a connection flood or an fd exhaustion must not fill the disk.
#[derive(Debug)]
pub struct LogThrottle {
    state: Mutex<Option<(Instant, u64)>>,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LogThrottle {
    /// A throttle that has logged nothing yet.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    /// Counts one event; returns how many it stands for when this one should be logged
    /// (the first, then the first after each second).
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match &mut *state {
            Some((last, count)) if now.duration_since(*last) < Duration::from_secs(1) => {
                *count += 1;
                None
            }
            slot => {
                let stood_for = slot.map_or(1, |(_, count)| count + 1);
                *slot = Some((now, 0));
                Some(stood_for)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_to_end() {
        let tracker = IdleTracker::default();
        let request = tracker.request();
        let started = Instant::now();
        let idle = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.idle(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!idle.is_finished(), "idle while a request was in flight");
        drop(request);
        idle.await.unwrap();
        let elapsed = started.elapsed();
        assert!(
            (Duration::from_secs(35)..Duration::from_secs(46)).contains(&elapsed),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_times_out() {
        // A pipe whose reader never reads: its buffer fills, then writes wait.
        let (writer, _reader) = tokio::io::duplex(64);
        let mut writer = SendTimeout::new(writer, Duration::from_secs(5));
        let error = writer.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_burst_is_logged_once() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.hit(), Some(1));
        for _ in 0..100 {
            assert_eq!(throttle.hit(), None);
        }
    }
}
