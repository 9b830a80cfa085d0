//! Store lookup: the moka cache holding parts and segments, as the handler reads it for
//! every media request. 12 segments of 5 parts for each of 50 streams in the cache.
//!
//! `cargo bench --bench store`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use mirror::store::{Store, key};

fn lookup(c: &mut Criterion) {
    let store = Store::new(1 << 30, Duration::from_secs(60));
    let part = Bytes::from(vec![0u8; 60_000]);
    for stream in 0..50 {
        for msn in 0..12 {
            for index in 0..5 {
                store.insert(
                    key(&format!("s{stream}"), &format!("v0-1-{msn}.{index}.m4s")),
                    vec![part.clone()],
                    SystemTime::now(),
                );
            }
        }
    }
    let hit = key("s25", "v0-1-11.4.m4s");
    let miss = key("s25", "v0-1-99.0.m4s");
    c.bench_function("store_get_hit", |b| {
        b.iter(|| black_box(store.get(black_box(&hit))))
    });
    c.bench_function("store_get_miss", |b| {
        b.iter(|| black_box(store.get(black_box(&miss))))
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
