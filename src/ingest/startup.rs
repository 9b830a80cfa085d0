//! The start of a passed-through source (an RTSP session, a publication): samples
//! before the first keyframe dropped, the first GOP held until the second keyframe shows
//! how long a GOP is (passthrough segments follow it) and what the frame rate and bit
//! rates are.

use std::time::Duration;

use crate::cmaf::{Sample, Timescale, VIDEO_TRACK_ID};

/// The first GOP, held until the second keyframe shows how long a GOP is.
#[derive(Default)]
pub(crate) struct Startup {
    samples: Vec<Sample>,
    first_key: Option<u64>,
    video_times: Vec<u64>,
}

/// What [`Startup`] learnt.
pub(crate) struct Ready {
    pub(crate) samples: Vec<Sample>,
    pub(crate) gop: Duration,
    /// Median interval between video frames, 90 kHz ticks.
    pub(crate) frame_ticks: u32,
}

impl Ready {
    /// A track's bit rate over the first GOP (the last sample, the second keyframe, is
    /// not part of it).
    pub(crate) fn bits_per_second(&self, track_id: u32) -> u32 {
        let bytes: usize = self.samples[..self.samples.len().saturating_sub(1)]
            .iter()
            .filter(|s| s.track_id == track_id)
            .map(|s| s.data.len())
            .sum();
        let secs = self.gop.as_secs_f64().max(0.001);
        (bytes as f64 * 8.0 / secs) as u32
    }
}

impl Startup {
    /// How much video the first GOP holds so far.
    pub(crate) fn held(&self) -> Duration {
        match (self.video_times.first(), self.video_times.last()) {
            (Some(first), Some(last)) => {
                Timescale::VIDEO_90K.to_duration(last.saturating_sub(*first))
            }
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn push(&mut self, sample: Sample) -> Option<Ready> {
        let video = sample.track_id == VIDEO_TRACK_ID;
        match self.first_key {
            // Nothing before the first keyframe can be decoded (audio is dropped too, so
            // the stream starts with both tracks together).
            None if !(video && sample.keyframe) => return None,
            None => self.first_key = Some(sample.decode_ticks),
            Some(first) if video && sample.keyframe => {
                let gop =
                    Timescale::VIDEO_90K.to_duration(sample.decode_ticks.saturating_sub(first));
                let mut deltas: Vec<u64> = self
                    .video_times
                    .windows(2)
                    .map(|w| w[1].saturating_sub(w[0]))
                    .collect();
                deltas.sort_unstable();
                let frame_ticks = deltas.get(deltas.len() / 2).copied().unwrap_or(3000);
                let mut samples = std::mem::take(&mut self.samples);
                samples.push(sample);
                return Some(Ready {
                    samples,
                    gop,
                    frame_ticks: u32::try_from(frame_ticks).unwrap_or(3000),
                });
            }
            Some(_) => {}
        }
        if video {
            self.video_times.push(sample.decode_ticks);
        }
        self.samples.push(sample);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::cmaf::AUDIO_TRACK_ID;

    #[test]
    fn startup_waits_for_the_second_keyframe() {
        let sample = |track_id, at, keyframe| Sample {
            track_id,
            decode_ticks: at,
            composition_offset_ticks: 0,
            keyframe,
            data: Bytes::from_static(b"x"),
            captured_at: SystemTime::UNIX_EPOCH,
        };
        let mut start = Startup::default();
        // Before the first keyframe: dropped.
        assert!(start.push(sample(VIDEO_TRACK_ID, 0, false)).is_none());
        assert!(start.push(sample(AUDIO_TRACK_ID, 10, true)).is_none());
        for i in 1..=30u64 {
            assert!(
                start
                    .push(sample(VIDEO_TRACK_ID, i * 3000, i == 1))
                    .is_none()
            );
        }
        let ready = start
            .push(sample(VIDEO_TRACK_ID, 31 * 3000, true))
            .expect("second keyframe");
        assert_eq!(ready.gop, Duration::from_secs(1));
        assert_eq!(ready.frame_ticks, 3000);
        assert_eq!(ready.samples.len(), 31);
        assert!(ready.samples[0].keyframe);
        // 30 one-byte frames in one second.
        assert_eq!(ready.bits_per_second(VIDEO_TRACK_ID), 240);
    }
}
