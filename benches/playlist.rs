//! Render cost per snapshot: the playlist of a full window (12 segments of 5 parts, 3
//! parts of the next) rendered whole, as a `_HLS_skip=YES` and a `v2` delta update, each
//! gzipped — what every part completion costs, once, however many clients wait.
//!
//! `cargo bench --bench playlist`
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use mirror::llhls::Skip;
use mirror::llhls::live::{LivePlaylist, MediaNames};
use mirror::stream::Snapshot;

fn live() -> (LivePlaylist, Arc<MediaNames>) {
    let names = MediaNames::new("v0", UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut live = LivePlaylist::new(
        names.clone(),
        Duration::from_secs(1),
        Duration::from_millis(200),
        12,
        0,
    );
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
    for msn in 0..100u64 {
        for i in 0..5u32 {
            live.push_part(
                msn,
                i,
                Duration::from_millis(200),
                i == 0,
                at(msn * 1000 + u64::from(i) * 200),
            );
        }
        live.push_segment(
            msn,
            Duration::from_secs(1),
            at(msn * 1000),
            at(msn * 1000 + 1000),
        );
    }
    for i in 0..3u32 {
        live.push_part(
            100,
            i,
            Duration::from_millis(200),
            i == 0,
            SystemTime::now(),
        );
    }
    (live, Arc::new(names))
}

fn render(c: &mut Criterion) {
    let (live, _names) = live();
    c.bench_function("snapshot_render_3_forms_gzip", |b| {
        b.iter(|| black_box(Snapshot::render(1, &live, std::sync::Arc::from([]))));
    });
    c.bench_function("playlist_render_plain", |b| {
        b.iter(|| black_box(live.playlist().render_with(Skip::No)));
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
