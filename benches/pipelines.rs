//! Engine throughput with 1 and 2 pipelines on this machine: what `pipeline.threads` gives.
//!
//! Each pipeline is a thread with its own engine, window state and model session, fed its share
//! of the 1,000,000-customer population (customers split by a hash of their id), so that all of
//! them together hold the same state as one; end to end at the default batch, reason codes off
//! (their cost is `engine/explain_one_row`). `cargo bench --bench pipelines`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudscore::explain::{ReasonPolicy, ReasonsFor};
use fraudscore::scorer::Scorer;

#[path = "common/lane.rs"]
mod lane;
#[path = "common/population.rs"]
#[allow(dead_code)]
mod population;
use lane::{scorer, Lane};

/// End to end at the default batch with 1 and 2 pipelines, each a thread with its own engine,
/// window state and model, fed its share of the same population (so the state held in all is
/// the same): what `pipeline.threads` gives on this machine.
fn pipelines(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.measurement_time(Duration::from_secs(10));
    for n in [1u64, 2] {
        let spec = scorer().model().spec().clone();
        let mut lanes: Vec<(Lane, Scorer)> = std::thread::scope(|s| {
            let warming: Vec<_> = (0..n)
                .map(|i| {
                    let spec = spec.clone();
                    s.spawn(move || {
                        let scorer = scorer().with_reasons(ReasonPolicy {
                            reasons_for: ReasonsFor::None,
                            ..ReasonPolicy::default()
                        });
                        (Lane::warmed(spec, i, n), scorer)
                    })
                })
                .collect();
            warming
                .into_iter()
                .map(|w| w.join().expect("warming"))
                .collect()
        });
        g.throughput(Throughput::Elements(64 * n));
        g.bench_function(format!("end_to_end_batch_64_pipelines_{n}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                std::thread::scope(|s| {
                    for (lane, scorer) in lanes.iter_mut() {
                        s.spawn(move || {
                            let (mut prepared, mut verdicts) = (Vec::new(), Vec::new());
                            for _ in 0..iters {
                                black_box(lane.end_to_end(
                                    scorer,
                                    64,
                                    &mut prepared,
                                    &mut verdicts,
                                ));
                            }
                        });
                    }
                });
                started.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = pipelines_bench;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(2));
    targets = pipelines
}
criterion_main!(pipelines_bench);
