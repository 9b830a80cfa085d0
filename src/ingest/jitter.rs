//! The source jitter buffer: a small bounded queue between a network source's receiving
//! thread and the media thread, so that a burst of frames (a camera flushing its send
//! buffer, a TCP retransmission) is absorbed instead of stalling the receiver.
//!
//! When it is full, the oldest whole GOP is dropped: samples are discarded from the front
//! up to the next video keyframe. Dropping single frames would leave later frames
//! referencing pictures the decoder never saw; dropping from the front up to a keyframe
//! only ever removes the tail of a GOP, which nothing after it references.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cmaf::Sample;

/// What [`JitterBuffer::pop`] found.
#[derive(Debug)]
pub enum Popped {
    /// The next sample.
    Sample(Sample),
    /// Nothing arrived in time.
    TimedOut,
    /// The producer ended, with its reason.
    Closed(String),
}

/// How full the buffer is, for logs and the stream's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterFill {
    /// Samples queued now.
    pub queued: usize,
    /// Most samples it holds.
    pub capacity: usize,
    /// Most samples ever queued at once.
    pub high_water: usize,
    /// Whole GOPs dropped because the buffer was full.
    pub dropped_gops: u64,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Sample>,
    fill: JitterFill,
    closed: Option<String>,
}

/// See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    video_track_id: u32,
    state: Mutex<State>,
    ready: Condvar,
}

impl JitterBuffer {
    /// A buffer of at most `capacity` samples; keyframes of `video_track_id` are where
    /// GOPs start.
    pub fn new(capacity: usize, video_track_id: u32) -> Self {
        Self {
            video_track_id,
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                fill: JitterFill {
                    capacity: capacity.max(2),
                    ..JitterFill::default()
                },
                closed: None,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent queue: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `sample`. Returns the number of samples dropped to make room (the oldest
    /// GOP), 0 when there was room. Samples pushed after [`close`](Self::close) are
    /// discarded.
    pub fn push(&self, sample: Sample) -> usize {
        let mut state = self.lock();
        if state.closed.is_some() {
            return 0;
        }
        let mut dropped = 0;
        if state.queue.len() >= state.fill.capacity {
            // Drop from the front up to (not including) the next video keyframe after the
            // first sample; if there is none, everything queued goes.
            let video = self.video_track_id;
            let cut = state
                .queue
                .iter()
                .skip(1)
                .position(|s| s.track_id == video && s.keyframe)
                .map_or(state.queue.len(), |i| i + 1);
            state.queue.drain(..cut);
            state.fill.dropped_gops += 1;
            dropped = cut;
        }
        state.queue.push_back(sample);
        state.fill.queued = state.queue.len();
        state.fill.high_water = state.fill.high_water.max(state.queue.len());
        drop(state);
        self.ready.notify_one();
        dropped
    }

    /// Ends the buffer: the consumer gets what is queued, then `reason`.
    pub fn close(&self, reason: String) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Whether [`close`](Self::close) was called (the producer should stop).
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// The oldest sample, waiting up to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Popped {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(sample) = state.queue.pop_front() {
                state.fill.queued = state.queue.len();
                return Popped::Sample(sample);
            }
            if let Some(reason) = &state.closed {
                return Popped::Closed(reason.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Popped::TimedOut;
            }
            state = self
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How full it is.
    pub fn fill(&self) -> JitterFill {
        self.lock().fill
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn sample(track_id: u32, at: u64, keyframe: bool) -> Sample {
        Sample {
            track_id,
            decode_ticks: at,
            composition_offset_ticks: 0,
            keyframe,
            data: bytes::Bytes::from_static(b"x"),
            captured_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn drain(buffer: &JitterBuffer) -> Vec<u64> {
        let mut out = Vec::new();
        while let Popped::Sample(s) = buffer.pop(Duration::ZERO) {
            out.push(s.decode_ticks);
        }
        out
    }

    #[test]
    fn overflow_drops_the_oldest_gop_whole() {
        let buffer = JitterBuffer::new(6, 1);
        // GOP at 0 (key, 1, audio 2), GOP at 3 (key, 4), then 5.
        for (track, at, key) in [(1, 0, true), (1, 1, false), (2, 2, true)] {
            assert_eq!(buffer.push(sample(track, at, key)), 0);
        }
        for (track, at, key) in [(1, 3, true), (1, 4, false), (1, 5, false)] {
            assert_eq!(buffer.push(sample(track, at, key)), 0);
        }
        // Full: the next push drops 0, 1 and the audio sample 2, up to keyframe 3.
        assert_eq!(buffer.push(sample(1, 6, false)), 3);
        let fill = buffer.fill();
        assert_eq!((fill.queued, fill.dropped_gops, fill.high_water), (4, 1, 6));
        assert_eq!(drain(&buffer), vec![3, 4, 5, 6]);
    }

    #[test]
    fn overflow_without_a_later_keyframe_empties_the_queue() {
        let buffer = JitterBuffer::new(3, 1);
        for at in 0..3 {
            buffer.push(sample(1, at, at == 0));
        }
        assert_eq!(buffer.push(sample(1, 3, false)), 3);
        assert_eq!(drain(&buffer), vec![3]);
    }

    #[test]
    fn pop_times_out_then_reports_close_after_the_queue() {
        let buffer = JitterBuffer::new(4, 1);
        assert!(matches!(
            buffer.pop(Duration::from_millis(10)),
            Popped::TimedOut
        ));
        buffer.push(sample(1, 0, true));
        buffer.close("peer went away".into());
        buffer.push(sample(1, 1, false));
        assert!(matches!(buffer.pop(Duration::ZERO), Popped::Sample(_)));
        assert!(matches!(buffer.pop(Duration::ZERO), Popped::Closed(r) if r == "peer went away"));
    }
}
