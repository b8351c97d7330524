//! Engine benchmarks on a 1,000,000-customer population: decode + windows + features, and the whole
//! path with ONNX scoring and output encoding at batch 1 and the default batch (with reason codes
//! for reviews and declines, for none and for all), and one row's reason codes alone.
//!
//! `cargo bench --bench engine`; `BENCH_WARM_DAYS` (default 7) sets how much history is loaded first.

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

/// An engine with `BENCH_WARM_DAYS` of the population's history already in its windows.
fn warmed(spec: FeatureSpec) -> (Engine, Stream) {
    let days: u64 = std::env::var("BENCH_WARM_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(7);
    let events = days * CUSTOMERS * PER_CUSTOMER_PER_WEEK / 7;
    let mut stream = Stream::new(7, 1 << 24);
    let mut engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
    let started = Instant::now();
    for _ in 0..events {
        let (key, value) = stream.next_message();
        let _ = black_box(engine.prepare(0, 0, Some(key), value));
    }
    eprintln!(
        "warmed {days} days ({events} events) in {:.1?}: {} customers, {} events held",
        started.elapsed(),
        engine.store().customers(),
        engine.store().window_events()
    );
    (engine, stream)
}

fn benches(c: &mut Criterion) {
    // The model's own thresholds: they set how many transactions are flagged, and so explained.
    let shipped = model();
    let thresholds = shipped.thresholds().unwrap_or_default();
    let mut scorer = Scorer::new(shipped, thresholds);
    let spec = scorer.model().spec().clone();
    eprintln!("features: {:?}", spec.names());
    let (mut engine, mut stream) = warmed(spec);

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
        b.iter(|| {
            let (key, value) = stream.next_message();
            black_box(engine.prepare(0, 0, Some(key), value).is_ok())
        })
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
                prepared.clear();
                while prepared.len() < batch {
                    let (key, value) = stream.next_message();
                    if let Ok(p) = engine.prepare(0, 0, Some(key), value) {
                        prepared.push(p);
                    }
                }
                scorer.score(&prepared, &mut verdicts).expect("inference");
                scored += verdicts.len() as u64;
                explained += verdicts.iter().filter(|v| !v.reasons.is_empty()).count() as u64;
                let now = EventTime::now();
                let bytes: usize = prepared
                    .iter()
                    .zip(&verdicts)
                    .map(|(p, v)| output::scored(engine.spec(), p, Some((v, &scorer)), now).len())
                    .sum();
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
            let (key, value) = stream.next_message();
            if let Ok(p) = engine.prepare(0, 0, Some(key), value) {
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

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(engine);
