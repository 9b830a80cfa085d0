//! A deadline libav obeys: its interrupt callback, which libav polls during every
//! blocking call (connect, handshake, probe, read), asks this whether to give up. Armed
//! for the whole open, then re-armed each time the source delivers a frame, so a source
//! that opens forever, or reads packets forever without a frame coming out (timestamps
//! gone backwards, say), is ended like one that went silent. Stopping the stream ends
//! any call at once.
//!
//! Atomics only; imports nothing of libav (the source hands [`Deadline::expired`] to
//! libav as its callback).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// See the module docs. Clones share the deadline.
#[derive(Debug, Clone)]
pub struct Deadline(Arc<State>);

#[derive(Debug)]
struct State {
    base: Instant,
    /// Milliseconds after `base` when calls give up; `u64::MAX`: never.
    at_ms: AtomicU64,
    /// Why the deadline is there: what to say when it passes.
    armed_for: AtomicU64,
    stop: Arc<AtomicBool>,
}

/// What the deadline was armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armed {
    /// Opening the source (connect, handshake, probe).
    Open(Duration),
    /// The next frame.
    Frame(Duration),
    /// Nothing: waiting for a sender as long as it takes (a listener).
    Never,
}

impl Deadline {
    /// A deadline that is not armed, given up at once when `stop` is set.
    pub fn new(stop: Arc<AtomicBool>) -> Self {
        Self(Arc::new(State {
            base: Instant::now(),
            at_ms: AtomicU64::new(u64::MAX),
            armed_for: AtomicU64::new(0),
            stop,
        }))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Arms it for `what`, from now.
    pub fn arm(&self, what: Armed) {
        let (at, code) = match what {
            Armed::Open(within) => (
                self.now_ms().saturating_add(millis(within)),
                millis(within) << 1,
            ),
            Armed::Frame(within) => (
                self.now_ms().saturating_add(millis(within)),
                (millis(within) << 1) | 1,
            ),
            Armed::Never => (u64::MAX, 0),
        };
        self.0.armed_for.store(code, Ordering::Relaxed);
        self.0.at_ms.store(at, Ordering::Relaxed);
    }

    /// What it is armed for.
    pub fn armed(&self) -> Armed {
        let code = self.0.armed_for.load(Ordering::Relaxed);
        if self.0.at_ms.load(Ordering::Relaxed) == u64::MAX {
            return Armed::Never;
        }
        let within = Duration::from_millis(code >> 1);
        if code & 1 == 1 {
            Armed::Frame(within)
        } else {
            Armed::Open(within)
        }
    }

    /// Whether libav should give up now.
    pub fn expired(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed) || self.now_ms() >= self.0.at_ms.load(Ordering::Relaxed)
    }

    /// Whether the stream was stopped.
    pub fn stopped(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX >> 2)
        .min(u64::MAX >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_expires_when_armed_time_passes_or_the_stream_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Deadline::new(stop.clone());
        assert!(!deadline.expired(), "not armed");
        deadline.arm(Armed::Frame(Duration::ZERO));
        assert!(deadline.expired());
        assert_eq!(deadline.armed(), Armed::Frame(Duration::ZERO));
        deadline.arm(Armed::Open(Duration::from_secs(60)));
        assert!(!deadline.expired());
        assert_eq!(deadline.armed(), Armed::Open(Duration::from_secs(60)));
        deadline.arm(Armed::Never);
        assert!(!deadline.expired());
        stop.store(true, Ordering::Relaxed);
        assert!(deadline.expired(), "stopping ends any wait");
    }
}
