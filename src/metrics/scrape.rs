//! What is read at each scrape rather than counted: each source's state and restarts,
//! the store, and the viewers estimate. Reads stream handles and the store only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::{RenditionLabels, StateLabels, StreamLabels};
use crate::store::Store;
use crate::stream::{SourceState, StreamRegistry, StreamStatus};

/// Distinct connections that fetched media of a rendition lately: the viewers, as far
/// as a server without cookies can tell.
#[derive(Debug, Default)]
pub(super) struct Viewers {
    pub(super) seen: Mutex<HashMap<(String, String), HashMap<u64, Instant>>>,
}

/// How long after its last media request a connection still counts as a viewer, in
/// target durations: a player fetches a part every PART-TARGET, a segment every TD.
const VIEWER_TARGET_DURATIONS: u32 = 2;

/// What is read at each scrape rather than counted.
#[derive(Debug)]
pub(super) struct Scraped {
    pub(super) streams: Arc<StreamRegistry>,
    pub(super) store: Store,
    pub(super) viewers: Arc<Viewers>,
}

/// One count of a stream's status.
type StatusCount = fn(&StreamStatus) -> u64;

const STATES: [(SourceState, &str); 5] = [
    (SourceState::Starting, "starting"),
    (SourceState::Opening, "opening"),
    (SourceState::Waiting, "waiting"),
    (SourceState::Live, "live"),
    (SourceState::Retrying, "retrying"),
];

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams = self.streams.all();
        let mut statuses: Vec<_> = streams.values().map(|s| (s.name(), s.status())).collect();
        statuses.sort_by(|a, b| a.0.cmp(b.0));
        let gauge = ConstGauge::new(0i64);
        let mut states = encoder.encode_descriptor(
            "source_state",
            "1 for the state each stream's source is in",
            None,
            gauge.metric_type(),
        )?;
        for (name, status) in &statuses {
            for (state, label) in STATES {
                let labels = StateLabels {
                    stream: name.to_string(),
                    state: label,
                };
                ConstGauge::new(i64::from(status.state == state))
                    .encode(states.encode_family(&labels)?)?;
            }
        }
        let counter = ConstCounter::new(0u64);
        let per_stream: [(&str, &str, StatusCount); 2] = [
            (
                "source_restarts",
                "Times each stream's source was restarted",
                |status| status.restarts,
            ),
            (
                "media_panics",
                "Restarts of each stream that followed a panic on its media path",
                |status| status.panics,
            ),
        ];
        for (name, help, value) in per_stream {
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (stream, status) in &statuses {
                let labels = StreamLabels {
                    stream: stream.to_string(),
                };
                ConstCounter::new(value(status)).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_store(&mut encoder)?;
        self.encode_viewers(&mut encoder)
    }
}

impl Scraped {
    fn encode_store(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.store.stats();
        let gauge = ConstGauge::new(0i64);
        let counter = ConstCounter::new(0u64);
        for (name, help, unit, value) in [
            ("store", "Media bytes held", Some(&Unit::Bytes), stats.bytes),
            ("store_entries", "Media entries held", None, stats.entries),
        ] {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)?;
        }
        for (name, help, value) in [
            ("store_hits", "Lookups that found their media", stats.hits),
            ("store_misses", "Lookups that did not", stats.misses),
            (
                "store_evictions",
                "Entries evicted for room (not expired)",
                stats.evictions,
            ),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }

    fn encode_viewers(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let mut seen = self
            .viewers
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let streams = self.streams.all();
        let targets: HashMap<&str, Duration> = streams
            .values()
            .map(|s| (s.name(), s.current().target_duration))
            .collect();
        let gauge = ConstGauge::new(0i64);
        let mut viewers = encoder.encode_descriptor(
            "viewers",
            "Connections that fetched media of each rendition within two target durations (behind a CDN: its nodes, not its viewers)",
            None,
            gauge.metric_type(),
        )?;
        let mut renditions: Vec<_> = seen.keys().cloned().collect();
        renditions.sort();
        for key in renditions {
            let window = targets
                .get(key.0.as_str())
                .copied()
                .unwrap_or(Duration::from_secs(1))
                * VIEWER_TARGET_DURATIONS;
            let connections = seen.get_mut(&key).map_or(0, |connections| {
                connections.retain(|_, last| now.duration_since(*last) < window);
                connections.len()
            });
            let labels = RenditionLabels {
                stream: key.0.clone(),
                rendition: key.1.clone(),
            };
            ConstGauge::new(i64::try_from(connections).unwrap_or(i64::MAX))
                .encode(viewers.encode_family(&labels)?)?;
        }
        seen.retain(|_, connections| !connections.is_empty());
        Ok(())
    }
}
