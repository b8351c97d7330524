//! `loadgen passthrough`: copies input to output with no work, the latency floor of the
//! pipeline with the service's client settings.
//!
//! Offsets are committed only once the copy is acknowledged, so a crash re-sends rather
//! than loses (at-least-once, like the service).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, ClientSettings, LoggingContext};
use fraudscore_contract::{Epoch, OffsetTracker};

#[derive(clap::Args, Clone, Debug)]
pub struct PassthroughArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "transactions")]
    pub input_topic: String,
    #[arg(long, default_value = "transactions-scored")]
    pub output_topic: String,
    #[arg(long, default_value = "passthrough")]
    pub group: String,
    /// Where a group without committed offsets starts: latest or earliest.
    #[arg(long, default_value = "latest")]
    pub offset_reset: String,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// How often acknowledged offsets are committed.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub commit_interval: Duration,
    /// Create the input and output topics first if they do not exist.
    #[arg(long)]
    pub create_topics: bool,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Stop after this long (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// librdkafka property for the producer and consumer, e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = kafka::parse_property)]
    pub property: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("a copy was not delivered ({0}); offsets from it on were not committed")]
    Delivery(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassthroughStats {
    pub copied: u64,
    pub acknowledged: u64,
}

/// Source position of a copy, carried through the producer to its acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    partition: i32,
    offset: i64,
    epoch: Epoch,
}

/// Collects acknowledgements; the delivery callback runs inside `producer.poll`, on the
/// copying thread, and the main loop drains them from there.
#[derive(Default)]
struct Acks {
    delivered: Mutex<Vec<Source>>,
    failed: Mutex<Option<String>>,
}

impl ClientContext for Acks {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("kafka producer: {error}: {reason}");
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Source>;

    fn delivery(&self, result: &DeliveryResult<'_>, source: Box<Source>) {
        match result {
            Ok(_) => self
                .delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(*source),
            Err((error, _)) => {
                let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
                failed.get_or_insert_with(|| {
                    format!(
                        "partition {} offset {}: {error}",
                        source.partition, source.offset
                    )
                });
            }
        }
    }
}

/// Copies until `stop` is set or the duration is over, then drains and commits.
pub fn execute(
    args: &PassthroughArgs,
    stop: &AtomicBool,
) -> Result<PassthroughStats, PassthroughError> {
    let settings = ClientSettings {
        brokers: args.brokers.clone(),
        properties: args.property.clone(),
    };
    if args.create_topics {
        kafka::create_topics(
            &settings,
            &[&args.input_topic, &args.output_topic],
            args.partitions,
            Duration::from_secs(30),
        )?;
    }
    let consumer: BaseConsumer<LoggingContext> = settings
        .consumer(&args.group)
        .set("auto.offset.reset", &args.offset_reset)
        .set("enable.auto.offset.store", "false")
        .create_with_context(LoggingContext)?;
    let producer: BaseProducer<Acks> = settings
        .producer(args.linger_ms, true)
        .create_with_context(Acks::default())?;
    consumer.subscribe(&[&args.input_topic])?;
    eprintln!(
        "passthrough: {} -> {} as group {}",
        args.input_topic, args.output_topic, args.group
    );

    let started = Instant::now();
    let mut progress = OffsetTracker::default();
    let mut stats = PassthroughStats::default();
    let mut last_commit = Instant::now();
    let mut last_report = Instant::now();
    let mut copied_at_report = 0;
    let mut failure = None;
    loop {
        if stop.load(Ordering::Relaxed) || args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        // Consumer errors are mostly transient; librdkafka reconnects by itself.
        let polled = match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => Some(message),
            Some(Err(error)) => {
                eprintln!("passthrough: consumer: {error}");
                None
            }
            None => None,
        };
        if let Some(message) = polled {
            let (partition, offset) = (message.partition(), message.offset());
            let source = Source {
                partition,
                offset,
                epoch: progress.consumed(partition, offset),
            };
            let headers = message.headers().map(|headers| {
                headers.iter().fold(
                    OwnedHeaders::new_with_capacity(headers.count()),
                    |h, header| {
                        h.insert(Header {
                            key: header.key,
                            value: header.value,
                        })
                    },
                )
            });
            let mut record: BaseRecord<'_, [u8], [u8], Box<Source>> =
                BaseRecord::with_opaque_to(&args.output_topic, Box::new(source));
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((error, _)) => return Err(error.into()),
                }
            }
            stats.copied += 1;
        }
        producer.poll(Duration::ZERO);
        stats.acknowledged += drain_acks(&producer, &mut progress);
        if let Some(error) = producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            failure = Some(error);
            break;
        }
        if last_commit.elapsed() >= args.commit_interval {
            commit(
                &consumer,
                &args.input_topic,
                &mut progress,
                CommitMode::Async,
            );
            last_commit = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "passthrough: copied {} ({:.0}/s), {} awaiting acknowledgement",
                stats.copied,
                (stats.copied - copied_at_report) as f64 / last_report.elapsed().as_secs_f64(),
                progress.in_flight()
            );
            copied_at_report = stats.copied;
            last_report = Instant::now();
        }
    }
    // Finish what was copied, then commit it, so a restart resumes right after it.
    if let Err(error) = producer.flush(Duration::from_secs(10)) {
        eprintln!("passthrough: flush: {error}");
    }
    stats.acknowledged += drain_acks(&producer, &mut progress);
    if failure.is_none() {
        commit(
            &consumer,
            &args.input_topic,
            &mut progress,
            CommitMode::Sync,
        );
    }
    eprintln!(
        "passthrough: stopped after copying {} messages ({} acknowledged)",
        stats.copied, stats.acknowledged
    );
    match failure {
        Some(error) => Err(PassthroughError::Delivery(error)),
        None => Ok(stats),
    }
}

fn drain_acks(producer: &BaseProducer<Acks>, progress: &mut OffsetTracker) -> u64 {
    let acks = std::mem::take(
        &mut *producer
            .context()
            .delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for source in &acks {
        progress.acknowledged(source.partition, source.offset, source.epoch);
    }
    acks.len() as u64
}

fn commit(
    consumer: &BaseConsumer<LoggingContext>,
    topic: &str,
    progress: &mut OffsetTracker,
    mode: CommitMode,
) {
    let moved = progress.to_commit();
    if moved.is_empty() {
        return;
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, position) in moved {
        if let Err(error) = offsets.add_partition_offset(topic, partition, Offset::Offset(position))
        {
            eprintln!("passthrough: {error}");
        }
    }
    // A failed commit is retried with the next one; losing it only means re-copying on restart.
    if let Err(error) = consumer.commit(&offsets, mode) {
        eprintln!("passthrough: commit: {error}");
    }
}
