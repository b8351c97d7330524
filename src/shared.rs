//! State shared by the pipeline thread, the Kafka client callbacks and the HTTP server.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fraudscore_contract::OffsetTracker;

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
    /// `/readyz`.
    labels_loading: AtomicBool,
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

/// Everything more than one thread touches; see each field for who writes and who reads it.
pub struct Shared {
    /// Written by the pipeline thread and both client callbacks; read by `/metrics`.
    pub metrics: Metrics,
    /// Written by the pipeline thread (the engine) and the rebalance callback (release on
    /// revocation); read by `/customers/{id}` and the state gauges.
    pub store: Arc<Store>,
    /// Written by the labels reader; read by the engine, `/terminals/{id}` and the gauges.
    pub terminals: Arc<Terminals>,
    pub health: Health,
    /// Written by the pipeline thread (consumed), the delivery callback (acknowledged) and the
    /// rebalance and commit callbacks (forget, commit failed); read when committing.
    offsets: Mutex<OffsetTracker>,
}

impl Shared {
    pub fn new(metrics: Metrics, store: Arc<Store>, terminals: Arc<Terminals>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics,
            store,
            terminals,
            health: Health::default(),
            offsets: Mutex::default(),
        })
    }

    /// The Prometheus text, with the state gauges read at this moment.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.ready.set(i64::from(self.health.is_ready()));
        m.customers.set(self.store.customers() as i64);
        m.window_events.set(self.store.window_events());
        m.customers_full.inc_by(self.store.take_full_refusals());
        m.terminals.set(self.terminals.terminals() as i64);
        m.terminal_labels.set(self.terminals.labels_held());
        m.state_horizon_seconds.reset();
        for (partition, ms) in self.store.horizons() {
            m.state_horizon_seconds
                .with_label_values(&[partition.to_string()])
                .set(ms as f64 / 1000.0);
        }
        m.render()
    }

    pub fn offsets(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic elsewhere must not stop deliveries being recorded: the data is still consistent.
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }
}
