//! State shared by a pipeline thread, its Kafka client callbacks and the HTTP server, and the pipelines' state seen together.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use fraudscore_contract::OffsetTracker;

use crate::features::FeatureSpec;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::terminals::Terminals;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once by `Pipeline::new` after the model is loaded; read by `/readyz`.
    model_loaded: AtomicBool,
    /// Input partitions this instance holds. Written by the rebalance callbacks (on the pipeline
    /// thread, inside `poll`), read by `/readyz`. A set, not a flag: a cooperative rebalance
    /// revokes some partitions and keeps the others.
    assigned: Mutex<BTreeSet<i32>>,
    /// Set by the rebalance callback when partitions are assigned, cleared by the pipeline once
    /// their state is restored; read by `/readyz`.
    restoring: AtomicBool,
    /// Set while the labels reader reads the labels topic up to where it ended at start; read by
    /// `/readyz` and every pipeline (one flag for all).
    labels_loading: Arc<AtomicBool>,
}

impl Health {
    pub fn model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    pub fn is_model_loaded(&self) -> bool {
        self.model_loaded.load(Ordering::Relaxed)
    }

    pub fn assigned(&self, partitions: &[i32]) {
        self.partitions().extend(partitions);
    }

    pub fn revoked(&self, partitions: &[i32]) {
        let mut held = self.partitions();
        for p in partitions {
            held.remove(p);
        }
    }

    /// Partitions held now, ascending.
    pub fn held(&self) -> Vec<i32> {
        self.partitions().iter().copied().collect()
    }

    pub fn restoring(&self, yes: bool) {
        self.restoring.store(yes, Ordering::Relaxed);
    }

    pub fn is_restoring(&self) -> bool {
        self.restoring.load(Ordering::Relaxed)
    }

    pub fn labels_loading(&self, yes: bool) {
        self.labels_loading.store(yes, Ordering::Relaxed);
    }

    pub fn is_labels_loading(&self) -> bool {
        self.labels_loading.load(Ordering::Relaxed)
    }

    /// Scoring: the model is loaded, partitions are held, and neither the window state nor the
    /// labels are still being read.
    pub fn is_ready(&self) -> bool {
        self.is_model_loaded()
            && self.has_partitions()
            && !self.is_restoring()
            && !self.is_labels_loading()
    }

    pub fn has_partitions(&self) -> bool {
        !self.partitions().is_empty()
    }

    fn partitions(&self) -> MutexGuard<'_, BTreeSet<i32>> {
        // The set stays consistent even if a holder panicked: every update is one call.
        self.assigned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything more than one thread of one pipeline touches; see each field for who writes and who
/// reads it. With `pipeline.threads` above 1 each pipeline has its own, with the metrics and the
/// terminals in common ([`Lanes`] sees them all).
pub struct Shared {
    /// Written by the pipeline thread and both client callbacks; read by `/metrics`.
    pub metrics: Metrics,
    /// Written by the pipeline thread (the engine) and the rebalance callback (release on
    /// revocation); read by `/customers/{id}` and the state gauges.
    pub store: Arc<Store>,
    /// Written by the labels reader; read by the engine, `/terminals/{id}` and the gauges.
    pub terminals: Arc<Terminals>,
    pub health: Health,
    /// The features computed now: set by a pipeline swapping in a reloaded model, read by the
    /// lookups.
    pub served: Arc<Served>,
    /// Written by the pipeline thread (consumed), the delivery callback (acknowledged) and the
    /// rebalance and commit callbacks (forget, commit failed); read when committing.
    offsets: Mutex<OffsetTracker>,
    /// Shared by the instance's pipelines, which leave the group together.
    pub departure: Arc<Departure>,
}

impl Shared {
    /// One pipeline's state, with what all pipelines of the instance have in `common`.
    pub fn new(common: &Common, store: Arc<Store>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics: common.metrics.clone(),
            store,
            terminals: common.terminals.clone(),
            health: Health {
                labels_loading: common.labels_loading.clone(),
                ..Health::default()
            },
            served: common.served.clone(),
            offsets: Mutex::default(),
            departure: common.departure.clone(),
        })
    }

    pub fn offsets(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic elsewhere must not stop deliveries being recorded: the data is still consistent.
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What every pipeline of an instance shares.
#[derive(Clone)]
pub struct Common {
    pub metrics: Metrics,
    pub terminals: Arc<Terminals>,
    /// Set while the labels topic is read up to where it ended at start.
    pub labels_loading: Arc<AtomicBool>,
    pub served: Arc<Served>,
    pub departure: Arc<Departure>,
}

/// The pipelines of one instance leave the consumer group together: the first to leave starts a
/// rebalance, which fails the last commits of those still making them, and their partitions'
/// next owners would re-score what they had acknowledged.
pub struct Departure {
    pipelines: usize,
    ready: Mutex<usize>,
    all_ready: Condvar,
}

impl Departure {
    pub fn new(pipelines: usize) -> Arc<Departure> {
        Arc::new(Departure {
            pipelines,
            ready: Mutex::new(0),
            all_ready: Condvar::new(),
        })
    }

    /// This pipeline made its last commit: waits until every one has, or `limit` passed (one
    /// that panicked never will).
    pub fn ready_and_wait(&self, limit: Duration) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        *ready += 1;
        self.all_ready.notify_all();
        let deadline = Instant::now() + limit;
        while *ready < self.pipelines {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            ready = match self.all_ready.wait_timeout(ready, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The feature spec the engines compute, as the model in use (and its shadow and rules) need.
pub struct Served(RwLock<Arc<FeatureSpec>>);

impl Served {
    pub fn new(spec: Arc<FeatureSpec>) -> Arc<Served> {
        Arc::new(Served(RwLock::new(spec)))
    }

    pub fn get(&self) -> Arc<FeatureSpec> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, spec: Arc<FeatureSpec>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = spec;
    }
}

/// Every pipeline's state, for what looks at the instance as a whole: `/metrics`, `/readyz`,
/// `/customers`, the labels reader and the evictor.
pub struct Lanes {
    lanes: Vec<Arc<Shared>>,
}

impl Lanes {
    /// At least one pipeline's state; all share their metrics, terminals and labels flag.
    pub fn new(lanes: Vec<Arc<Shared>>) -> Arc<Lanes> {
        assert!(!lanes.is_empty(), "an instance runs at least one pipeline");
        Arc::new(Lanes { lanes })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Shared>> {
        self.lanes.iter()
    }

    fn first(&self) -> &Shared {
        &self.lanes[0]
    }

    pub fn metrics(&self) -> &Metrics {
        &self.first().metrics
    }

    pub fn terminals(&self) -> &Arc<Terminals> {
        &self.first().terminals
    }

    /// The features computed now (the reloaded model's, after a reload).
    pub fn spec(&self) -> Arc<FeatureSpec> {
        self.first().served.get()
    }

    /// The labels flag, common to all pipelines.
    pub fn labels_loading(&self, yes: bool) {
        self.first().health.labels_loading(yes);
    }

    pub fn is_labels_loading(&self) -> bool {
        self.first().health.is_labels_loading()
    }

    pub fn is_model_loaded(&self) -> bool {
        self.lanes.iter().all(|l| l.health.is_model_loaded())
    }

    pub fn is_restoring(&self) -> bool {
        self.lanes.iter().any(|l| l.health.is_restoring())
    }

    /// Partitions held by any pipeline, ascending.
    pub fn held(&self) -> Vec<i32> {
        let mut held: Vec<i32> = self.lanes.iter().flat_map(|l| l.health.held()).collect();
        held.sort_unstable();
        held
    }

    pub fn has_partitions(&self) -> bool {
        self.lanes.iter().any(|l| l.health.has_partitions())
    }

    /// Scoring: every model loaded, partitions held, and no state or labels still being read.
    pub fn is_ready(&self) -> bool {
        self.is_model_loaded()
            && self.has_partitions()
            && !self.is_restoring()
            && !self.is_labels_loading()
    }

    /// The stores of the pipelines; a customer is in at most one (its partition's).
    pub fn stores(&self) -> impl Iterator<Item = &Arc<Store>> {
        self.lanes.iter().map(|l| &l.store)
    }

    /// The Prometheus text, with the state gauges read at this moment.
    pub fn render_metrics(&self) -> String {
        let m = self.metrics();
        m.ready.set(i64::from(self.is_ready()));
        m.customers
            .set(self.stores().map(|s| s.customers() as i64).sum());
        m.window_events
            .set(self.stores().map(|s| s.window_events()).sum());
        m.customers_full
            .inc_by(self.stores().map(|s| s.take_full_refusals()).sum());
        let terminals = self.terminals();
        m.terminals.set(terminals.terminals() as i64);
        m.terminal_labels.set(terminals.labels_held());
        m.state_horizon_seconds.reset();
        for (partition, ms) in self.stores().flat_map(|s| s.horizons()) {
            m.state_horizon_seconds
                .with_label_values(&[partition.to_string()])
                .set(ms as f64 / 1000.0);
        }
        m.pipeline_partitions.reset();
        for (i, lane) in self.lanes.iter().enumerate() {
            m.pipeline_partitions
                .with_label_values(&[i.to_string()])
                .set(lane.health.held().len() as i64);
        }
        m.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_leave_together_or_after_the_limit() {
        let departure = Departure::new(2);
        // Timed from before the spawn: a thread that starts late must not shorten the wait seen.
        let started = Instant::now();
        let first = {
            let d = departure.clone();
            std::thread::spawn(move || {
                d.ready_and_wait(Duration::from_secs(30));
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!first.is_finished(), "the first waits for the second");
        departure.ready_and_wait(Duration::from_secs(30));
        let waited = first.join().unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        // One that never comes is waited for only up to the limit.
        let alone = Departure::new(2);
        let started = Instant::now();
        alone.ready_and_wait(Duration::from_millis(200));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
