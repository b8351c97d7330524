//! Snapshot write and restore on the 1,000,000-customer population (20 M events held after the
//! default 7 days): how long a round of snapshots takes, its size, and how fast a restore loads it,
//! beside rebuilding the same state by replaying the messages through the engine.
//!
//! `cargo bench --bench snapshot`; `BENCH_WARM_DAYS` (default 7) sets how much history is held.
//! The files go to `$BENCH_SNAPSHOT_DIR` (default: a temporary directory under target/).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudscore::engine::{Engine, EngineConfig};
use fraudscore::features::FeatureSpec;
use fraudscore::snapshot::{self, SnapshotDir, StateCheck};
use fraudscore::store::Store;

#[path = "common/population.rs"]
mod population;
use population::{Stream, CUSTOMERS, PER_CUSTOMER_PER_WEEK};

fn benches(c: &mut Criterion) {
    let days: u64 = std::env::var("BENCH_WARM_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(7);
    let messages = days * CUSTOMERS * PER_CUSTOMER_PER_WEEK / 7;
    // The default windows (10 minutes, 7 days): what every output carries.
    let spec = FeatureSpec::for_model::<&str>(&[]).expect("spec");
    let config = EngineConfig::default();
    let retention = config.retention(&spec);
    let fresh = || Arc::new(Store::with_seed(7));

    // Rebuild: the messages replayed through the engine, as a restore without a snapshot does.
    let store = fresh();
    let mut engine = Engine::new(spec.clone(), &config, store.clone());
    let mut stream = Stream::new(7, 1 << 24);
    let started = Instant::now();
    for offset in 0..messages {
        let (key, value) = stream.next_message();
        let _ = engine.prepare(0, offset as i64, Some(key), value);
    }
    let rebuild = started.elapsed();
    let events = store.window_events() as u64;
    eprintln!(
        "rebuild by replay: {messages} messages in {rebuild:.1?} = {:.0} messages/s; {} customers, {events} events held",
        messages as f64 / rebuild.as_secs_f64(),
        store.customers()
    );

    let dir = match std::env::var_os("BENCH_SNAPSHOT_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .expect("snapshot directory");
    let place = SnapshotDir::new(dir.path(), "bench");
    let check = StateCheck::new(&retention, &store);

    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(events));
    let mut bytes = 0;
    g.bench_function("write_round", |b| {
        b.iter(|| {
            let captures = store.begin_capture(&[(0, messages as i64)]);
            bytes = snapshot::write_round(&place, &store, &captures, check)
                .expect("write")
                .bytes;
        })
    });
    eprintln!(
        "snapshot: {bytes} bytes = {:.1} bytes per event",
        bytes as f64 / events as f64
    );
    let path = place.list(0).remove(0).1;
    g.bench_function("read_and_load", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let target = fresh();
                let started = Instant::now();
                let snap = snapshot::read(&path, 0, check).expect("read");
                target.load_partition(0, snap.marks, snap.customers);
                took += started.elapsed();
                assert_eq!(target.window_events() as u64, events);
                // Dropping a million customers is not part of a restore.
                drop(target);
            }
            took
        })
    });
    g.finish();
}

criterion_group!(snapshot_benches, benches);
criterion_main!(snapshot_benches);
