//! Engine benchmarks on a 1,000,000-customer population: decode + windows + features (one message
//! at a time, and in runs of 64 as the pipeline takes a fetch), and the whole
//! path with ONNX scoring and output encoding at batch 1 and the default batch (with reason codes
//! for reviews and declines, for none and for all), one row's reason codes alone, and ONNX
//! inference alone on the population's rows and on synthetic ones.
//!
//! `cargo bench --bench engine`; `BENCH_WARM_DAYS` (default 7) sets how much history is loaded first.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fraudscore::engine::Prepared;
use fraudscore::explain::{ReasonPolicy, ReasonsFor};
use fraudscore::features::FeatureSpec;
use fraudscore::scorer::Verdict;

#[path = "common/population.rs"]
mod population;
use population::Stream;
#[path = "common/lane.rs"]
mod lane;
use lane::{model, scorer, Lane};

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
    // As the pipeline takes a fetch's messages: the run's customers prefetched together.
    g.throughput(Throughput::Elements(64));
    let mut run = Vec::with_capacity(64);
    g.bench_function("decode_window_features_run_64", |b| {
        b.iter(|| {
            run.clear();
            one.prepare_run(64, &mut run);
            black_box(run.len())
        })
    });
    g.throughput(Throughput::Elements(1));
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
    // Output encoding alone, on 64 of the population's transactions scored by the default policy.
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode_output_batch_64", |b| {
        let mut prepared: Vec<Prepared> = Vec::with_capacity(64);
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(64);
        while prepared.len() < 64 {
            prepared.extend(one.prepare());
        }
        scorer.score(&prepared, &mut verdicts).expect("inference");
        let (spec, now) = (
            one.engine.spec().clone(),
            fraudscore::time::EventTime::now(),
        );
        let mut encoded = Vec::new();
        b.iter(|| {
            let mut bytes = 0;
            for (p, v) in prepared.iter().zip(&verdicts) {
                fraudscore::output::scored(&mut encoded, &spec, p, Some((v, &scorer)), true, now);
                bytes += encoded.len();
            }
            black_box(bytes)
        })
    });
    g.throughput(Throughput::Elements(1));
    let width = scorer.model().spec().model_width();
    let explained = population_rows(&mut one, scorer.model().spec(), 1024);
    let explainer = scorer
        .model()
        .explainer()
        .expect("the shipped model has tree covers");
    g.bench_function("explain_one_row", |b| {
        let rows = &explained;
        let mut phi = Vec::new();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % (rows.len() / width);
            explainer.contributions(&rows[i * width..(i + 1) * width], &mut phi);
            black_box(phi[0])
        })
    });
    // As the service meets it: explanations are rare, so the trees are out of the caches. Each
    // row's explanation follows a write over 48 MiB (more than the last-level cache), untimed.
    g.bench_function("explain_one_row_cold", |b| {
        let rows = &explained;
        let (mut phi, mut i) = (Vec::new(), 0);
        let mut other = vec![0u8; 48 << 20];
        b.iter_batched(
            || {
                for byte in other.iter_mut().step_by(64) {
                    *byte = byte.wrapping_add(1);
                }
                i = (i + 1) % (rows.len() / width);
                i
            },
            |i| {
                explainer.contributions(&rows[i * width..(i + 1) * width], &mut phi);
                black_box(phi[0])
            },
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(64));
    // Rows of the population, as the service scores them: a tree ensemble's branches on real
    // rows are not the repeating pattern of the synthetic rows below, which the branch
    // predictor learns.
    g.bench_function("inference_only_batch_64_population_rows", |b| {
        let rows = population_rows(&mut one, scorer.model().spec(), 64 * 64);
        let batch = 64 * width;
        let batches = rows.len() / batch;
        let (mut scores, mut m, mut i) = (Vec::new(), model(), 0);
        b.iter(|| {
            i = (i + 1) % batches;
            m.score(&rows[i * batch..(i + 1) * batch], &mut scores)
                .expect("inference");
            black_box(scores.len())
        })
    });
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

/// The model rows of up to `n` of the population's next transactions (those the engine takes).
fn population_rows(one: &mut Lane, spec: &FeatureSpec, n: usize) -> Vec<f32> {
    let mut rows = Vec::new();
    for _ in 0..n {
        if let Some(p) = one.prepare() {
            spec.model_row(&p.features, &mut rows);
        }
    }
    rows
}

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(engine);
