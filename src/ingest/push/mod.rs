//! Ingest that encoders push to: a stream whose source is `publish` waits for a
//! publisher presenting its key (RTMP: [`rtmp`]; WHIP from a browser: [`whip`]) or its
//! passphrase (SRT: [`srt`], the MPEG-TS inside read by [`ts`]). The listeners run on the server's runtime; the
//! stream's media thread opens a [`PushSource`] that waits, without an open timeout, for
//! a publisher to hand over its first GOP, then reads samples from a [`JitterBuffer`] as
//! it does an RTSP camera's (passthrough, the publisher's GOP making the segments).
//!
//! [`PushPoints`] is the meeting place: which stream each key opens (keys are held as
//! SHA-256 hashes and compared in constant time) or passphrase admits, whether one is
//! already being published, and the hand-over. A publisher that leaves closes its
//! buffer: the stream reopens, waits for the next one and marks the change with
//! EXT-X-DISCONTINUITY.
//!
//! This module owns the meeting place and the protocol-independent part of a
//! publication ([`publication`]); it knows nothing of playlists, HTTP or the pipeline.

pub mod flv;
mod publication;
pub mod rtmp;
mod settings;
pub mod srt;
pub mod ts;
pub mod whip;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::jitter::{JitterBuffer, JitterFill, Popped};
use super::{EncodedSource, ForeignAudio, IngestError};
use crate::cmaf::{Sample, TrackInfo};

pub use publication::{Publication, Unwrap};
pub use settings::{
    DEFAULT_RTMP_LISTEN, DEFAULT_SRT_LISTEN, PublisherClock, PushSettings, SecondPublisher,
};

/// The SHA-256 of a publish key: all the server keeps of it.
pub type KeyHash = [u8; 32];

/// The hash of publish key `key`.
pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Who is publishing a stream, for `/streams`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublisherInfo {
    /// `rtmp`, `srt` or `whip`.
    pub protocol: &'static str,
    /// The publisher's address.
    pub address: SocketAddr,
    /// When it started publishing, Unix milliseconds.
    pub since_unix_ms: u64,
    /// What it sends, bits per second of media over the last seconds (set by the
    /// stream, which counts what it takes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_bps: Option<u64>,
}

impl PublisherInfo {
    /// A publisher over `protocol` from `address`, starting now.
    pub fn new(protocol: &'static str, address: SocketAddr) -> Self {
        let since_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            protocol,
            address,
            since_unix_ms,
            bitrate_bps: None,
        }
    }
}

/// What a publisher hands the stream once its first GOP is in: the tracks, what the
/// first GOP showed, and the buffer the rest comes through.
pub struct Handoff {
    /// Video first, then audio, with the publisher's parameter sets.
    pub tracks: Vec<TrackInfo>,
    /// Sound the stream must make AAC of (a WebRTC publisher's Opus), not in `tracks`.
    pub foreign_audio: Option<ForeignAudio>,
    /// The publisher's keyframe interval.
    pub gop: Duration,
    /// Frames per second as a fraction, when known.
    pub frame_rate: Option<(u32, u32)>,
    /// Samples from the first keyframe on.
    pub buffer: Arc<JitterBuffer>,
    /// Who publishes.
    pub publisher: PublisherInfo,
}

/// Why a publisher is turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// No stream has this key. (The key is never repeated: it is a secret.)
    #[error("no stream has this publish key")]
    UnknownKey,
    /// Someone is publishing this stream already.
    #[error("stream {0} is being published already")]
    Busy(String),
}

#[derive(Default)]
struct Point {
    /// The RTMP key's hash (none: not published over RTMP).
    key: Option<KeyHash>,
    /// The SRT passphrase (none: not published over SRT). SRT derives its keys from
    /// it, so it is held as given.
    srt_passphrase: Option<String>,
    /// A publisher's first GOP, not yet taken by the stream.
    pending: Option<Handoff>,
    /// Who holds the stream now.
    publisher: Option<PublisherInfo>,
    /// Bumped when the stream is removed or its key changes: claims of an older
    /// generation are over.
    generation: u64,
}

/// Claim generations, unique in the process: a stream removed and added again never
/// gives a stale claim the generation of a current one.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// See the module docs.
#[derive(Default)]
pub struct PushPoints {
    points: Mutex<HashMap<String, Point>>,
    handed: Condvar,
    /// Whether an RTMP listener serves them (a stream with a key is pointless without).
    rtmp_listening: AtomicBool,
    /// Whether an SRT listener does (for a stream with a passphrase).
    srt_listening: AtomicBool,
    /// Whether WHIP does (for a stream with a key, beside RTMP).
    whip_listening: AtomicBool,
    second_publisher: SecondPublisher,
    publisher_clock: PublisherClock,
}

/// A protocol encoders push with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushProtocol {
    /// RTMP, admitted by a stream's key.
    Rtmp,
    /// SRT, admitted by a stream's passphrase.
    Srt,
    /// WHIP, admitted by a stream's key as its bearer token.
    Whip,
}

impl std::fmt::Debug for PushPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushPoints").finish_non_exhaustive()
    }
}

impl PushPoints {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Point>> {
        self.points.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Points where a second publisher of a stream gets `second_publisher`, and whose
    /// publishers' timestamps are `publisher_clock`.
    pub fn new(second_publisher: SecondPublisher, publisher_clock: PublisherClock) -> Self {
        Self {
            second_publisher,
            publisher_clock,
            ..Self::default()
        }
    }

    fn listening(&self, protocol: PushProtocol) -> &AtomicBool {
        match protocol {
            PushProtocol::Rtmp => &self.rtmp_listening,
            PushProtocol::Srt => &self.srt_listening,
            PushProtocol::Whip => &self.whip_listening,
        }
    }

    /// A listener of `protocol` serves these points from now on.
    pub fn set_listening(&self, protocol: PushProtocol) {
        self.listening(protocol).store(true, Ordering::Relaxed);
    }

    /// Whether a listener of `protocol` serves them.
    pub fn is_listening(&self, protocol: PushProtocol) -> bool {
        self.listening(protocol).load(Ordering::Relaxed)
    }

    /// Stream `stream` is published to over RTMP with the key hashed as `key` and over
    /// SRT with `srt_passphrase`; a publisher admitted with earlier credentials is ended.
    pub fn set(&self, stream: &str, key: Option<KeyHash>, srt_passphrase: Option<String>) {
        let mut points = self.lock();
        let point = points.entry(stream.to_string()).or_insert_with(|| Point {
            generation: next_generation(),
            ..Point::default()
        });
        if point.key != key || point.srt_passphrase != srt_passphrase {
            point.key = key;
            point.srt_passphrase = srt_passphrase;
            point.generation = next_generation();
            point.pending = None;
            point.publisher = None;
        }
    }

    /// Stream `stream` is gone: its publisher is ended.
    pub fn remove(&self, stream: &str) {
        self.lock().remove(stream);
        self.handed.notify_all();
    }

    /// The stream `key` publishes, claimed for `publisher`; refused when no stream has
    /// the key or someone publishes it already. Every stream's key is compared, in
    /// constant time, so the answer's timing says nothing of how close a guess was.
    pub fn claim(
        self: &Arc<Self>,
        key: &str,
        publisher: PublisherInfo,
    ) -> Result<Claim, PushRefusal> {
        let given = hash_key(key);
        let points = self.lock();
        let mut found = None;
        for (name, point) in points.iter() {
            if point.key.as_ref().is_some_and(|key| same_hash(&given, key)) {
                found = Some(name.clone());
            }
        }
        drop(points);
        self.claim_stream(&found.ok_or(PushRefusal::UnknownKey)?, publisher)
    }

    /// Stream `stream` claimed for `publisher` when `key` is its key (WHIP names the
    /// stream in its URL and carries the key as a bearer token); refused as
    /// [`claim`](Self::claim) refuses.
    pub fn claim_named(
        self: &Arc<Self>,
        stream: &str,
        key: &str,
        publisher: PublisherInfo,
    ) -> Result<Claim, PushRefusal> {
        if !self.admits(stream, key) {
            return Err(PushRefusal::UnknownKey);
        }
        self.claim_stream(stream, publisher)
    }

    /// Whether `key` is the key of `stream` (compared in constant time).
    pub fn admits(&self, stream: &str, key: &str) -> bool {
        let given = hash_key(key);
        self.lock()
            .get(stream)
            .and_then(|point| point.key.as_ref())
            .is_some_and(|key| same_hash(&given, key))
    }

    /// Stream `stream` claimed for `publisher` (already admitted by its protocol: SRT's
    /// passphrase); refused when someone publishes it already.
    pub fn claim_stream(
        self: &Arc<Self>,
        stream: &str,
        publisher: PublisherInfo,
    ) -> Result<Claim, PushRefusal> {
        let mut points = self.lock();
        let point = points.get_mut(stream).ok_or(PushRefusal::UnknownKey)?;
        if let Some(current) = &point.publisher {
            if self.second_publisher == SecondPublisher::Refuse {
                return Err(PushRefusal::Busy(stream.to_string()));
            }
            // The first publisher's claim is over: its connection ends at its next read.
            tracing::info!(
                stream,
                replaced = %current.address,
                by = %publisher.address,
                "a second publisher replaces the first"
            );
            point.generation = next_generation();
            point.pending = None;
        }
        point.publisher = Some(publisher.clone());
        Ok(Claim {
            points: self.clone(),
            generation: point.generation,
            stream: stream.to_string(),
            publisher,
        })
    }

    /// Whether a stream other than `stream` is published to with `key`.
    pub fn key_in_use(&self, key: &KeyHash, stream: &str) -> bool {
        self.lock()
            .iter()
            .any(|(name, point)| name != stream && point.key.as_ref() == Some(key))
    }

    /// The SRT passphrase of `stream`, when it is published over SRT.
    pub fn srt_passphrase(&self, stream: &str) -> Option<String> {
        self.lock()
            .get(stream)
            .and_then(|p| p.srt_passphrase.clone())
    }

    /// Waits until a publisher of `stream` hands over its first GOP, or `stop` is set.
    pub fn wait(&self, stream: &str, stop: &AtomicBool) -> Result<Handoff, IngestError> {
        let mut points = self.lock();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(IngestError::Network {
                    source_name: "publish".into(),
                    reason: "the stream stopped".into(),
                });
            }
            match points.get_mut(stream) {
                None => {
                    return Err(IngestError::Unsupported {
                        source_name: "publish".into(),
                        reason: format!("stream {stream} has no publish key"),
                    });
                }
                Some(point) => {
                    if let Some(handoff) = point.pending.take() {
                        return Ok(handoff);
                    }
                }
            }
            // Woken by a hand-over; the timeout is for `stop`.
            points = self
                .handed
                .wait_timeout(points, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Who publishes `stream` now, if anyone.
    pub fn publisher(&self, stream: &str) -> Option<PublisherInfo> {
        self.lock().get(stream).and_then(|p| p.publisher.clone())
    }
}

/// Whether two key hashes are equal, compared in constant time.
fn same_hash(a: &KeyHash, b: &KeyHash) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A publisher's hold on a stream, from an accepted key until it leaves (dropped).
pub struct Claim {
    points: Arc<PushPoints>,
    generation: u64,
    stream: String,
    publisher: PublisherInfo,
}

impl Claim {
    /// The stream published.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// What the publisher's timestamps are.
    pub fn publisher_clock(&self) -> PublisherClock {
        self.points.publisher_clock
    }

    /// Whether the stream still takes this publisher (not removed, key not changed).
    pub fn is_current(&self) -> bool {
        self.points
            .lock()
            .get(&self.stream)
            .is_some_and(|p| p.generation == self.generation && p.publisher.is_some())
    }

    /// Gives the stream the publisher's first GOP (replacing one it has not taken).
    fn hand_over(&self, handoff: Handoff) {
        let mut points = self.points.lock();
        if let Some(point) = points.get_mut(&self.stream)
            && point.generation == self.generation
        {
            point.pending = Some(handoff);
            self.points.handed.notify_all();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut points = self.points.lock();
        if let Some(point) = points.get_mut(&self.stream)
            && point.generation == self.generation
            && point.publisher.as_ref() == Some(&self.publisher)
        {
            point.publisher = None;
            point.pending = None;
        }
    }
}

/// A stream's side of a publication: samples from the publisher's buffer.
pub struct PushSource {
    handoff: Handoff,
}

impl PushSource {
    /// Waits (without limit but `stop`) for a publisher of `stream` in `points`.
    pub fn open(points: &PushPoints, stream: &str, stop: &AtomicBool) -> Result<Self, IngestError> {
        let handoff = points.wait(stream, stop)?;
        tracing::info!(
            stream,
            protocol = handoff.publisher.protocol,
            publisher = %handoff.publisher.address,
            codecs = %crate::cmaf::codecs(&handoff.tracks),
            gop_ms = handoff.gop.as_millis(),
            "publisher live"
        );
        Ok(Self { handoff })
    }

    fn name(&self) -> String {
        format!(
            "{} publisher {}",
            self.handoff.publisher.protocol, self.handoff.publisher.address
        )
    }
}

impl EncodedSource for PushSource {
    fn tracks(&self) -> &[TrackInfo] {
        &self.handoff.tracks
    }

    fn keyframe_interval(&self) -> Duration {
        self.handoff.gop
    }

    fn frame_rate(&self) -> Option<(u32, u32)> {
        self.handoff.frame_rate
    }

    fn next_sample(&mut self, timeout: Duration) -> Result<Sample, IngestError> {
        match self.handoff.buffer.pop(timeout) {
            Popped::Sample(sample) => Ok(sample),
            Popped::TimedOut => Err(IngestError::Stalled {
                source_name: self.name(),
                after: timeout,
            }),
            Popped::Closed(reason) => Err(IngestError::Network {
                source_name: self.name(),
                reason,
            }),
        }
    }

    fn buffer_fill(&self) -> Option<JitterFill> {
        Some(self.handoff.buffer.fill())
    }

    fn publisher(&self) -> Option<PublisherInfo> {
        Some(self.handoff.publisher.clone())
    }

    fn foreign_audio(&self) -> Option<ForeignAudio> {
        self.handoff.foreign_audio
    }
}

impl Drop for PushSource {
    fn drop(&mut self) {
        // The publication sees it and starts over at its next keyframe, for the
        // stream's next open.
        self.handoff
            .buffer
            .close("the stream closed its source".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher, the same value each call (its start is fixed, not now).
    fn publisher(port: u16) -> PublisherInfo {
        PublisherInfo {
            protocol: "rtmp",
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            since_unix_ms: 0,
            bitrate_bps: None,
        }
    }

    #[test]
    fn a_key_claims_its_stream_once_at_a_time() {
        let points = Arc::new(PushPoints::default());
        points.set("cam", Some(hash_key("key-of-cam-0123456")), None);
        points.set("other", Some(hash_key("key-of-other-0123")), None);
        assert_eq!(
            points.claim("nope", publisher(1)).err(),
            Some(PushRefusal::UnknownKey)
        );
        let claim = points
            .claim("key-of-cam-0123456", publisher(1))
            .expect("claims");
        assert_eq!(claim.stream(), "cam");
        assert_eq!(points.publisher("cam"), Some(publisher(1)));
        assert_eq!(
            points.claim("key-of-cam-0123456", publisher(2)).err(),
            Some(PushRefusal::Busy("cam".into()))
        );
        drop(claim);
        assert_eq!(points.publisher("cam"), None);
        // Configured to replace: the second takes the stream from the first.
        let replacing = Arc::new(PushPoints::new(
            SecondPublisher::Replace,
            PublisherClock::Arrival,
        ));
        replacing.set("cam", Some(hash_key("key-of-cam-0123456")), None);
        let first = replacing
            .claim("key-of-cam-0123456", publisher(1))
            .expect("claims");
        let second = replacing
            .claim("key-of-cam-0123456", publisher(2))
            .expect("replaces");
        assert!(!first.is_current() && second.is_current());
        drop(first);
        assert_eq!(
            replacing.publisher("cam"),
            Some(publisher(2)),
            "the first leaving frees nothing"
        );
        let again = points
            .claim("key-of-cam-0123456", publisher(2))
            .expect("free");
        assert!(again.is_current());
        // A new key ends the claim made with the old one.
        points.set("cam", Some(hash_key("a-new-key-for-cam-99")), None);
        assert!(!again.is_current());
        points.remove("other");
        assert_eq!(
            points.claim("key-of-other-0123", publisher(3)).err(),
            Some(PushRefusal::UnknownKey)
        );
    }

    #[test]
    fn waiting_ends_when_the_stream_stops() {
        let points = PushPoints::default();
        points.set("cam", Some(hash_key("key-of-cam-0123456")), None);
        let stop = AtomicBool::new(true);
        assert!(points.wait("cam", &stop).is_err());
        assert!(points.wait("unknown", &AtomicBool::new(false)).is_err());
    }
}
