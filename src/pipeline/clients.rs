//! The two Kafka clients' settings and callbacks: deliveries acknowledge offsets, rebalances hand
//! partitions over, commits report failures.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::shared::Shared;

use super::FLUSH_TIMEOUT;

/// What an output is, for the outcome label of `fraudscore_transactions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Scored,
    DeadLettered,
    /// A shadow verdict on the shadow topic: the second output of a transaction counted as scored.
    Shadow,
}

impl Outcome {
    /// The transaction's outcome label; none for an output beside its main one.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Outcome::Scored => Some("scored"),
            Outcome::DeadLettered => Some("dlq"),
            Outcome::Shadow => None,
        }
    }
}

/// Where an output came from. Made by the pipeline thread, carried through the producer, and
/// read by the delivery callback on the producer's thread.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
    /// Which holding of the partition the input was consumed in.
    pub epoch: fraudscore_contract::Epoch,
    /// When the input was consumed, for `fraudscore_processing_seconds`.
    pub consumed_at: Instant,
    pub outcome: Outcome,
}

/// An output the producer failed to deliver: handed from the delivery callback to the pipeline
/// thread, which produces it again, dead-letters it truncated, or stops.
pub struct Failed {
    pub error: KafkaError,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
    pub delivery: Delivery,
}

/// Producer callbacks, on the producer's polling thread.
pub struct DeliveryContext {
    pub shared: Arc<Shared>,
    /// Failed deliveries, received by the pipeline thread.
    pub failed: Mutex<Sender<Failed>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                if let Some(outcome) = delivery.outcome.label() {
                    let m = &self.shared.metrics;
                    m.processing_seconds
                        .observe(delivery.consumed_at.elapsed().as_secs_f64());
                    m.transactions.with_label_values(&[outcome]).inc();
                }
                self.shared.offsets().acknowledged(
                    delivery.partition,
                    delivery.offset,
                    delivery.epoch,
                );
            }
            Err((error, msg)) => {
                let failed = Failed {
                    error: error.clone(),
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(|h| h.detach()),
                    delivery: *delivery,
                };
                let sender = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                // The receiver lives as long as the pipeline; after it, nothing is committed anyway.
                let _ = sender.send(failed);
            }
        }
    }
}

pub type OutputProducer = ThreadedProducer<DeliveryContext>;

/// Consumer callbacks, run on the pipeline thread inside `poll`.
pub struct GroupContext {
    pub shared: Arc<Shared>,
    pub producer: Arc<OutputProducer>,
    pub input_topic: String,
    /// Partitions revoked during the last `poll`: written here, taken by the pipeline right after
    /// `poll` returns, so that it drops what it still holds of them.
    pub revoked: Mutex<Vec<i32>>,
    /// Partitions assigned during the last `poll`, taken by the pipeline to restore their state
    /// before it scores anything of them. `Some`, possibly empty, once any assignment came: even
    /// an empty one settles what becomes of parked partitions.
    pub assigned: Mutex<Option<Vec<i32>>>,
    /// Revoked partitions whose window state is kept, with the offset up to which it reflects
    /// the partition: reused if the partition comes back committed at that offset (an eager
    /// rebalance revokes everything and hands most of it straight back).
    pub parked: Mutex<HashMap<i32, i64>>,
}

impl GroupContext {
    pub fn new(shared: Arc<Shared>, producer: Arc<OutputProducer>, input_topic: String) -> Self {
        GroupContext {
            shared,
            producer,
            input_topic,
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            parked: Mutex::default(),
        }
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *lock(&self.revoked))
    }

    /// Partitions assigned since the last call, if any assignment came.
    pub fn take_assigned(&self) -> Option<Vec<i32>> {
        lock(&self.assigned).take()
    }

    /// Parked partitions and the offsets their state reflects.
    pub fn take_parked(&self) -> HashMap<i32, i64> {
        std::mem::take(&mut *lock(&self.parked))
    }
}

/// Every update under these locks is one statement: a panic elsewhere leaves them consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.input_topic) else {
            return;
        };
        for (id, p) in &topic.partitions {
            if p.partition >= 0 && p.consumer_lag >= 0 {
                self.shared
                    .metrics
                    .consumer_lag
                    .with_label_values(&[id.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        info!(?partitions, "partitions revoked");
        self.shared.health.revoked(&partitions);
        // Hand over everything acknowledged so far, so that the next owner repeats little.
        if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
            warn!(error = %e, "flush before revocation incomplete; the next owner re-scores the rest");
        }
        let positions = self.shared.offsets().positions(&partitions);
        if let Err(e) = commit(consumer, &self.input_topic, &positions, CommitMode::Sync) {
            warn!(error = %e, "commit on revocation failed; the next owner re-scores from the last commit");
            self.shared.metrics.commit_failures.inc();
        }
        // The state stays, parked with the offset it reflects, until the next assignment says
        // whether the partition came back.
        let consumed = self.shared.offsets().consumed_positions(&partitions);
        lock(&self.parked).extend(consumed);
        self.shared.offsets().forget(&partitions);
        for p in &partitions {
            let _ = self
                .shared
                .metrics
                .consumer_lag
                .remove_label_values(&[&p.to_string()]);
        }
        lock(&self.revoked).extend(partitions);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "partitions assigned");
                // Every rebalance ends in an assignment, empty or not, for every member.
                self.shared.metrics.rebalances.inc();
                // A cooperative rebalance may assign nothing new: nothing to restore then.
                if !partitions.is_empty() {
                    self.shared.health.restoring(true);
                }
                self.shared.health.assigned(&partitions);
                lock(&self.assigned)
                    .get_or_insert_default()
                    .extend(partitions);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let Err(error) = result else { return };
        let partitions: Vec<i32> = offsets.elements().iter().map(|e| e.partition()).collect();
        warn!(%error, ?partitions, "offset commit failed; retrying with the next commit");
        self.shared.metrics.commit_failures.inc();
        self.shared.offsets().commit_failed(&partitions);
    }
}

/// Commits these positions (next offset to read) of the input topic.
pub fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    positions: &[(i32, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in positions {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&tpl, mode)
}
