//! Encoding and decoding the descriptor list frame an owner sends a newcomer, for lists of 1 to
//! 10 000 entries.
//!
//! ```text
//! cargo bench -p tableroll --bench frames
//! ```
//!
//! `encode` builds the list (one TCP listener entry each) and encodes it with its frame header,
//! as the owner does; `decode` checks the header and decodes the body, as the newcomer does.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tableroll::fuzzing::{decode_list_frame, encode_list_frame};

const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];

fn list_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("list_frame");
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("encode", n), &n, |b, &n| {
            b.iter(|| encode_list_frame(black_box(n)))
        });
        let frame = encode_list_frame(n);
        assert_eq!(decode_list_frame(&frame).expect("a valid frame"), n);
        group.bench_with_input(BenchmarkId::new("decode", n), &frame, |b, frame| {
            b.iter(|| decode_list_frame(black_box(frame)).expect("a valid frame"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine has 2 cores and is shared with other work.
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = list_frames
}
criterion_main!(benches);
