//! Reading the fraud-labels topic into the terminal state. A terminal's transactions come from
//! every input partition, so every instance reads the whole topic, by assignment outside the
//! consumer group (like a Kafka Streams global table), from its beginning at each start.
//!
//! A bad label is dead-lettered with its reason. Each instance reads every label, so the offset
//! up to which bad labels were dead-lettered is committed under the group `<group>-labels`, and a
//! restart or a second instance does not dead-letter them again (two instances racing on the same
//! bad label may both do it: at least once, as for transactions).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::Config;
use crate::decode::{self, Rejection};
use crate::engine::Decision;
use crate::output;
use crate::shared::Lanes;
use crate::spans;
use crate::terminals::{LabelAdmission, Terminals};
use crate::time::EventTime;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a missing labels topic is looked for again, and old labels evicted.
const RECHECK: Duration = Duration::from_secs(30);
const DLQ_TIMEOUT: Duration = Duration::from_secs(10);

type DlqProducer = ThreadedProducer<DefaultProducerContext>;

/// Starts the labels reader thread. Until it has read the topic up to where it ended at start,
/// `/readyz` is not ready.
pub fn spawn(
    config: &Config,
    lanes: Arc<Lanes>,
    terminals: Arc<Terminals>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    lanes.labels_loading(true);
    let config = config.clone();
    std::thread::Builder::new()
        .name("labels".into())
        .spawn(move || {
            let mut reader = LabelReader {
                config: &config,
                lanes: &lanes,
                terminals: &terminals,
            };
            while !stop.load(Ordering::Relaxed) {
                match reader.run(&stop) {
                    Ok(()) => return,
                    Err(e) => {
                        warn!(error = %e, topic = config.labels.topic, "reading labels failed; retrying");
                        sleep_unless_stopped(&stop, Duration::from_secs(5));
                    }
                }
            }
        })
}

struct LabelReader<'a> {
    config: &'a Config,
    lanes: &'a Lanes,
    terminals: &'a Terminals,
}

impl LabelReader<'_> {
    /// Reads until `stop`; an error means the clients must be made again.
    fn run(&mut self, stop: &AtomicBool) -> Result<(), KafkaError> {
        let topic = self.config.labels.topic.as_str();
        let consumer: BaseConsumer = self
            .config
            .client(&self.config.kafka.consumer)
            .set("group.id", format!("{}-labels", self.config.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        // Made at the first bad label: bad labels are rare, and an idle idempotent producer
        // per instance is not free for the broker (nisshi delayed other producers' records).
        let mut dlq: Option<DlqProducer> = None;
        let partitions = loop {
            match topic_partitions(&consumer, topic) {
                Some(p) => break p,
                None => {
                    warn!(
                        topic,
                        "the labels topic does not exist (yet): terminal features are 0 until it does"
                    );
                    self.lanes.labels_loading(false);
                    if sleep_unless_stopped(stop, RECHECK) {
                        return Ok(());
                    }
                }
            }
        };
        // Read to where each partition ends now before calling the state complete.
        let mut behind: HashMap<i32, i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, METADATA_TIMEOUT)?;
            if high > low {
                behind.insert(p, high);
            }
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        // Per partition, the offset below which bad labels were dead-lettered already.
        let dead_lettered = spans::committed(&consumer, topic, &partitions)?;
        consumer.assign(&tpl)?;
        let started = Instant::now();
        info!(topic, partitions = partitions.len(), "reading labels");
        let mut next_evict = Instant::now() + RECHECK;
        let mut marks = dead_lettered;
        while !stop.load(Ordering::Relaxed) {
            if behind.is_empty() && self.lanes.is_labels_loading() {
                self.lanes.labels_loading(false);
                info!(
                    seconds = started.elapsed().as_secs_f64(),
                    terminals = self.terminals.terminals(),
                    labels = self.terminals.labels_held(),
                    "labels read up to where the topic ended at start"
                );
            }
            if Instant::now() >= next_evict {
                next_evict = Instant::now() + RECHECK;
                self.terminals.evict();
            }
            let msg = match consumer.poll(Duration::from_millis(100)) {
                None => {
                    // The end may be a transaction marker or gone with retention: no message
                    // says so, the position does.
                    caught_up(&consumer, &mut behind);
                    continue;
                }
                Some(Err(e)) => {
                    warn!(error = %e, topic, "consuming labels");
                    continue;
                }
                Some(Ok(msg)) => msg,
            };
            let (partition, offset) = (msg.partition(), msg.offset());
            let live = !behind.contains_key(&partition);
            if behind.get(&partition).is_some_and(|&end| offset + 1 >= end) {
                behind.remove(&partition);
            }
            let value = msg.payload().unwrap_or_default();
            let label =
                decode::decode_label(value, self.config.engine.max_message_bytes).and_then(|l| {
                    decode::label_in_time(&l, self.config.engine.max_future_skew).map(|()| l)
                });
            match label {
                Ok(label) => self.add(&label, live),
                Err(rejection) => {
                    let first_time = offset >= marks.get(&partition).copied().unwrap_or(0);
                    if self.rejected(&consumer, &mut dlq, &msg, &rejection, first_time) {
                        marks.insert(partition, offset + 1);
                    }
                }
            }
        }
        Ok(())
    }

    fn add(&self, label: &decode::Label, live: bool) {
        let m = self.lanes.metrics();
        let outcome = match self.terminals.add(label) {
            LabelAdmission::Added | LabelAdmission::Changed if label.fraud => "fraud",
            LabelAdmission::Added | LabelAdmission::Changed => "genuine",
            LabelAdmission::Duplicate => "duplicate",
            LabelAdmission::TooOld => "too_old",
        };
        m.labels.with_label_values(&[outcome]).inc();
        // Labels read back at start are old news: their lag says nothing about the feed, and
        // their decisions were counted by the process that read them live.
        if !live || outcome == "duplicate" {
            return;
        }
        let lag_ms = EventTime::now().millis() - label.labelled_at.millis();
        m.label_lag_seconds.observe(lag_ms.max(0) as f64 / 1000.0);
        // Only the pipeline holding the customer finds the decision: counted once in the group.
        let decision = self.lanes.stores().find_map(|store| {
            let id_hash = store.id_hash(&label.transaction_id);
            store
                .outcome(label.customer_id.as_str(), label.timestamp, id_hash)
                .and_then(Decision::from_code)
        });
        if let Some(decision) = decision {
            let truth = if label.fraud { "fraud" } else { "genuine" };
            m.labelled_decisions
                .with_label_values(&[decision.as_str(), truth])
                .inc();
        }
    }

    /// Counts a bad label and, unless an earlier reader already did, dead-letters it and moves
    /// the group's mark past it. False if the dead letter could not be written: it is logged,
    /// the label skipped, and the mark left for the next start to try again.
    fn rejected(
        &self,
        consumer: &BaseConsumer,
        dlq: &mut Option<DlqProducer>,
        msg: &BorrowedMessage<'_>,
        rejection: &Rejection,
        first_time: bool,
    ) -> bool {
        let m = self.lanes.metrics();
        m.labels.with_label_values(&["dlq"]).inc();
        if !first_time {
            return true;
        }
        let producer = match dlq {
            Some(p) => Ok(&*p),
            None => self
                .config
                .client(&self.config.kafka.producer)
                .set("enable.idempotence", "false")
                .create()
                .map(|p| &*dlq.insert(p)),
        };
        match producer.and_then(|p| self.dead_letter(consumer, p, msg, rejection)) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, partition = msg.partition(), offset = msg.offset(), "a bad label could not be dead-lettered; skipped");
                false
            }
        }
    }

    fn dead_letter(
        &self,
        consumer: &BaseConsumer,
        dlq: &DlqProducer,
        msg: &BorrowedMessage<'_>,
        rejection: &Rejection,
    ) -> Result<(), KafkaError> {
        let m = self.lanes.metrics();
        let reason = rejection.reason.code();
        warn!(reason, error = %rejection.message, partition = msg.partition(), offset = msg.offset(), "label dead-lettered");
        let headers = output::dead_letter_headers(
            msg.headers().map(|h| h.detach()).unwrap_or_default(),
            reason,
            &rejection.message,
            &self.config.labels.topic,
            msg.partition(),
            msg.offset(),
        );
        let mut record =
            BaseRecord::<[u8], [u8]>::to(&self.config.kafka.dlq_topic).headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        dlq.send(record).map_err(|(e, _)| e)?;
        // Bad labels are rare: waiting for this one keeps the mark honest.
        dlq.flush(DLQ_TIMEOUT)?;
        m.dlq.with_label_values(&[reason]).inc();
        let mut mark = TopicPartitionList::new();
        mark.add_partition_offset(
            &self.config.labels.topic,
            msg.partition(),
            Offset::Offset(msg.offset() + 1),
        )?;
        consumer.commit(&mark, CommitMode::Sync)?;
        Ok(())
    }
}

/// Drops from `behind` the partitions whose position has reached the end they had at start.
fn caught_up(consumer: &BaseConsumer, behind: &mut HashMap<i32, i64>) {
    if behind.is_empty() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    for e in positions.elements() {
        if let Offset::Offset(position) = e.offset() {
            if behind
                .get(&e.partition())
                .is_some_and(|&end| position >= end)
            {
                behind.remove(&e.partition());
            }
        }
    }
}

/// The topic's partitions, if it exists.
fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> Option<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .ok()?;
    let t = metadata.topics().first()?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(t.partitions().iter().map(|p| p.id()).collect())
}

/// Sleeps up to `limit`; true if `stop` was set meanwhile.
fn sleep_unless_stopped(stop: &AtomicBool, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.load(Ordering::Relaxed)
}
