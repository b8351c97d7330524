//! Reading stretches of a topic's partitions by assignment, outside any consumer group: what a
//! state restore and an audit replay; and a group's committed offsets, where such a read ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::config::Config;

/// Offsets `[from, to)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Every span was read to its end.
    Complete,
    /// `stop` was set first.
    Stopped,
    /// No message came for the stall limit.
    Stalled,
}

/// A consumer that reads by assignment and commits nothing, with the service's client settings;
/// the group id (`<group>-<role>`) only satisfies librdkafka.
pub fn reader(config: &Config, role: &str) -> Result<BaseConsumer, KafkaError> {
    config
        .client(&config.kafka.consumer)
        .set("group.id", format!("{}-{role}", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
}

/// The consumer group's committed offsets of these partitions; absent where none is committed.
pub fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Calls `each` on every message of the spans, in offset order within each partition, until all
/// are read, `stop` is set, or (with a `stall` limit) nothing arrives for that long.
pub fn read(
    reader: &BaseConsumer,
    topic: &str,
    spans: &[Span],
    stop: &AtomicBool,
    stall: Option<Duration>,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<Read, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for span in spans.iter().filter(|s| s.to > s.from) {
        tpl.add_partition_offset(topic, span.partition, Offset::Offset(span.from))?;
        left.insert(span.partition, span.to);
    }
    reader.assign(&tpl)?;
    let mut last = Instant::now();
    while !left.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Ok(Read::Stopped);
        }
        if stall.is_some_and(|limit| last.elapsed() > limit) {
            return Ok(Read::Stalled);
        }
        let msg = match reader.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                warn!(error = %e, topic, "reading");
                continue;
            }
            None => continue,
        };
        last = Instant::now();
        let (partition, offset) = (msg.partition(), msg.offset());
        let Some(&to) = left.get(&partition) else {
            continue;
        };
        if offset < to {
            each(&msg);
        }
        if offset + 1 >= to {
            left.remove(&partition);
        }
    }
    Ok(Read::Complete)
}
