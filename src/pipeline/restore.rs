//! Bringing an assigned partition's window state up to its committed offset before scoring from
//! it: kept as it was when the partition comes straight back, else rebuilt from the input topic.
//!
//! The state is a set of events and a per-partition maximum, so applying a message twice changes
//! nothing: rebuilding replays the partition from its earliest retained offset up to the committed
//! offset through the same engine, without emitting, and scoring then carries on exactly as an
//! uninterrupted run would have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::clients::GroupContext;
use crate::config::Config;
use crate::engine::Engine;
use crate::shared::Shared;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where scoring of a partition starts, and where its rebuild starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    partition: i32,
    /// The earliest offset retained.
    from: i64,
    /// The committed offset: scoring resumes here, so the state must hold everything before it.
    to: i64,
}

/// Restores the newly `assigned` partitions and returns where each resumes. Partitions revoked
/// earlier keep their state, parked with the offset it reflects: if the group committed exactly
/// that offset the state is reused; otherwise it is dropped and rebuilt.
pub fn restore(
    consumer: &BaseConsumer<GroupContext>,
    engine: &mut Engine,
    shared: &Shared,
    config: &Config,
    assigned: &[i32],
    stop: &AtomicBool,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let topic = &config.kafka.input_topic;
    let parked = consumer.context().take_parked();
    // Parked partitions not coming back belong to someone else now.
    let gone: Vec<i32> = parked
        .keys()
        .copied()
        .filter(|p| !assigned.contains(p) && !shared.health.held().contains(p))
        .collect();
    shared.store.release_partitions(&gone);
    if assigned.is_empty() {
        return Ok(Vec::new());
    }
    let committed = committed_offsets(consumer, topic, assigned)?;

    let (mut plans, mut resumed) = (Vec::new(), Vec::new());
    for &partition in assigned {
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let to = match committed.get(&partition) {
            Some(&c) => c,
            None if resets_to_earliest(config) => low,
            None => high,
        };
        resumed.push((partition, to));
        if parked.get(&partition) == Some(&to) {
            info!(
                partition,
                offset = to,
                "state kept: the partition came back at the offset it left"
            );
            continue;
        }
        shared.store.release_partitions(&[partition]);
        if to > low {
            plans.push(Plan {
                partition,
                from: low,
                to,
            });
        }
    }
    if !plans.is_empty() {
        rebuild(engine, shared, config, &plans, stop)?;
    }
    Ok(resumed)
}

/// Replays each plan's offsets through the engine, emitting nothing.
fn rebuild(
    engine: &mut Engine,
    shared: &Shared,
    config: &Config,
    plans: &[Plan],
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    let topic = &config.kafka.input_topic;
    let started = Instant::now();
    let reader: BaseConsumer = config
        .client(&config.kafka.consumer)
        // Reads by assignment, commits nothing: the group id only satisfies librdkafka.
        .set("group.id", format!("{}-restore", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for plan in plans {
        tpl.add_partition_offset(topic, plan.partition, Offset::Offset(plan.from))?;
        left.insert(plan.partition, plan.to);
    }
    reader.assign(&tpl)?;
    info!(?plans, "rebuilding window state from the input topic");
    let (mut applied, mut last_report) = (0u64, Instant::now());
    while !left.is_empty() && !stop.load(Ordering::Relaxed) {
        let msg = match reader.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                warn!(error = %e, "reading the input topic to rebuild state");
                continue;
            }
            None => continue,
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        let Some(&to) = left.get(&partition) else {
            continue;
        };
        if offset < to {
            // Rejections included: a message rejected then is rejected now and changes nothing.
            let _ = engine.prepare(partition, msg.key(), msg.payload().unwrap_or_default());
            applied += 1;
        }
        if offset + 1 >= to {
            left.remove(&partition);
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            info!(
                applied,
                per_second = (applied as f64 / started.elapsed().as_secs_f64()) as u64,
                partitions_left = left.len(),
                "rebuilding window state"
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    shared.metrics.restore_seconds.observe(seconds);
    shared.metrics.restore_events.inc_by(applied);
    info!(
        applied,
        seconds,
        customers = shared.store.customers(),
        "window state rebuilt"
    );
    Ok(())
}

/// The group's committed offsets of these partitions; absent where none is committed.
fn committed_offsets(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, METADATA_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Where the consumer starts a partition with no committed offset (librdkafka's default: latest).
fn resets_to_earliest(config: &Config) -> bool {
    config
        .kafka
        .consumer
        .get("auto.offset.reset")
        .or_else(|| config.kafka.common.get("auto.offset.reset"))
        .is_some_and(|v| matches!(v.0.as_str(), "earliest" | "smallest" | "beginning"))
}
