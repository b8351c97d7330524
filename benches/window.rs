//! The cost of one customer's window counts and sums by how many events it holds:
//! `cargo bench --bench window`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fraudscore::time::{EventTime, WindowLen};
use fraudscore::window::{CustomerWindows, Retention};

const T0: i64 = 1_795_000_000_000;
const DAY: i64 = 86_400_000;

fn stats_by_history(c: &mut Criterion) {
    let windows: Vec<WindowLen> = ["10m", "1d", "7d", "30d"]
        .iter()
        .map(|w| WindowLen::parse(w).expect("window"))
        .collect();
    let retention = Retention::new(windows[3], 3_600_000);
    let mut g = c.benchmark_group("window_stats");
    // Spread over 30 days, so the 30-day window holds every event: the busiest card of the engine
    // benchmark's population makes ~32,000 transactions a week.
    for held in [10i64, 1_000, 30_000] {
        let mut customer = CustomerWindows::default();
        for i in 0..held {
            let at = EventTime::checked(T0 + i * (30 * DAY / held)).expect("time");
            let amount = (i % 300) as f64 + 0.25;
            customer
                .insert(at, (i as u64) << 2, amount, &retention)
                .expect("inserted");
        }
        let newest = customer.newest().expect("held");
        let mut out = Vec::new();
        g.bench_function(format!("four_windows_{held}_events"), |b| {
            b.iter(|| {
                customer.stats(black_box(newest), &windows, &mut out);
                black_box(out[3].sum)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stats_by_history);
criterion_main!(benches);
