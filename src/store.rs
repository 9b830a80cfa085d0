//! The store: recent init segments, parts and segments in memory (moka), by key, with a
//! byte budget and a time to live long enough that what leaves the playlist stays
//! fetchable for at least three target durations (RFC 8216bis 6.2.2).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
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
    cache: moka::sync::Cache<String, StoredMedia>,
}

impl Store {
    /// A store holding at most `max_bytes` of media, each entry for `time_to_live`.
    pub fn new(max_bytes: u64, time_to_live: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            // LRU, not the default TinyLFU: under size pressure TinyLFU's admission
            // filter was seen refusing the newest entries, which are the live edge.
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &String, value: &StoredMedia| {
                u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(max_bytes)
            .time_to_live(time_to_live)
            .build();
        Self { cache }
    }

    /// Stores `chunks` under `key`.
    pub fn insert(&self, key: String, chunks: Vec<Bytes>, modified: SystemTime) {
        self.cache.insert(
            key,
            StoredMedia {
                chunks: chunks.into(),
                modified,
            },
        );
    }

    /// The resource under `key`, if still held.
    pub fn get(&self, key: &str) -> Option<StoredMedia> {
        self.cache.get(key)
    }
}

/// The store key of `name` in stream `stream`.
pub fn key(stream: &str, name: &str) -> String {
    format!("{stream}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_entries_survive_size_pressure() {
        let store = Store::new(10_000, Duration::from_secs(60));
        for i in 0..100 {
            store.insert(
                format!("s/{i}"),
                vec![Bytes::from(vec![0u8; 1000])],
                SystemTime::now(),
            );
            store.cache.run_pending_tasks();
        }
        assert!(store.get("s/99").is_some(), "the live edge is kept");
        assert!(store.get("s/98").is_some());
        assert!(store.get("s/0").is_none(), "the oldest went");
        assert!(store.cache.weighted_size() <= 10_000);
    }
}
