//! `[cmaf]`: how an encoded stream is cut into parts and segments. Owned here, parsed by
//! the configuration; this file imports nothing outside `cmaf`.

use std::time::Duration;

use serde::Deserialize;

use super::{SegmenterConfig, TrackInfo};

/// Part and segment durations.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(default, deny_unknown_fields)]
pub struct CmafOptions {
    /// PART-TARGET in milliseconds. Default 200. The main latency knob: players hold back
    /// 3 parts (PART-HOLD-BACK), so latency is about 3× this plus delivery. Rounded down
    /// to whole frames.
    pub part_target_ms: u32,
    /// Segment target in milliseconds; a keyframe is forced at each. Default 1000. Sets
    /// how far back a player joining can start, and the GOP length.
    pub segment_target_ms: u32,
    /// Largest accepted sample in bytes; larger ones are dropped as corrupt. Default
    /// 8 MiB.
    pub max_sample_bytes: usize,
}

impl Default for CmafOptions {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_target_ms: 1000,
            max_sample_bytes: 8 << 20,
        }
    }
}

impl CmafOptions {
    /// PART-TARGET as a duration.
    pub fn part_target(&self) -> Duration {
        Duration::from_millis(u64::from(self.part_target_ms))
    }

    /// Segment target as a duration.
    pub fn segment_target(&self) -> Duration {
        Duration::from_millis(u64::from(self.segment_target_ms))
    }

    /// How the segmenter cuts `tracks` produced by Mirror's own encoder (which puts a
    /// keyframe exactly on every segment target).
    pub fn segmenter_config(&self, tracks: Vec<TrackInfo>) -> SegmenterConfig {
        SegmenterConfig {
            tracks,
            part_target: self.part_target(),
            segment_target: self.segment_target(),
            max_sample_bytes: self.max_sample_bytes,
            keyframes_on_segment_grid: true,
        }
    }

    /// Frames between keyframes at `fps_num / fps_den` frames per second (the source's
    /// rate, not always the test pattern's): one GOP per segment target, rounded to the
    /// nearest frame, at least one.
    pub fn keyframe_interval_frames(&self, fps_num: u32, fps_den: u32) -> u32 {
        let per_1000_s = u64::from(self.segment_target_ms) * u64::from(fps_num);
        let frames =
            (per_1000_s + 500 * u64::from(fps_den.max(1))) / (1000 * u64::from(fps_den.max(1)));
        u32::try_from(frames.max(1)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gop_per_segment_target_at_the_sources_rate() {
        let options = CmafOptions::default();
        assert_eq!(options.part_target(), Duration::from_millis(200));
        assert_eq!(options.keyframe_interval_frames(30, 1), 30);
        assert_eq!(options.keyframe_interval_frames(25, 1), 25);
        assert_eq!(options.keyframe_interval_frames(30_000, 1001), 30);
    }
}
