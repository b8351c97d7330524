//! Committing input offsets (at least once): only positions below every unacknowledged output,
//! periodically while running and once more, synchronously, at the end.
//!
//! Asynchronous commits report no result through rdkafka 0.39 (librdkafka only logs their
//! failures), so every position is offered again once a second: a failed commit, say one refused
//! during a rebalance, is made up for within a second instead of waiting for the partition to move.
//! The commit at stop has no next second: refused while the group rebalances, it is made again
//! once the rebalance is served, within [`STOP_COMMIT_LIMIT`].

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use super::clients::{commit, GroupContext};
use crate::shared::Shared;

/// How often every position is committed again, moved or not.
const REOFFER: Duration = Duration::from_secs(1);

/// How long the commit at stop is made again while the group rebalances.
const STOP_COMMIT_LIMIT: Duration = Duration::from_secs(5);

/// How long the rebalance is served between two tries of the commit at stop.
const SERVE: Duration = Duration::from_millis(100);

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
    ///
    /// A refusal because the group is rebalancing (a member joining, or this one's generation
    /// gone) is not retried by librdkafka, and the rebalance only moves on inside `poll`: so poll,
    /// then commit the same positions again. Whatever that poll returns is dropped, unscored and
    /// uncommitted; a partition it revokes commits its own position in the callback.
    pub fn last(&mut self, consumer: &BaseConsumer<GroupContext>, shared: &Shared) {
        let positions = shared.offsets().all_positions();
        let deadline = Instant::now() + STOP_COMMIT_LIMIT;
        loop {
            let error = match commit(consumer, &self.topic, &positions, CommitMode::Sync) {
                Ok(()) => return,
                Err(e) => e,
            };
            if !refused_for_rebalance(&error) || Instant::now() >= deadline {
                self.failed(shared, &positions, &error);
                return;
            }
            info!(%error, "commit at stop refused while the group rebalances; serving the rebalance and committing again");
            shared.metrics.commit_failures.inc();
            let served = Instant::now() + SERVE;
            while let Some(left) = served.checked_duration_since(Instant::now()) {
                let _ = consumer.poll(left);
            }
        }
    }

    fn commit(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        shared: &Shared,
        positions: &[(i32, i64)],
        mode: CommitMode,
    ) {
        if let Err(e) = commit(consumer, &self.topic, positions, mode) {
            self.failed(shared, positions, &e);
        }
    }

    fn failed(&self, shared: &Shared, positions: &[(i32, i64)], error: &KafkaError) {
        // Not fatal: a later commit covers these offsets, or the next owner re-scores them.
        warn!(%error, "offset commit failed");
        shared.metrics.commit_failures.inc();
        let partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
        shared.offsets().commit_failed(&partitions);
    }
}

/// Refusals that only the end of the group's rebalance mends (librdkafka treats them as final).
fn refused_for_rebalance(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
        )
    )
}
