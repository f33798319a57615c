//! VP8 encode and decode time per frame of the testsrc picture at 360p, 720p and 1080p
//! (libvpx through `conclave-vpx`, realtime settings, one thread, as a call uses them).
//!
//! `cargo bench -p conclave-core --bench video` — figures go to `docs/performance.md`. The
//! realtime factor is the frame interval at 30 fps (33.3 ms) over the encode time.

use std::hint::black_box;

use conclave_core::media::video::testsrc::{Stamp, TestSource};
use conclave_core::media::video::{Decoder, Encoder, EncoderConfig};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Pictures encoded before measuring (rate control settles) and in each measured cycle.
const WARM_UP: u32 = 10;
const CYCLE: u32 = 30;

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("vp8");
    group.sample_size(20);
    for (name, width, height) in [
        ("360p", 640, 360),
        ("720p", 1280, 720),
        ("1080p", 1920, 1080),
    ] {
        let source = TestSource::new(width, height).expect("valid size");
        let pictures: Vec<_> = (0..CYCLE)
            .map(|frame| {
                source.draw(Stamp {
                    frame,
                    captured_ms: frame * 33,
                })
            })
            .collect();

        let mut encoder = Encoder::new(EncoderConfig::realtime(width, height)).expect("encoder");
        for picture in pictures.iter().cycle().take(WARM_UP as usize) {
            encoder.encode(picture, false).expect("encodes");
        }
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                next = (next + 1) % pictures.len();
                black_box(encoder.encode(&pictures[next], false).expect("encodes"))
            })
        });

        // A stream of encoded frames (one keyframe, then deltas) decoded in a loop: each
        // cycle restarts at the keyframe so every frame has its references.
        let mut fresh = Encoder::new(EncoderConfig::realtime(width, height)).expect("encoder");
        let stream: Vec<Vec<u8>> = pictures
            .iter()
            .enumerate()
            .map(|(i, picture)| {
                let frames = fresh.encode(picture, i == 0).expect("encodes");
                frames
                    .into_iter()
                    .next()
                    .expect("one frame per picture")
                    .data
            })
            .collect();
        let mut decoder = Decoder::new().expect("decoder");
        let mut at = 0usize;
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let picture = decoder.decode(&stream[at]).expect("decodes");
                at = (at + 1) % stream.len();
                black_box(picture)
            })
        });
    }
    group.finish();
}

criterion_group!(video, benches);
criterion_main!(video);
