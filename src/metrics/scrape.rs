//! What is read at each scrape rather than counted: each source's state, restarts,
//! bytes in and jitter buffer; what went into each rendition (bytes, frames, the
//! encoder's queue); the store; and the viewers estimate. Reads stream handles and the
//! store only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::{PublisherLabels, RenditionLabels, StateLabels, StreamLabels};
use crate::ingest::jitter::JitterFill;
use crate::store::Store;
use crate::stream::{SourceState, StreamHandle, StreamRegistry, StreamStatus};

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

/// One count of a jitter buffer's fill.
type FillCount = fn(&JitterFill) -> usize;

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams = self.streams.all();
        let mut statuses: Vec<_> = streams.values().map(|s| (s.name(), s.status())).collect();
        statuses.sort_by(|a, b| a.0.cmp(b.0));
        let states = statuses.iter().flat_map(|(name, status)| {
            SourceState::ALL.into_iter().map(move |state| {
                let labels = StateLabels {
                    stream: name.to_string(),
                    state: state.as_str(),
                };
                (labels, ConstGauge::new(i64::from(status.state == state)))
            })
        });
        family(
            &mut encoder,
            "source_state",
            "1 for the state each stream's source is in",
            None,
            MetricType::Gauge,
            states,
        )?;
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
            let rows = statuses
                .iter()
                .map(|(stream, status)| (stream_labels(stream), ConstCounter::new(value(status))));
            family(&mut encoder, name, help, None, MetricType::Counter, rows)?;
        }
        let mut handles: Vec<_> = streams.values().collect();
        handles.sort_by(|a, b| a.name().cmp(b.name()));
        let rows = handles.iter().map(|stream| {
            let bytes = stream.counters().source_bytes();
            (stream_labels(stream.name()), ConstCounter::new(bytes))
        });
        family(
            &mut encoder,
            "source",
            "Encoded media bytes each stream's source delivered (network sources; none for a test pattern or a file)",
            Some(&Unit::Bytes),
            MetricType::Counter,
            rows,
        )?;
        // Who publishes each stream encoders push to (its bytes are `source` above).
        let publishers = statuses.iter().filter_map(|(stream, status)| {
            let publisher = status.publisher.as_ref()?;
            let labels = PublisherLabels {
                stream: stream.to_string(),
                protocol: publisher.protocol,
            };
            Some((labels, ConstGauge::new(1i64)))
        });
        family(
            &mut encoder,
            "publisher_connected",
            "1 for each stream an encoder publishes now, by protocol",
            None,
            MetricType::Gauge,
            publishers,
        )?;
        encode_jitter(&mut encoder, &statuses)?;
        encode_renditions(&mut encoder, &handles)?;
        self.encode_store(&mut encoder)?;
        self.encode_viewers(&mut encoder)
    }
}

fn stream_labels(stream: &str) -> StreamLabels {
    StreamLabels {
        stream: stream.to_string(),
    }
}

/// One family: its descriptor, then a sample per row.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (impl EncodeLabelSet, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, metric) in rows {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The gauge of a count.
fn gauge(value: impl TryInto<i64>) -> ConstGauge<i64> {
    ConstGauge::new(value.try_into().unwrap_or(i64::MAX))
}

/// The jitter buffers of the streams that have one (RTSP sources).
fn encode_jitter(
    encoder: &mut DescriptorEncoder,
    statuses: &[(&str, StreamStatus)],
) -> Result<(), std::fmt::Error> {
    let buffers: Vec<_> = statuses
        .iter()
        .filter_map(|(stream, status)| Some((stream_labels(stream), status.jitter_buffer?)))
        .collect();
    let gauges: [(&str, &str, FillCount); 3] = [
        (
            "jitter_buffer_samples",
            "Samples in each stream's jitter buffer now",
            |fill| fill.queued,
        ),
        (
            "jitter_buffer_capacity_samples",
            "Most samples each stream's jitter buffer holds",
            |fill| fill.capacity,
        ),
        (
            "jitter_buffer_high_water_samples",
            "Most samples each stream's jitter buffer has held at once",
            |fill| fill.high_water,
        ),
    ];
    for (name, help, value) in gauges {
        let rows = buffers
            .iter()
            .map(|(l, fill)| (l.clone(), gauge(value(fill))));
        family(encoder, name, help, None, MetricType::Gauge, rows)?;
    }
    let rows = buffers
        .iter()
        .map(|(l, fill)| (l.clone(), ConstCounter::new(fill.dropped_gops)));
    family(
        encoder,
        "jitter_buffer_dropped_gops",
        "Whole GOPs each stream's jitter buffer dropped because it was full",
        None,
        MetricType::Counter,
        rows,
    )
}

/// What went into each rendition: its bytes, its video frames, its encoder's queue.
fn encode_renditions(
    encoder: &mut DescriptorEncoder,
    streams: &[&Arc<StreamHandle>],
) -> Result<(), std::fmt::Error> {
    let renditions = || {
        streams.iter().flat_map(|stream| {
            stream.renditions().iter().map(|rendition| {
                let labels = RenditionLabels {
                    stream: stream.name().to_string(),
                    rendition: rendition.id().to_string(),
                };
                (labels, rendition.counters())
            })
        })
    };
    family(
        encoder,
        "rendition_media",
        "Bytes of the samples each rendition's segmenter took: its bitrate in",
        Some(&Unit::Bytes),
        MetricType::Counter,
        renditions().map(|(l, c)| (l, ConstCounter::new(c.media_bytes()))),
    )?;
    family(
        encoder,
        "rendition_video_frames",
        "Video frames each rendition took, encoded or passed through (its rate: frames per second)",
        None,
        MetricType::Counter,
        renditions().map(|(l, c)| (l, ConstCounter::new(c.video_frames()))),
    )?;
    family(
        encoder,
        "encoder_queued_frames",
        "Frames each rendition's video encoder holds now (0 when it passes the source through)",
        None,
        MetricType::Gauge,
        renditions().map(|(l, c)| (l, gauge(c.encoder_queue()))),
    )
}

impl Scraped {
    fn encode_store(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.store.stats();
        for (name, help, unit, value) in [
            ("store", "Media bytes held", Some(&Unit::Bytes), stats.bytes),
            ("store_entries", "Media entries held", None, stats.entries),
        ] {
            gauge(value).encode(encoder.encode_descriptor(
                name,
                help,
                unit,
                MetricType::Gauge,
            )?)?;
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
            let value = ConstCounter::new(value);
            value.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
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
        let mut viewers = encoder.encode_descriptor(
            "viewers",
            "Connections that fetched media of each rendition within two target durations (behind a CDN: its nodes, not its viewers)",
            None,
            MetricType::Gauge,
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
            gauge(connections).encode(viewers.encode_family(&labels)?)?;
        }
        seen.retain(|_, connections| !connections.is_empty());
        Ok(())
    }
}
