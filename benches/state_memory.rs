//! Memory of the window state on the 1,000,000-customer population, measured with a counting allocator.
//!
//! `cargo bench --bench state_memory` (BENCH_WARM_DAYS, default 7). Prints bytes per customer and
//! per held event; the targets are <= 96 and <= 16.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fraudscore::engine::{Engine, EngineConfig};
use fraudscore::features::FeatureSpec;
use fraudscore::store::Store;

#[path = "common/population.rs"]
mod population;
use population::{Stream, CUSTOMERS, PER_CUSTOMER_PER_WEEK};

struct Counting;

/// Bytes asked for.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Bytes malloc gave (its usable size): a small allocation takes at least 24, so counting only
/// what was asked for makes many small allocations look cheaper than they are.
static GIVEN: AtomicUsize = AtomicUsize::new(0);

fn given(ptr: *mut u8) -> usize {
    if ptr.is_null() {
        0
    } else {
        // SAFETY: `ptr` is a live allocation of the system allocator.
        unsafe { libc::malloc_usable_size(ptr.cast()) }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        let ptr = unsafe { System.alloc(layout) };
        GIVEN.fetch_add(given(ptr), Ordering::Relaxed);
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        GIVEN.fetch_sub(given(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        GIVEN.fetch_sub(given(ptr), Ordering::Relaxed);
        let ptr = unsafe { System.realloc(ptr, layout, new_size) };
        GIVEN.fetch_add(given(ptr), Ordering::Relaxed);
        ptr
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let days: u64 = std::env::var("BENCH_WARM_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(7);
    // The default windows (10 minutes, 7 days): what every output carries.
    let spec = FeatureSpec::for_model::<&str>(&[]).expect("spec");
    let events = days * CUSTOMERS * PER_CUSTOMER_PER_WEEK / 7;
    let mut stream = Stream::new(7, 1 << 24);
    let store = Arc::new(Store::default());
    let before = LIVE.load(Ordering::Relaxed);
    let given_before = GIVEN.load(Ordering::Relaxed);
    let mut engine = Engine::new(spec, &EngineConfig::default(), store.clone());
    for _ in 0..events {
        let (key, value) = stream.next_message();
        let _ = engine.prepare(0, 0, Some(key), value);
    }
    let total = LIVE.load(Ordering::Relaxed) - before;
    let total_given = GIVEN.load(Ordering::Relaxed) - given_before;
    let customers = store.customers();
    let held = store.window_events() as usize;
    let event_bytes = store.event_heap_bytes();
    println!("population: {CUSTOMERS} customers, {PER_CUSTOMER_PER_WEEK}/customer/week, {days} days = {events} events");
    println!("customers with state: {customers}, events held: {held}");
    println!("heap total: {:.1} MiB", total as f64 / (1 << 20) as f64);
    println!(
        "per held event: {:.1} bytes (event arrays incl. spare capacity: {:.1} MiB)",
        event_bytes as f64 / held as f64,
        event_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "per customer (map slot, id, array header): {:.1} bytes",
        (total - event_bytes) as f64 / customers as f64
    );
    println!(
        "as malloc gave it (usable sizes): heap total {:.1} MiB, per customer {:.1} bytes besides the event arrays",
        total_given as f64 / (1 << 20) as f64,
        total_given.saturating_sub(event_bytes) as f64 / customers as f64
    );
    drop(engine);
    drop(store);
    unique_customers();
}

/// A stream of customer ids never seen again (one event each, every 5 s of event time for 80
/// days), with and without the evictor's pass every simulated hour: the held state levels off at
/// what the windows can still reach instead of growing with every new id.
fn unique_customers() {
    const IDS: i64 = 80 * 86_400 / 5;
    let t0 = 1_767_225_600_000i64; // 2026-01-01
    for evict in [false, true] {
        let spec = FeatureSpec::for_model::<&str>(&[]).expect("spec");
        let span = fraudscore::window::Retention::new(spec.longest_window(), 3_600_000).span_ms();
        let store = Arc::new(Store::default());
        let before = LIVE.load(Ordering::Relaxed);
        let mut engine = Engine::new(spec, &EngineConfig::default(), store.clone());
        let mut most = 0;
        for i in 0..IDS {
            let value = format!(
                r#"{{"transaction_id":"u{i}","customer_id":"u{i}","amount":1,"timestamp":{}}}"#,
                t0 + i * 5_000
            );
            let _ = engine.prepare(0, 0, None, value.as_bytes());
            if evict && i % 720 == 0 {
                store.evict_idle(span);
            }
            most = most.max(store.customers());
        }
        let total = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "unique ids, {IDS} over 80 days, eviction {}: {} customers held at the end (most {most}), heap {:.1} MiB",
            if evict { "on" } else { "off" },
            store.customers(),
            total as f64 / (1 << 20) as f64
        );
    }
}
