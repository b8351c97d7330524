//! Writing window-state snapshots in the background: the pipeline thread marks the moment between
//! two messages, a thread of its own copies the state and writes it, so scoring never waits for the disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::shared::Shared;
use crate::snapshot::{self, SnapshotDir, StateCheck};
use crate::store::PartitionCapture;

/// Where snapshots go and what they must match: what a restore reads them with.
#[derive(Debug, Clone)]
pub struct SnapshotPlace {
    pub dir: SnapshotDir,
    pub check: StateCheck,
}

/// Periodic snapshots of the held partitions.
pub struct Snapshots {
    place: SnapshotPlace,
    shared: Arc<Shared>,
    interval: Duration,
    next: Instant,
    /// Set while the writer thread copies a round; a round is not begun before the last ended.
    busy: Arc<AtomicBool>,
    requests: Option<mpsc::Sender<Vec<PartitionCapture>>>,
    writer: Option<JoinHandle<()>>,
}

impl Snapshots {
    pub fn start(
        place: SnapshotPlace,
        interval: Duration,
        shared: Arc<Shared>,
    ) -> std::io::Result<Snapshots> {
        let (requests, rounds) = mpsc::channel::<Vec<PartitionCapture>>();
        let busy = Arc::new(AtomicBool::new(false));
        let writer = {
            let (place, shared, busy) = (place.clone(), shared.clone(), busy.clone());
            std::thread::Builder::new()
                .name("snapshots".into())
                .spawn(move || {
                    for captures in rounds {
                        let written =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                write(&place, &shared, &captures)
                            }));
                        if written.is_err() {
                            // A bug, not the disk: count it, end the capture, and go on.
                            shared.store.end_capture();
                            shared.metrics.snapshot_failures.inc();
                        }
                        busy.store(false, Ordering::Release);
                    }
                })?
        };
        Ok(Snapshots {
            place,
            shared,
            interval,
            next: Instant::now() + interval,
            busy,
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    pub fn place(&self) -> &SnapshotPlace {
        &self.place
    }

    /// On the pipeline thread, between two messages: begins a round when one is due.
    pub fn tick(&mut self) {
        if Instant::now() < self.next || self.busy.load(Ordering::Acquire) {
            return;
        }
        self.next = Instant::now() + self.interval;
        let held = self.shared.health.held();
        if held.is_empty() {
            return;
        }
        let positions = self.shared.offsets().consumed_positions(&held);
        let captures = self.shared.store.begin_capture(&positions);
        self.busy.store(true, Ordering::Release);
        if let Some(requests) = &self.requests {
            if requests.send(captures).is_err() {
                // The writer thread is gone (it panicked): no more snapshots, scoring goes on.
                self.shared.store.end_capture();
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    /// At shutdown, after the last commit: waits for a round in progress, then, if every output
    /// was acknowledged (the state then reflects exactly the committed offsets), writes one more,
    /// so that a restart replays almost nothing.
    pub fn finish(mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if self.shared.offsets().in_flight() > 0 {
            return;
        }
        let held = self.shared.health.held();
        if held.is_empty() {
            return;
        }
        let positions = self.shared.offsets().consumed_positions(&held);
        let captures = self.shared.store.begin_capture(&positions);
        write(&self.place, &self.shared, &captures);
    }
}

/// One round, timed and counted; a failure is logged and counted, never fatal.
fn write(place: &SnapshotPlace, shared: &Shared, captures: &[PartitionCapture]) {
    let started = Instant::now();
    let m = &shared.metrics;
    match snapshot::write_round(&place.dir, &shared.store, captures, place.check) {
        Ok(written) => {
            let seconds = started.elapsed().as_secs_f64();
            m.snapshot_seconds.observe(seconds);
            m.snapshot_bytes.set(written.bytes as i64);
            let positions: Vec<(i32, i64)> =
                captures.iter().map(|c| (c.partition, c.offset)).collect();
            if seconds > 1.0 {
                info!(
                    ?positions,
                    events = written.events,
                    bytes = written.bytes,
                    seconds,
                    "snapshots written"
                );
            } else {
                debug!(
                    ?positions,
                    events = written.events,
                    bytes = written.bytes,
                    seconds,
                    "snapshots written"
                );
            }
        }
        Err(e) => {
            m.snapshot_failures.inc();
            warn!(error = %e, "writing snapshots failed; scoring goes on, a restart rebuilds more from the topic");
        }
    }
}
