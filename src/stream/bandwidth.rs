//! What the multivariant playlist tells players each rendition needs: BANDWIDTH (the peak
//! segment bit rate) and AVERAGE-BANDWIDTH (RFC 8216bis 4.4.6.2), measured from the
//! segments the rendition made once it has made some, the configured estimate before.
//! Players choose renditions by them, so a guess that is far off sends them to one the
//! network cannot carry, or keeps them below one it can.
//!
//! Sans-IO: byte counts and durations in, playlist text out; it never sees a socket or
//! the store.

use std::collections::VecDeque;
use std::time::Duration;

use crate::cmaf::TrackInfo;
use crate::llhls::{Variant, render_multivariant};

/// Segments the measurement looks back over: about the live window.
const MEASURED_SEGMENTS: usize = 12;

/// A change smaller than this (a tenth) leaves the advertised figures as they are, so
/// that the multivariant playlist does not change with every segment; but a higher peak
/// is always advertised.
const CHANGE_THRESHOLD_PERCENT: u64 = 10;

/// A rendition's measured bit rates, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Measured {
    /// The highest segment bit rate.
    pub(super) peak_bps: u64,
    /// All the segments' bits over all their time.
    pub(super) average_bps: u64,
}

/// The sizes and durations of one rendition's recent segments.
#[derive(Debug, Default)]
pub(super) struct SegmentRates {
    recent: VecDeque<(u64, Duration)>,
}

impl SegmentRates {
    /// A complete segment of `bytes` lasting `duration`.
    pub(super) fn push(&mut self, bytes: usize, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        if self.recent.len() == MEASURED_SEGMENTS {
            self.recent.pop_front();
        }
        self.recent.push_back((bytes as u64 * 8, duration));
    }

    /// The measured rates, once a segment is complete.
    pub(super) fn measured(&self) -> Option<Measured> {
        let rate = |bits: u64, duration: Duration| {
            u64::try_from(u128::from(bits) * 1_000_000 / duration.as_micros().max(1))
                .unwrap_or(u64::MAX)
        };
        let peak_bps = self.recent.iter().map(|&(b, d)| rate(b, d)).max()?;
        let bits = self.recent.iter().map(|&(b, _)| b).sum();
        let time = self.recent.iter().map(|&(_, d)| d).sum();
        Some(Measured {
            peak_bps,
            average_bps: rate(bits, time),
        })
    }
}

/// The multivariant playlist of a stream's renditions as advertised now.
#[derive(Debug)]
pub(super) struct Advertised {
    renditions: Vec<(String, Vec<TrackInfo>)>,
    fps: Option<(u32, u32)>,
    shown: Vec<Option<Measured>>,
}

impl Advertised {
    /// The renditions (id and tracks, in order) of a newly opened source, advertised
    /// with their configured estimates.
    pub(super) fn new(renditions: Vec<(String, Vec<TrackInfo>)>, fps: Option<(u32, u32)>) -> Self {
        let shown = vec![None; renditions.len()];
        Self {
            renditions,
            fps,
            shown,
        }
    }

    /// Takes each rendition's measurement (in order); true when one moved by more than
    /// a tenth from what is advertised (or was not advertised yet), and the playlist
    /// must be rendered again.
    pub(super) fn update(&mut self, measured: &[Option<Measured>]) -> bool {
        let moved = |old: u64, new: u64| old.abs_diff(new) * 100 > old * CHANGE_THRESHOLD_PERCENT;
        let mut changed = false;
        for (shown, new) in self.shown.iter_mut().zip(measured) {
            let Some(new) = new else { continue };
            // BANDWIDTH is a peak: never left below a segment's rate, however close.
            let differs = match shown {
                None => true,
                Some(old) => {
                    new.peak_bps > old.peak_bps
                        || moved(old.peak_bps, new.peak_bps)
                        || moved(old.average_bps, new.average_bps)
                }
            };
            if differs {
                *shown = Some(*new);
                changed = true;
            }
        }
        changed
    }

    /// The multivariant playlist. Before a rendition has a measurement: BANDWIDTH is the
    /// configured peak (VBV max rate) plus audio, with 10 % for the container (for
    /// passthrough, the first GOP's rate), AVERAGE-BANDWIDTH the configured rate.
    pub(super) fn render(&self) -> String {
        let variants: Vec<Variant> = self
            .renditions
            .iter()
            .zip(&self.shown)
            .map(|((id, tracks), shown)| {
                let configured: u64 = tracks.iter().map(|t| u64::from(t.average_bitrate)).sum();
                let (bandwidth, average) = match shown {
                    Some(m) => (m.peak_bps, m.average_bps),
                    None => (configured * 11 / 10, configured),
                };
                Variant {
                    uri: format!("{id}.m3u8"),
                    bandwidth,
                    average_bandwidth: Some(average),
                    codecs: crate::cmaf::codecs(tracks),
                    resolution: crate::cmaf::resolution(tracks),
                    frame_rate: self.fps.map(|(n, d)| f64::from(n) / f64::from(d.max(1))),
                }
            })
            .collect();
        render_multivariant(&variants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_measured_over_the_recent_segments() {
        let mut rates = SegmentRates::default();
        assert_eq!(rates.measured(), None, "no segment yet");
        rates.push(250_000, Duration::from_secs(1)); // 2 Mbit/s
        rates.push(125_000, Duration::from_millis(500)); // 2 Mbit/s
        rates.push(500_000, Duration::from_secs(1)); // 4 Mbit/s
        let m = rates.measured().expect("measured");
        assert_eq!(m.peak_bps, 4_000_000);
        assert_eq!(m.average_bps, 875_000 * 8 * 10 / 25);
        for _ in 0..MEASURED_SEGMENTS {
            rates.push(100_000, Duration::from_secs(1));
        }
        let m = rates.measured().expect("measured");
        assert_eq!(
            m.peak_bps, 800_000,
            "the 4 Mbit/s segment has left the window"
        );
        assert_eq!(m.average_bps, 800_000);
    }

    #[test]
    fn the_advertised_figures_change_only_by_more_than_a_tenth() {
        let mut advertised = Advertised::new(vec![("video".into(), Vec::new())], None);
        let at = |bps| {
            Some(Measured {
                peak_bps: bps,
                average_bps: bps,
            })
        };
        assert!(!advertised.update(&[None]), "nothing measured yet");
        assert!(advertised.update(&[at(1_000_000)]), "the first measurement");
        let lower = |bps| {
            Some(Measured {
                peak_bps: 1_000_000,
                average_bps: bps,
            })
        };
        assert!(!advertised.update(&[lower(910_000)]), "9 % lower");
        assert!(
            advertised.update(&[at(1_010_000)]),
            "a higher peak, however close"
        );
        assert!(advertised.update(&[at(1_200_000)]), "20 %");
        assert!(!advertised.update(&[at(1_100_000)]), "8 % lower");
        assert!(
            advertised
                .render()
                .contains("BANDWIDTH=1200000,AVERAGE-BANDWIDTH=1200000")
        );
    }
}
