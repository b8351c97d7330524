//! Committing input offsets (at least once): only positions below every unacknowledged output,
//! periodically while running and once more, synchronously, at the end.
//!
//! Asynchronous commits report no result through rdkafka 0.39 (librdkafka only logs their
//! failures), so every position is offered again once a second: a failed commit, say one refused
//! during a rebalance, is made up for within a second instead of waiting for the partition to move.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode};
use tracing::warn;

use super::clients::{commit, GroupContext};
use crate::shared::Shared;

/// How often every position is committed again, moved or not.
const REOFFER: Duration = Duration::from_secs(1);

/// When and what to commit. Revocations commit on their own, in the rebalance callback.
pub struct Commits {
    topic: String,
    interval: Duration,
    next: Instant,
    next_reoffer: Instant,
}

impl Commits {
    pub fn new(topic: String, interval: Duration) -> Commits {
        Commits {
            topic,
            interval,
            next: Instant::now() + interval,
            next_reoffer: Instant::now() + REOFFER,
        }
    }

    /// Commits what was acknowledged since the last commit, once per interval, without waiting
    /// for the answer (a failure comes back through the commit callback and is retried).
    pub fn tick(&mut self, consumer: &BaseConsumer<GroupContext>, shared: &Shared) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.interval;
        let positions = if Instant::now() >= self.next_reoffer {
            self.next_reoffer = Instant::now() + REOFFER;
            shared.offsets().all_positions()
        } else {
            shared.offsets().to_commit()
        };
        self.commit(consumer, shared, &positions, CommitMode::Async);
    }

    /// The last commit before stopping, of every position, waiting for the broker's answer.
    pub fn last(&mut self, consumer: &BaseConsumer<GroupContext>, shared: &Shared) {
        let positions = shared.offsets().all_positions();
        self.commit(consumer, shared, &positions, CommitMode::Sync);
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        shared: &Shared,
        positions: &[(i32, i64)],
        mode: CommitMode,
    ) {
        if let Err(e) = commit(consumer, &self.topic, positions, mode) {
            // Not fatal: a later commit covers these offsets.
            warn!(error = %e, "offset commit failed");
            shared.metrics.commit_failures.inc();
            let partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
            shared.offsets().commit_failed(&partitions);
        }
    }
}
