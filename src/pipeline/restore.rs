//! Bringing an assigned partition's window state up to its committed offset before scoring from
//! it: kept as it was when the partition comes straight back, else loaded from its newest usable
//! snapshot, else rebuilt from the input topic.
//!
//! After loading a snapshot (or from the earliest retained offset without one), the partition is
//! replayed up to the committed offset through the same engine, without emitting; customers the
//! snapshot copied after some of those messages skip them. Scoring then carries on exactly as an
//! uninterrupted run would have.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tracing::{debug, info, warn};

use super::clients::GroupContext;
use super::snapshots::SnapshotPlace;
use crate::config::Config;
use crate::engine::Engine;
use crate::shared::Shared;
use crate::snapshot::{self, Snapshot};
use crate::spans::{self, Span};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Restores the newly `assigned` partitions and returns where each resumes. Partitions revoked
/// earlier keep their state, parked with the offset it reflects: if the group committed exactly
/// that offset the state is reused; otherwise it is dropped and restored.
pub fn restore(
    consumer: &BaseConsumer<GroupContext>,
    engine: &mut Engine,
    shared: &Shared,
    config: &Config,
    place: Option<&SnapshotPlace>,
    assigned: &[i32],
    stop: &AtomicBool,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let started = Instant::now();
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
    let committed = spans::committed(consumer, topic, assigned)?;

    let (mut plans, mut resumed) = (Vec::new(), Vec::new());
    let (mut applied, mut loaded) = (std::collections::HashMap::new(), 0u64);
    for &partition in assigned {
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        let to = match committed.get(&partition) {
            Some(&c) => c,
            None if resets_to_earliest(config) => low,
            None => high,
        };
        resumed.push((partition, to));
        let restored = |source: &str| {
            shared
                .metrics
                .partitions_restored
                .with_label_values(&[source])
                .inc()
        };
        if parked.get(&partition) == Some(&to) {
            restored("kept");
            info!(
                partition,
                offset = to,
                "state kept: the partition came back at the offset it left"
            );
            continue;
        }
        shared.store.release_partitions(&[partition]);
        let (mut from, mut from_snapshot) = (low, false);
        if let Some(snap) = place.and_then(|place| usable_snapshot(place, partition, to, shared)) {
            if snap.offset < low {
                warn!(
                    partition,
                    snapshot = snap.offset,
                    earliest = low,
                    "the input topic no longer holds the messages between the snapshot and its earliest offset; their events are missing from the state"
                );
            }
            info!(
                partition,
                offset = snap.offset,
                customers = snap.customers.len(),
                events = snap.events,
                replay = to - snap.offset.max(low),
                "state loaded from a snapshot"
            );
            restored("snapshot");
            from_snapshot = true;
            from = snap.offset.max(low);
            loaded += snap.events;
            applied.extend(snap.applied);
            shared
                .store
                .load_partition(partition, snap.marks, snap.customers);
        }
        if to > from {
            if !from_snapshot {
                restored("topic");
            }
            plans.push(Span {
                partition,
                from,
                to,
            });
        }
    }
    if !plans.is_empty() {
        engine.skip_applied(applied);
        let rebuilt = rebuild(engine, shared, config, &plans, stop);
        engine.forget_applied();
        rebuilt?;
    }
    if loaded > 0 || !plans.is_empty() {
        let seconds = started.elapsed().as_secs_f64();
        shared.metrics.restore_seconds.observe(seconds);
        shared.metrics.restore_events.inc_by(loaded);
        info!(
            seconds,
            from_snapshots = loaded,
            customers = shared.store.customers(),
            "window state restored"
        );
    }
    Ok(resumed)
}

/// The newest snapshot of the partition that passes every check and is complete at or before
/// the committed offset `to`. Snapshots failing a check are logged, counted and passed over.
fn usable_snapshot(
    place: &SnapshotPlace,
    partition: i32,
    to: i64,
    shared: &Shared,
) -> Option<Snapshot> {
    for (offset, path) in place.dir.list(partition) {
        if offset > to {
            debug!(partition, offset, committed = to, path = %path.display(), "snapshot ahead of the committed offset, not used");
            continue;
        }
        match snapshot::read(&path, partition, place.check) {
            Ok(snap) if snap.complete_at > to => {
                info!(partition, complete_at = snap.complete_at, committed = to, path = %path.display(), "snapshot holds messages after the committed offset, not used");
            }
            Ok(snap) => return Some(snap),
            Err(e) => {
                warn!(partition, path = %path.display(), error = %e, "snapshot ignored");
                shared
                    .metrics
                    .snapshots_ignored
                    .with_label_values(&[e.label()])
                    .inc();
            }
        }
    }
    None
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
                msg.offset(),
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
    shared.metrics.restore_events.inc_by(applied);
    info!(
        applied,
        seconds = started.elapsed().as_secs_f64(),
        "input replayed into the window state"
    );
    Ok(())
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
