//! Bringing an assigned partition's window state up to its committed offset before scoring from
//! it: kept as it was when the partition comes straight back, else rebuilt from the input topic.
//!
//! The state is a set of events and a per-partition maximum, so applying a message twice changes
//! nothing: rebuilding replays the partition from its earliest retained offset up to the committed
//! offset through the same engine, without emitting, and scoring then carries on exactly as an
//! uninterrupted run would have.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use super::clients::GroupContext;
use crate::config::Config;
use crate::engine::Engine;
use crate::shared::Shared;
use crate::spans::{self, Span};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
    let held = shared.health.held();
    let gone: Vec<i32> = parked
        .keys()
        .copied()
        .filter(|p| !assigned.contains(p) && !held.contains(p))
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
            plans.push(Span {
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
    plans: &[Span],
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    let started = Instant::now();
    let reader = spans::reader(config, "restore")?;
    info!(?plans, "rebuilding window state from the input topic");
    let (mut applied, mut last_report) = (0u64, Instant::now());
    spans::read(
        &reader,
        &config.kafka.input_topic,
        plans,
        stop,
        None,
        |msg| {
            // Rejections included: a message rejected then is rejected now and changes nothing.
            let _ = engine.prepare(
                msg.partition(),
                msg.key(),
                msg.payload().unwrap_or_default(),
            );
            applied += 1;
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                info!(
                    applied,
                    per_second = (applied as f64 / started.elapsed().as_secs_f64()) as u64,
                    "rebuilding window state"
                );
            }
        },
    )?;
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
