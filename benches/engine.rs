//! Engine benchmarks on a 1,000,000-customer population: decode + windows + features, and the whole
//! path with ONNX scoring and output encoding at batch 1 and the default batch (with reason codes
//! for reviews and declines, for none and for all), and one row's reason codes alone.
//!
//! `cargo bench --bench engine`; `BENCH_WARM_DAYS` (default 7) sets how much history is loaded first.
//! `cargo bench --bench engine -- pipelines` compares 1 and 2 pipeline threads.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudscore::engine::{Engine, EngineConfig, Prepared};
use fraudscore::explain::{ReasonPolicy, ReasonsFor};
use fraudscore::features::FeatureSpec;
use fraudscore::model::Model;
use fraudscore::output;
use fraudscore::scorer::{Scorer, Verdict};
use fraudscore::store::Store;
use fraudscore::time::EventTime;

#[path = "common/population.rs"]
mod population;
use population::{Stream, CUSTOMERS, PER_CUSTOMER_PER_WEEK};

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fraud.onnx");
    Model::load(&path, 1).expect("models/fraud.onnx (run scripts/setup.sh)")
}

/// One pipeline's engine, fed its share of the population: the customers whose id hashes to
/// `lane` of `lanes` (all of them for one lane), from a stream of its own.
struct Lane {
    engine: Engine,
    stream: Stream,
    lane: u64,
    lanes: u64,
}

impl Lane {
    /// With `BENCH_WARM_DAYS` (default 7) of its share of the history already in its windows.
    fn warmed(spec: FeatureSpec, lane: u64, lanes: u64) -> Lane {
        let days: u64 = std::env::var("BENCH_WARM_DAYS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(7);
        let events = days * CUSTOMERS * PER_CUSTOMER_PER_WEEK / 7;
        let engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
        let mut l = Lane {
            engine,
            stream: Stream::new(7, 1 << 24),
            lane,
            lanes,
        };
        let started = Instant::now();
        for _ in 0..events {
            let _ = black_box(l.prepare());
        }
        eprintln!(
            "lane {lane}/{lanes}: warmed {days} days ({events} events of the population) in {:.1?}: {} customers, {} events held",
            started.elapsed(),
            l.engine.store().customers(),
            l.engine.store().window_events()
        );
        l
    }

    /// The next transaction of this lane's share, prepared (None if the engine rejects it).
    fn prepare(&mut self) -> Option<Prepared> {
        loop {
            let (key, value) = self.stream.next_message();
            let mine = self.lanes == 1 || xxhash_rust::xxh3::xxh3_64(key) % self.lanes == self.lane;
            if mine {
                return self.engine.prepare(0, 0, Some(key), value).ok();
            }
        }
    }

    /// Decode, windows, features, ONNX score and output encoding for `batch` transactions;
    /// returns the outputs' bytes.
    fn end_to_end(
        &mut self,
        scorer: &mut Scorer,
        batch: usize,
        prepared: &mut Vec<Prepared>,
        verdicts: &mut Vec<Verdict>,
    ) -> usize {
        prepared.clear();
        while prepared.len() < batch {
            if let Some(p) = self.prepare() {
                prepared.push(p);
            }
        }
        scorer.score(prepared, verdicts).expect("inference");
        let now = EventTime::now();
        prepared
            .iter()
            .zip(verdicts.iter())
            .map(|(p, v)| output::scored(self.engine.spec(), p, Some((v, &*scorer)), now).len())
            .sum()
    }
}

/// The shipped model with its own thresholds: they set how many transactions are flagged, and
/// so explained.
fn scorer() -> Scorer {
    let shipped = model();
    let thresholds = shipped.thresholds().unwrap_or_default();
    Scorer::new(shipped, thresholds)
}

fn benches(c: &mut Criterion) {
    let mut scorer = scorer();
    let spec = scorer.model().spec().clone();
    eprintln!("features: {:?}", spec.names());
    let mut one = Lane::warmed(spec, 0, 1);

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("generate_only", |b| {
        let mut s = Stream::new(9, 1 << 20);
        b.iter(|| {
            let (k, v) = s.next_message();
            black_box((k.len(), v.len()));
        })
    });
    g.bench_function("decode_window_features", |b| {
        b.iter(|| black_box(one.prepare().is_some()))
    });
    g.bench_function("decode_rfc3339_example", |b| {
        let value = br#"{"transaction_id": "tx-1", "customer_id": "c-42", "terminal_id": "t-7", "amount": 57.16, "timestamp": "2026-11-26T03:44:58.123Z"}"#;
        b.iter(|| black_box(fraudscore::decode::decode(None, value, 65536).is_ok()))
    });
    // The default reason policy (reviews and declines) at both batch sizes; at the default batch
    // also none and all, for what reason codes cost.
    let policies = [
        (1usize, ReasonsFor::Flagged, ""),
        (64, ReasonsFor::Flagged, ""),
        (64, ReasonsFor::None, "_reasons_none"),
        (64, ReasonsFor::All, "_reasons_all"),
    ];
    for (batch, reasons_for, suffix) in policies {
        scorer = scorer.with_reasons(ReasonPolicy {
            reasons_for,
            ..ReasonPolicy::default()
        });
        let mut prepared: Vec<Prepared> = Vec::with_capacity(batch);
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(batch);
        let (mut scored, mut explained) = (0u64, 0u64);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("end_to_end_batch_{batch}{suffix}"), |b| {
            b.iter(|| {
                let bytes = one.end_to_end(&mut scorer, batch, &mut prepared, &mut verdicts);
                scored += verdicts.len() as u64;
                explained += verdicts.iter().filter(|v| !v.reasons.is_empty()).count() as u64;
                black_box(bytes)
            })
        });
        eprintln!(
            "  {:.2}% of the transactions explained",
            100.0 * explained as f64 / scored.max(1) as f64
        );
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("explain_one_row", |b| {
        let spec = scorer.model().spec().clone();
        let explainer = scorer
            .model()
            .explainer()
            .expect("the shipped model has tree covers");
        let mut rows = Vec::new();
        for _ in 0..1024 {
            if let Some(p) = one.prepare() {
                spec.model_row(&p.features, &mut rows);
            }
        }
        let width = spec.model_width();
        let mut phi = Vec::new();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % (rows.len() / width);
            explainer.contributions(&rows[i * width..(i + 1) * width], &mut phi);
            black_box(phi[0])
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("inference_only_batch_64", |b| {
        let rows: Vec<f32> = (0..64 * scorer.model().spec().model_width())
            .map(|i| (i % 17) as f32)
            .collect();
        let mut scores = Vec::new();
        let mut m = model();
        b.iter(|| {
            m.score(&rows, &mut scores).expect("inference");
            black_box(scores.len())
        })
    });
    g.finish();
}

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
                    s.spawn(move || (Lane::warmed(spec, i, n), scorer()))
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
    name = engine;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(2));
    targets = benches, pipelines
}
criterion_main!(engine);
