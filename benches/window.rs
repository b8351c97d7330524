//! The cost of one customer's window counts and sums by how many events it holds, and of one
//! terminal's label windows by how many labels it holds: `cargo bench --bench window`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fraudscore::decode::{CustomerId, Label};
use fraudscore::terminals::{DelayedWindow, Terminals};
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

/// The shipped model's terminal windows (1, 7 and 30 days, 7 days delayed) at a terminal whose
/// labels, one per transaction spread over 37 days, were each known a day after it, or a tenth
/// of them only ten days after (later than the windows' delay: those are read one by one).
fn terminal_stats_by_labels(c: &mut Criterion) {
    let delay = WindowLen::parse("7d").expect("delay");
    let windows: Vec<DelayedWindow> = ["1d", "7d", "30d"]
        .iter()
        .map(|w| DelayedWindow {
            len: WindowLen::parse(w).expect("window"),
            delay,
        })
        .collect();
    let mut g = c.benchmark_group("terminal_stats");
    for (held, late_every) in [(10i64, 0), (1_000, 0), (30_000, 0), (30_000, 10)] {
        let terminals = Terminals::new(40 * DAY, &windows);
        for i in 0..held {
            let at = T0 + i * (37 * DAY / held);
            let lag = if late_every > 0 && i % late_every == 0 {
                10 * DAY
            } else {
                DAY
            };
            terminals.add(&Label {
                transaction_id: format!("tx-{i}").into(),
                customer_id: CustomerId::new(format!("c-{}", i % 100)),
                terminal_id: "t-1".into(),
                timestamp: EventTime::checked(at).expect("time"),
                fraud: i % 50 == 0,
                labelled_at: EventTime::checked(at + lag).expect("time"),
            });
        }
        let now = EventTime::checked(T0 + 37 * DAY).expect("time");
        let mut out = Vec::new();
        let late = if late_every > 0 {
            format!("_1_in_{late_every}_late")
        } else {
            String::new()
        };
        g.bench_function(format!("three_windows_{held}_labels{late}"), |b| {
            b.iter(|| {
                terminals.stats("t-1", black_box(now), &windows, &mut out);
                black_box(out[2].risk())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stats_by_history, terminal_stats_by_labels);
criterion_main!(benches);
