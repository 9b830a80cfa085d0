//! What each rendition publishes, counted from its snapshots by a task watching them:
//! parts, segments, part durations and announce delays. Reads snapshots only.

use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::RenditionLabels;
use crate::stream::Snapshot;

/// Per rendition, what its published snapshots say; moved by [`Metrics::watch`].
#[derive(Debug, Clone)]
pub(super) struct PublishMetrics {
    pub(super) parts: Family<RenditionLabels, Counter>,
    pub(super) segments: Family<RenditionLabels, Counter>,
    pub(super) part_duration: Family<RenditionLabels, Histogram, fn() -> Histogram>,
    pub(super) announce_delay: Family<RenditionLabels, Histogram, fn() -> Histogram>,
}

/// Where one snapshot's live edge is: enough to count what was published between two.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PublishedParts {
    /// MSN of the oldest segment listed.
    pub(super) first_msn: u64,
    /// Part counts of the complete segments listed, oldest first.
    pub(super) complete: Vec<u32>,
    /// MSN of the segment in progress.
    pub(super) open_msn: u64,
    /// Parts listed of the segment in progress.
    pub(super) open_parts: u32,
    /// The newest part's duration and media end, if any is listed.
    pub(super) newest: Option<(Duration, SystemTime)>,
}

impl PublishedParts {
    pub(super) fn of(snapshot: &Snapshot) -> Self {
        let position = &snapshot.position;
        Self {
            first_msn: position.first_msn,
            complete: position.complete_part_counts.clone(),
            open_msn: position.open_msn,
            open_parts: position.open_parts,
            newest: snapshot.newest_part,
        }
    }

    /// Parts of complete segment `msn`, if still listed.
    fn parts_of(&self, msn: u64) -> Option<u32> {
        let index = usize::try_from(msn.checked_sub(self.first_msn)?).ok()?;
        self.complete.get(index).copied()
    }

    /// Parts and segments published since `before`: none after a restart lower down.
    fn since(&self, before: &Self) -> (u64, u64) {
        if self.open_msn < before.open_msn
            || (self.open_msn == before.open_msn && self.open_parts < before.open_parts)
        {
            return (0, 0);
        }
        if self.open_msn == before.open_msn {
            return (u64::from(self.open_parts - before.open_parts), 0);
        }
        // The rest of the segment that was open, every one completed since (each as many
        // parts as the playlist lists; one if it has left it), and the open one's so far.
        let mut parts = u64::from(
            self.parts_of(before.open_msn)
                .map_or(1, |n| n.saturating_sub(before.open_parts)),
        );
        for msn in before.open_msn + 1..self.open_msn {
            parts += u64::from(self.parts_of(msn).unwrap_or(1));
        }
        parts += u64::from(self.open_parts);
        (parts, self.open_msn - before.open_msn)
    }
}

impl PublishMetrics {
    /// Drops the series of a rendition no longer served.
    pub(super) fn forget(&self, labels: &RenditionLabels) {
        self.parts.remove(labels);
        self.segments.remove(labels);
        self.part_duration.remove(labels);
        self.announce_delay.remove(labels);
    }

    pub(super) fn count(
        &self,
        labels: &RenditionLabels,
        before: &PublishedParts,
        now: &PublishedParts,
        published_at: SystemTime,
    ) {
        let (parts, segments) = now.since(before);
        if segments > 0 {
            self.segments.get_or_create(labels).inc_by(segments);
        }
        if parts == 0 {
            return;
        }
        self.parts.get_or_create(labels).inc_by(parts);
        // The newest part only: a watcher that fell behind sees several at once.
        if let Some((duration, media_end)) = now.newest {
            self.part_duration
                .get_or_create(labels)
                .observe(duration.as_secs_f64());
            let delay = match published_at.duration_since(media_end) {
                Ok(after) => after.as_secs_f64(),
                Err(before) => -before.duration().as_secs_f64(),
            };
            self.announce_delay.get_or_create(labels).observe(delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(first_msn: u64, complete: &[u32], open_msn: u64, open_parts: u32) -> PublishedParts {
        PublishedParts {
            first_msn,
            complete: complete.to_vec(),
            open_msn,
            open_parts,
            newest: None,
        }
    }

    #[test]
    fn parts_are_counted_across_segment_ends() {
        // One more part of the open segment.
        assert_eq!(at(0, &[5], 1, 3).since(&at(0, &[5], 1, 2)), (1, 0));
        // The open segment ended with its fifth part.
        assert_eq!(at(0, &[5, 5], 2, 0).since(&at(0, &[5], 1, 4)), (1, 1));
        // A watcher that fell behind: the rest of segment 1 (2 of 5), all of segment 2
        // (4: it ended early), and 3 parts of segment 3.
        assert_eq!(at(0, &[5, 5, 4], 3, 3).since(&at(0, &[5], 1, 3)), (9, 2));
        // Segments that have left the window count one part each, not none: the rest
        // of 1, then 2, 3 and 4, then all 5 of segment 5.
        assert_eq!(at(5, &[5], 6, 0).since(&at(0, &[5], 1, 4)), (9, 5));
        // The source came back lower: nothing is counted.
        assert_eq!(at(0, &[], 0, 1).since(&at(0, &[5], 1, 4)), (0, 0));
        assert_eq!(at(0, &[5], 1, 1).since(&at(0, &[5], 1, 1)), (0, 0));
    }
}
