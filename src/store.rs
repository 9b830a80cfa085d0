//! The store: recent init segments, parts and segments in memory (moka), by key, with a
//! byte budget and a time to live long enough that what leaves the playlist stays
//! fetchable for at least three target durations (RFC 8216bis 6.2.2).
//!
//! Each stream has a budget of its own (a partition, one moka cache each), so that a
//! 4K camera filling its share evicts its own oldest media, never a 360p stream's parts
//! before they leave that stream's playlist. Keys are `stream/name` ([`key`]); a key of
//! no known stream goes to a shared partition. When streams are added or removed while
//! the server runs (admin API, config reload), the budget is shared anew between them
//! ([`Store::rebalance`]): the total stays what was configured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

/// One stored resource: its bytes as the chunks they were made in (a segment is its
/// parts, shared, never concatenated), and when it was completed.
#[derive(Debug, Clone)]
pub struct StoredMedia {
    /// The bytes, in order.
    pub chunks: Arc<[Bytes]>,
    /// When it was complete (Last-Modified).
    pub modified: SystemTime,
}

impl StoredMedia {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store. Cloning it clones a handle to the same caches.
#[derive(Clone)]
pub struct Store {
    /// Written only when a stream is added; read (uncontended) per lookup.
    partitions: Arc<RwLock<HashMap<String, Partition>>>,
    /// Keys of no stream in `partitions`.
    shared: Partition,
    counts: Arc<Counts>,
    time_to_live: Duration,
    /// What the partitions share.
    budget: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("partitions", &self.partitions().len())
            .finish_non_exhaustive()
    }
}

/// Lookups and evictions since the store was made.
#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

/// What the store holds and has done, all partitions together (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes held (keys and media).
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
    /// Lookups that found their media.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries evicted for room before their time to live.
    pub evictions: u64,
}

type Partition = moka::sync::Cache<String, StoredMedia>;

fn partition(max_bytes: u64, time_to_live: Duration, evictions: &Arc<AtomicU64>) -> Partition {
    let evictions = evictions.clone();
    moka::sync::Cache::builder()
        // LRU, not the default TinyLFU: under size pressure TinyLFU's admission
        // filter was seen refusing the newest entries, which are the live edge.
        .eviction_policy(EvictionPolicy::lru())
        .weigher(|key: &String, value: &StoredMedia| {
            u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
        })
        .max_capacity(max_bytes)
        .time_to_live(time_to_live)
        .eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Size {
                evictions.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
}

impl Store {
    /// A store holding at most `max_bytes` of media, all streams together, each entry
    /// for `time_to_live`.
    pub fn new(max_bytes: u64, time_to_live: Duration) -> Self {
        Self::partitioned(std::iter::empty(), max_bytes, time_to_live)
    }

    /// A store with a budget per stream: `budgets` names each stream and its bytes;
    /// anything else shares `shared_bytes`.
    pub fn partitioned(
        budgets: impl IntoIterator<Item = (String, u64)>,
        shared_bytes: u64,
        time_to_live: Duration,
    ) -> Self {
        let counts = Arc::new(Counts::default());
        let partitions: HashMap<String, Partition> = budgets
            .into_iter()
            .map(|(stream, bytes)| (stream, partition(bytes, time_to_live, &counts.evictions)))
            .collect();
        let budget = partitions
            .values()
            .filter_map(|p| p.policy().max_capacity())
            .sum();
        Self {
            partitions: Arc::new(RwLock::new(partitions)),
            shared: partition(shared_bytes, time_to_live, &counts.evictions),
            counts,
            time_to_live,
            budget,
        }
    }

    /// Shares the partitions' budget equally between `streams` (those served, and those
    /// retiring whose names are still served). A partition whose share changes is made
    /// anew with its entries, oldest first, so that one that shrank drops its oldest
    /// media (the chunks are shared, not copied); a stream's partition that is kept
    /// keeps its media (a stream replaced under its name: the old media leaves by its
    /// time to live, as it would have); partitions of streams not named are dropped.
    pub fn rebalance(&self, streams: &[String]) {
        let count = u64::try_from(streams.len().max(1)).unwrap_or(u64::MAX);
        let share = self.budget / count;
        let mut partitions = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        partitions.retain(|stream, _| streams.contains(stream));
        for stream in streams {
            let kept = partitions.get(stream);
            if kept.is_some_and(|p| p.policy().max_capacity() == Some(share)) {
                continue;
            }
            let made = partition(share, self.time_to_live, &self.counts.evictions);
            if let Some(old) = kept {
                let mut entries: Vec<_> = old.iter().collect();
                entries.sort_by_key(|(_, media)| media.modified);
                for (key, media) in entries {
                    made.insert(key.as_ref().clone(), media);
                }
            }
            partitions.insert(stream.clone(), made);
        }
    }

    /// The byte budget of `stream`'s own partition, if it has one.
    pub fn budget_of(&self, stream: &str) -> Option<u64> {
        self.partitions()
            .get(stream)
            .and_then(|p| p.policy().max_capacity())
    }

    fn partitions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The partition `key` belongs to (a handle: moka caches clone cheaply).
    fn partition_of(&self, key: &str) -> Partition {
        key.split_once('/')
            .and_then(|(stream, _)| self.partitions().get(stream).cloned())
            .unwrap_or_else(|| self.shared.clone())
    }

    /// Stores `chunks` under `key`.
    pub fn insert(&self, key: String, chunks: Vec<Bytes>, modified: SystemTime) {
        self.partition_of(&key).insert(
            key,
            StoredMedia {
                chunks: chunks.into(),
                modified,
            },
        );
    }

    /// The resource under `key`, if still held.
    pub fn get(&self, key: &str) -> Option<StoredMedia> {
        let found = self.partition_of(key).get(key);
        let count = if found.is_some() {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        count.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// What it holds and has done.
    pub fn stats(&self) -> StoreStats {
        let (mut bytes, mut entries) = (0, 0);
        let partitions = self.partitions();
        for partition in partitions.values().chain([&self.shared]) {
            partition.run_pending_tasks();
            bytes += partition.weighted_size();
            entries += partition.entry_count();
        }
        StoreStats {
            bytes,
            entries,
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            evictions: self.counts.evictions.load(Ordering::Relaxed),
        }
    }

    /// Bytes held for `stream` (or, for a stream without a budget, for all of those).
    pub fn held_bytes(&self, stream: &str) -> u64 {
        let partition = self.partition_of(&key(stream, ""));
        partition.run_pending_tasks();
        partition.weighted_size()
    }
}

/// The store key of `name` in stream `stream`.
pub fn key(stream: &str, name: &str) -> String {
    format!("{stream}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(store: &Store, stream: &str, count: usize, bytes: usize) {
        for i in 0..count {
            store.insert(
                key(stream, &i.to_string()),
                vec![Bytes::from(vec![0u8; bytes])],
                SystemTime::now(),
            );
            store.partition_of(&key(stream, "")).run_pending_tasks();
        }
    }

    #[test]
    fn newest_entries_survive_size_pressure() {
        let store = Store::new(10_000, Duration::from_secs(60));
        fill(&store, "s", 100, 1000);
        assert!(store.get("s/99").is_some(), "the live edge is kept");
        assert!(store.get("s/98").is_some());
        assert!(store.get("s/0").is_none(), "the oldest went");
        assert!(store.held_bytes("s") <= 10_000);
    }

    /// Issue 11.17: with one budget for all, a big stream pushes a small one's parts
    /// out; with a budget each, it only pushes out its own.
    #[test]
    fn a_big_stream_cannot_evict_a_small_ones_media() {
        let ttl = Duration::from_secs(60);
        let shared = Store::new(20_000, ttl);
        fill(&shared, "small", 5, 100);
        fill(&shared, "big", 100, 1000);
        assert!(
            shared.get("small/4").is_none(),
            "one budget for all: the small stream's newest part was evicted"
        );

        let own = Store::partitioned([("small".into(), 10_000), ("big".into(), 10_000)], 0, ttl);
        fill(&own, "small", 5, 100);
        fill(&own, "big", 100, 1000);
        for i in 0..5 {
            assert!(
                own.get(&format!("small/{i}")).is_some(),
                "small/{i} evicted"
            );
        }
        assert!(own.get("big/99").is_some());
        assert!(own.get("big/0").is_none());
        assert!(own.held_bytes("big") <= 10_000);
    }

    /// Streams added and removed while serving share the configured budget, never more:
    /// a partition that shrinks keeps its newest media; one no longer named goes.
    #[test]
    fn the_budget_is_shared_anew_when_streams_come_and_go() {
        let ttl = Duration::from_secs(60);
        let store = Store::partitioned([("a".into(), 20_000)], 0, ttl);
        fill(&store, "a", 15, 1000);
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        store.rebalance(&names(&["a", "b"]));
        assert_eq!(store.budget_of("a"), Some(10_000));
        assert_eq!(store.budget_of("b"), Some(10_000));
        store.partition_of("a/").run_pending_tasks();
        assert!(store.get("a/14").is_some(), "the live edge is kept");
        assert!(store.get("a/0").is_none(), "the oldest went");
        assert!(store.held_bytes("a") <= 10_000);
        fill(&store, "b", 30, 1000);
        assert!(store.held_bytes("b") <= 10_000);
        store.rebalance(&names(&["b"]));
        assert_eq!(store.budget_of("a"), None, "a's partition is dropped");
        assert_eq!(store.budget_of("b"), Some(20_000));
        assert!(store.get("b/29").is_some(), "b's media is kept");
    }
}
