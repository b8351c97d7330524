//! Checking what the service emitted: every scored transaction's features recomputed from the
//! input topic by the same engine, as one uninterrupted run would have computed them.
//!
//! The reference replays each input partition in offset order (the order the service consumes
//! it), so whatever restarts, crashes and rebalances the service went through, its outputs must
//! match message for message. For a model with terminal features, every label of the labels
//! topic is known to the reference from its `labelled_at` on, as to the service once it has read
//! it. Reads the topics up to their ends as of the start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use serde_json::Value;

use crate::config::Config;
use crate::decode;
use crate::engine::Engine;
use crate::model::{Model, ModelError};
use crate::replay::LabelFeed;
use crate::spans::{self, Span};
use crate::store::Store;
use crate::terminals::Terminals;
use crate::time::EventTime;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Reading a topic gives up when nothing arrives for this long before its end.
const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model.shadow or rules: {0}")]
    Served(#[from] crate::features::FeatureError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error("reading {topic}: no message for {STALL:?} before its end")]
    Stalled { topic: String },
}

#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The service's configuration: brokers, topics, client properties, model, engine settings.
    pub config: Config,
    /// Only transactions with a timestamp at most this long before now are checked (all are
    /// replayed, for their state).
    pub since: Option<Duration>,
    /// How many mismatches and missing ids to show.
    pub examples: usize,
}

/// What the audit found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AuditReport {
    pub inputs: u64,
    /// Outputs compared with the reference.
    pub checked: u64,
    /// Outputs whose features differ from the reference (or that the reference rejected).
    pub mismatches: u64,
    /// Transactions the reference scores that have no output.
    pub missing: u64,
    pub examples: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.mismatches == 0 && self.missing == 0
    }
}

/// One message as read: partition, offset, key, value.
type Record = (i32, i64, Option<Vec<u8>>, Vec<u8>);

pub fn run(opts: &AuditOptions) -> Result<AuditReport, AuditError> {
    let config = &opts.config;
    let horizon = opts
        .since
        .map(|d| EventTime::now().millis() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4));
    let checked = |ts: i64| horizon.is_none_or(|h| ts >= h);

    let (mut inputs, partitions) = read_to_end(config, &config.kafka.input_topic)?;
    inputs.sort_by_key(|(p, o, _, _)| (*p, *o));
    let model = Model::load(&config.model.path, 1)?;
    // The outputs hold a shadow model's features too.
    let shadow = match &config.model.shadow {
        Some(path) => Some(Model::load(path, 1)?),
        None => None,
    };
    let rules = config
        .rules
        .file
        .as_deref()
        .map(crate::rules::Rules::load)
        .transpose()?;
    let spec = crate::scorer::served(&model, shadow.as_ref(), rules.as_ref())?;
    let engine_config = config.engine.engine_config(partitions != 1);
    // Labels count from their labelled_at on, so all can be known up front, kept however old.
    let terminals = Arc::new(Terminals::new(i64::MAX / 4, spec.terminal_windows()));
    if !spec.terminal_windows().is_empty() {
        let (labels, _) = read_to_end(config, &config.labels.topic)?;
        let labels = labels
            .iter()
            .filter_map(|(_, _, _, v)| {
                decode::decode_label(v, engine_config.max_message_bytes).ok()
            })
            .filter(|l| decode::label_in_time(l, engine_config.max_future_skew).is_ok())
            .collect();
        let mut feed = LabelFeed::new(labels, terminals.clone());
        feed.until(EventTime::END);
    }
    // The service's own id seed (read, never made here), so that transactions at one instant add
    // up in its order and their sums agree to the last bit.
    let store = match crate::snapshot::existing_state_seed(&config.state.dir) {
        Some(seed) => Store::with_seed(seed),
        None => {
            tracing::warn!(
                dir = %config.state.dir.display(),
                "no id-seed in the state directory (snapshots off, or another host): sums of a customer's transactions at one instant may differ from the service's in the last bit"
            );
            Store::default()
        }
    };
    let mut engine = Engine::new(spec, &engine_config, Arc::new(store)).with_terminals(terminals);
    // Transaction id → (features as the output writes them, timestamp): the first scoring only,
    // as a re-delivery is scored from the state like the original.
    let mut reference: HashMap<String, (Value, i64)> = HashMap::new();
    for (partition, offset, key, value) in &inputs {
        let Ok(prepared) = engine.prepare(*partition, *offset, key.as_deref(), value) else {
            continue;
        };
        let features =
            serde_json::to_value(engine.spec().named(&prepared.features)).unwrap_or(Value::Null);
        let t = prepared.transaction;
        reference
            .entry(t.transaction_id.into_string())
            .or_insert((features, t.timestamp.millis()));
    }

    let (outputs, _) = read_to_end(config, &config.kafka.output_topic)?;
    let mut report = AuditReport {
        inputs: inputs.len() as u64,
        ..AuditReport::default()
    };
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let parsed: Vec<Value> = outputs
        .iter()
        .filter_map(|(_, _, _, v)| serde_json::from_slice(v).ok())
        .collect();
    for out in &parsed {
        let id = out["transaction_id"].as_str().unwrap_or_default();
        let Some((want, ts)) = reference.get(id) else {
            report.mismatches += 1;
            report.note(
                opts,
                format!("{id}: output for a transaction the reference does not score"),
            );
            continue;
        };
        seen.insert(id, ());
        if !checked(*ts) {
            continue;
        }
        report.checked += 1;
        if &out["features"] != want {
            report.mismatches += 1;
            report.note(
                opts,
                format!("{id}: output {} != reference {want}", out["features"]),
            );
        }
    }
    let mut missing: Vec<&String> = reference
        .iter()
        .filter(|(id, (_, ts))| checked(*ts) && !seen.contains_key(id.as_str()))
        .map(|(id, _)| id)
        .collect();
    missing.sort();
    report.missing = missing.len() as u64;
    for id in missing {
        report.note(opts, format!("{id}: no output"));
    }
    Ok(report)
}

impl AuditReport {
    fn note(&mut self, opts: &AuditOptions, example: String) {
        if self.examples.len() < opts.examples {
            self.examples.push(example);
        }
    }
}

/// Every message of `topic` up to each partition's end as of now, and the partition count.
fn read_to_end(config: &Config, topic: &str) -> Result<(Vec<Record>, usize), AuditError> {
    let reader = spans::reader(config, "audit")?;
    let metadata = reader.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut to_end = Vec::with_capacity(partitions.len());
    for &partition in &partitions {
        let (from, to) = reader.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        to_end.push(Span {
            partition,
            from,
            to,
        });
    }
    let mut messages = Vec::new();
    let never = AtomicBool::new(false);
    let read = spans::read(&reader, topic, &to_end, &never, Some(STALL), |m| {
        let (key, value) = (m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default());
        messages.push((m.partition(), m.offset(), key, value.to_vec()));
    })?;
    if read == spans::Read::Stalled {
        return Err(AuditError::Stalled {
            topic: topic.to_string(),
        });
    }
    Ok((messages, partitions.len()))
}
