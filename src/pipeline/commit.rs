//! Committing input offsets (at least once): only positions below every unacknowledged output,
//! periodically while running and once more, synchronously, at the end.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode};
use tracing::warn;

use super::clients::{commit, GroupContext};
use crate::shared::Shared;

/// When and what to commit. Revocations commit on their own, in the rebalance callback.
pub struct Commits {
    topic: String,
    interval: Duration,
    next: Instant,
}

impl Commits {
    pub fn new(topic: String, interval: Duration) -> Commits {
        Commits {
            topic,
            interval,
            next: Instant::now() + interval,
        }
    }

    /// Commits what was acknowledged since the last commit, once per interval, without waiting
    /// for the answer (a failure comes back through the commit callback and is retried).
    pub fn tick(&mut self, consumer: &BaseConsumer<GroupContext>, shared: &Shared) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.interval;
        self.commit(consumer, shared, CommitMode::Async);
    }

    /// The last commit before stopping, waiting for the broker's answer.
    pub fn last(&mut self, consumer: &BaseConsumer<GroupContext>, shared: &Shared) {
        self.commit(consumer, shared, CommitMode::Sync);
    }

    fn commit(&self, consumer: &BaseConsumer<GroupContext>, shared: &Shared, mode: CommitMode) {
        let positions = shared.offsets().to_commit();
        if let Err(e) = commit(consumer, &self.topic, &positions, mode) {
            // Not fatal: a later commit covers these offsets.
            warn!(error = %e, "offset commit failed");
            shared.metrics.commit_failures.inc();
            let partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
            shared.offsets().commit_failed(&partitions);
        }
    }
}
