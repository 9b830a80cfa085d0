//! The server's numbers for Prometheus (`/metrics`), and what `/healthz` and `/readyz`
//! answer. Owns the registry: the counters the front ends move as they serve
//! ([`HttpMetrics`], [`QuicMetrics`]), what each rendition publishes (counted by a
//! task watching its snapshots, so the media thread carries no metrics code), and what
//! is read at each scrape (sources' status, the counters the media thread keeps in
//! plain atomics, the store, viewers).
//!
//! prometheus-client (the Prometheus project's own Rust client) rather than the
//! `metrics` facade: a registry is a value, not a process-wide recorder, so every server
//! in a test process has its own; and it writes both the Prometheus text format
//! (which `promtool check metrics` lints) and OpenMetrics.
//!
//! Reads streams and the store; never imports the HTTP layer, which imports it.

mod publish;
mod scrape;

use publish::{PublishMetrics, PublishedParts};
use scrape::{Scraped, Viewers};

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;
use crate::stream::{StreamHandle, StreamRegistry};

/// The HTTP version a request came over.
pub type Protocol = &'static str;

/// The kind of resource a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// A multivariant playlist.
    Multivariant,
    /// A media playlist asked for plainly.
    Playlist,
    /// A media playlist with `_HLS_msn` (a blocking reload).
    BlockingPlaylist,
    /// An init segment.
    Init,
    /// A part.
    Part,
    /// A segment.
    Segment,
    /// Anything else: the page, `/streams`, `/metrics`, names that do not exist.
    Other,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Multivariant => "multivariant",
            Route::Playlist => "playlist",
            Route::BlockingPlaylist => "blocking_playlist",
            Route::Init => "init",
            Route::Part => "part",
            Route::Segment => "segment",
            Route::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    protocol: Protocol,
    route: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RenditionLabels {
    stream: String,
    rendition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    stream: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PublisherLabels {
    stream: String,
    protocol: &'static str,
}

/// "2xx", "4xx"...: the status class, the label Prometheus users aggregate by.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Buckets of a latency in seconds, from 1 ms to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ]
    .into_iter()
}

/// What the front ends count as they serve.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    response_bytes: Family<ProtocolLabels, Counter>,
    connections: Family<ProtocolLabels, Gauge>,
    held: Gauge,
    wake_up: Family<ProtocolLabels, Histogram, fn() -> Histogram>,
    denied: Family<ReasonLabels, Counter>,
}

impl HttpMetrics {
    /// One response of `status` to a request for `route` over `protocol`.
    pub fn request(&self, protocol: Protocol, route: Route, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                route: route.as_str(),
                status: status_class(status),
            })
            .inc();
    }

    /// The counter of response body bytes handed to `protocol`'s transport.
    pub fn response_bytes(&self, protocol: Protocol) -> Counter {
        self.response_bytes
            .get_or_create_owned(&ProtocolLabels { protocol })
    }

    /// A request refused by a stream's access policy, for `reason`.
    pub fn denied(&self, reason: &'static str) {
        self.denied.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One more open connection of `protocol` until the guard is dropped.
    pub fn connection(&self, protocol: Protocol) -> GaugeGuard {
        GaugeGuard::new(
            self.connections
                .get_or_create_owned(&ProtocolLabels { protocol }),
        )
    }

    /// One more request held for the live edge until the guard is dropped.
    pub fn held(&self) -> GaugeGuard {
        GaugeGuard::new(self.held.clone())
    }

    /// A held request over `protocol` answered `waited` after the playlist it waited
    /// for was published.
    pub fn woke(&self, protocol: Protocol, waited: Duration) {
        self.wake_up
            .get_or_create(&ProtocolLabels { protocol })
            .observe(waited.as_secs_f64());
    }
}

/// Adds one to a gauge for its lifetime.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the QUIC listener counts.
#[derive(Debug, Clone)]
pub struct QuicMetrics {
    /// Handshakes completed.
    pub handshakes: Counter,
    /// Retry packets sent (address validation).
    pub retries: Counter,
    /// Connections refused before or after their handshake.
    pub refused: Counter,
    lost_packets: Counter,
    rtt: Histogram,
}

impl QuicMetrics {
    /// A connection ended: its lost packets and its last RTT estimate.
    pub fn ended(&self, stats: &quinn::ConnectionStats) {
        self.lost_packets.inc_by(stats.path.lost_packets);
        self.rtt.observe(stats.path.rtt.as_secs_f64());
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    registry: Registry,
    /// Moved by both TCP and QUIC front ends.
    pub http: HttpMetrics,
    /// Moved by the QUIC listener.
    pub quic: QuicMetrics,
    publish: PublishMetrics,
    viewers: Arc<Viewers>,
    streams: Arc<StreamRegistry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry for `streams` served from `store`.
    pub fn new(streams: &Arc<StreamRegistry>, store: &Store) -> Self {
        let mut registry = Registry::with_prefix("mirror");
        let http = HttpMetrics {
            requests: Family::default(),
            response_bytes: Family::default(),
            connections: Family::default(),
            held: Gauge::default(),
            wake_up: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            denied: Family::default(),
        };
        registry.register(
            "access_denied",
            "Requests a stream's access policy refused, by reason (token_missing, token_expired, token_bad_signature, token_wrong_stream, cdn_only…)",
            http.denied.clone(),
        );
        registry.register(
            "http_requests",
            "Responses by protocol (h3, h2, h1), route and status class",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes handed to the transport",
            Unit::Bytes,
            http.response_bytes.clone(),
        );
        registry.register(
            "http_open_connections",
            "Connections open now",
            http.connections.clone(),
        );
        registry.register(
            "http_held_requests",
            "Requests held for the live edge now (blocking reloads, hinted parts, segments in production)",
            http.held.clone(),
        );
        registry.register_with_unit(
            "http_wake_up",
            "From a playlist's publication to the answer of a request held for it",
            Unit::Seconds,
            http.wake_up.clone(),
        );
        let quic = QuicMetrics {
            handshakes: Counter::default(),
            retries: Counter::default(),
            refused: Counter::default(),
            lost_packets: Counter::default(),
            rtt: Histogram::new(latency_buckets()),
        };
        registry.register(
            "quic_handshakes",
            "QUIC handshakes completed",
            quic.handshakes.clone(),
        );
        registry.register(
            "quic_retries",
            "QUIC Retry packets sent",
            quic.retries.clone(),
        );
        registry.register(
            "quic_refused_connections",
            "QUIC connections refused (limits, cut-off addresses)",
            quic.refused.clone(),
        );
        registry.register(
            "quic_lost_packets",
            "Packets lost on QUIC connections that have ended",
            quic.lost_packets.clone(),
        );
        registry.register_with_unit(
            "quic_rtt",
            "Smoothed RTT of QUIC connections when they end",
            Unit::Seconds,
            quic.rtt.clone(),
        );
        let publish = PublishMetrics {
            parts: Family::default(),
            segments: Family::default(),
            part_duration: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0])
            }),
            // Negative: listed before the part's media end, which is its last frame's
            // capture plus that frame's duration.
            announce_delay: Family::new_with_constructor(|| {
                Histogram::new([
                    -0.04, -0.03, -0.02, -0.01, 0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ])
            }),
        };
        registry.register("parts", "Parts published", publish.parts.clone());
        registry.register("segments", "Segments completed", publish.segments.clone());
        registry.register_with_unit(
            "part_duration",
            "Durations of the parts published",
            Unit::Seconds,
            publish.part_duration.clone(),
        );
        registry.register_with_unit(
            "part_announce_delay",
            "From a part's media end to the publication of the playlist that lists it",
            Unit::Seconds,
            publish.announce_delay.clone(),
        );
        let viewers = Arc::new(Viewers::default());
        registry.register_collector(Box::new(Scraped {
            streams: streams.clone(),
            store: store.clone(),
            viewers: viewers.clone(),
        }));
        Self {
            registry,
            http,
            quic,
            publish,
            viewers,
            streams: streams.clone(),
        }
    }

    /// A registry of no stream and an empty store (tests of one part of the server).
    pub fn unregistered() -> Self {
        Self::new(
            &StreamRegistry::new([]),
            &Store::new(0, Duration::from_secs(1)),
        )
    }

    /// Watches every rendition of `streams` and counts what it publishes; the tasks
    /// end with their streams.
    pub fn watch(&self, streams: &StreamRegistry) {
        for stream in streams.all().values() {
            self.watch_stream(stream);
        }
    }

    /// Watches every rendition of `stream` (one added while serving, say).
    pub fn watch_stream(&self, stream: &StreamHandle) {
        {
            for rendition in stream.renditions() {
                let labels = RenditionLabels {
                    stream: stream.name().to_string(),
                    rendition: rendition.id().to_string(),
                };
                let publish = self.publish.clone();
                let streams = self.streams.clone();
                let mut snapshots = rendition.subscribe();
                tokio::spawn(async move {
                    let mut last = PublishedParts::of(&snapshots.borrow_and_update());
                    while snapshots.changed().await.is_ok() {
                        let snapshot = snapshots.borrow_and_update().clone();
                        let now = PublishedParts::of(&snapshot);
                        publish.count(&labels, &last, &now, snapshot.updated_at);
                        last = now;
                    }
                    // The stream has stopped. Taken out of service (not replaced under
                    // its name): its series go, instead of being reported for ever.
                    if streams.get(&labels.stream).is_none() {
                        publish.forget(&labels);
                    }
                });
            }
        }
    }

    /// A connection (by its id) fetched media of `rendition` of `stream`.
    pub fn viewer(&self, stream: &str, rendition: &str, connection: u64) {
        let mut seen = self
            .viewers
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Called per part fetched: a scan of the few renditions, no allocation, unless
        // this is the rendition's first viewer.
        let listed = seen
            .iter_mut()
            .find(|((s, r), _)| s == stream && r == rendition);
        match listed {
            Some((_, connections)) => {
                connections.insert(connection, now);
            }
            None => {
                let key = (stream.to_string(), rendition.to_string());
                seen.insert(key, HashMap::from([(connection, now)]));
            }
        }
    }

    /// The Prometheus text format (0.0.4), or OpenMetrics when `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut text = String::with_capacity(16 << 10);
        // Writing to a String cannot fail.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        text
    }
}

/// `/readyz`: every stream has published a part within three target durations, else
/// the streams that have not.
pub fn not_ready(streams: &StreamRegistry) -> Vec<String> {
    let now = SystemTime::now();
    let mut late: Vec<String> = streams
        .all()
        .values()
        .filter(|stream| {
            let snapshot = stream.current();
            let since = now.duration_since(snapshot.updated_at).unwrap_or_default();
            !snapshot.has_media || since > snapshot.target_duration * 3
        })
        .map(|stream| stream.name().to_string())
        .collect();
    late.sort();
    late
}
