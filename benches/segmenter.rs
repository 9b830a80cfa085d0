//! Segmenter throughput (samples/s) and allocations per part.
//!
//! `cargo bench --bench segmenter`. The allocation count is printed before criterion's
//! figures; it comes from a counting global allocator, so it is exact, not sampled.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
use mirror::cmaf::{Sample, Segmenter, SegmenterEvent};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

fn segmenter() -> Segmenter {
    Segmenter::new(fixtures::segmenter_config(true), 0)
}

/// One second of 30 fps video (10 KB frames, 40 KB keyframes) and 48 kHz AAC, in
/// capture order: 30 + 47 samples.
fn one_second(second: u64) -> Vec<Sample> {
    let video_frame = Bytes::from(vec![0x41; 10_000]);
    let keyframe = Bytes::from(vec![0x65; 40_000]);
    let audio_frame = Bytes::from(vec![0x21; 380]);
    let at = UNIX_EPOCH;
    let mut out = Vec::with_capacity(80);
    let mut audio = (second * 48_000).div_ceil(1024);
    for n in 0..30 {
        let v = second * 90_000 + n * 3000;
        while audio * 1024 * 90_000 / 48_000 <= v {
            out.push(Sample {
                track_id: 2,
                decode_ticks: audio * 1024,
                composition_offset_ticks: 0,
                keyframe: true,
                data: audio_frame.clone(),
                captured_at: at,
            });
            audio += 1;
        }
        out.push(Sample {
            track_id: 1,
            decode_ticks: v,
            composition_offset_ticks: 0,
            keyframe: n == 0,
            data: if n == 0 {
                keyframe.clone()
            } else {
                video_frame.clone()
            },
            captured_at: at,
        });
    }
    out
}

fn run(seg: &mut Segmenter, samples: Vec<Sample>) -> usize {
    let mut parts = 0;
    for s in samples {
        seg.push(s, UNIX_EPOCH).expect("accepted");
        while let Some(event) = seg.poll_event() {
            if let SegmenterEvent::Part(p) = event {
                parts += 1;
                black_box(p);
            }
        }
    }
    parts
}

fn allocations_per_part() {
    let mut seg = segmenter();
    run(&mut seg, one_second(0)); // warm up queues
    let inputs: Vec<Vec<Sample>> = (1..=20).map(one_second).collect();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let parts: usize = inputs.into_iter().map(|s| run(&mut seg, s)).sum();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "segmenter: {allocations} allocations for {parts} parts = {:.1} allocations per part \
         (30 fps video + 48 kHz AAC, 200 ms parts)",
        allocations as f64 / parts as f64
    );
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("segmenter");
    let samples_per_second = one_second(1).len() as u64;
    group.throughput(Throughput::Elements(samples_per_second));
    group.bench_function("one_second_av_720p30", |b| {
        let mut seg = segmenter();
        let mut second = 0;
        b.iter_batched(
            || {
                second += 1;
                one_second(second)
            },
            |samples| run(&mut seg, samples),
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, throughput);

fn main() {
    allocations_per_part();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
