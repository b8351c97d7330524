//! The Kafka service: consume → decode → update windows → score → produce → commit, losing nothing.
//!
//! One thread runs the pipeline on a [`BaseConsumer`]; a [`ThreadedProducer`] delivers outputs and
//! reports each acknowledgement back, and only then may the input offset be committed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use crate::config::{Config, Guarantee};
use crate::decode::Rejection;
use crate::engine::{Engine, Prepared, Scorer, Verdict};
use crate::metrics::Metrics;
use crate::model::ModelError;
use crate::output;
use crate::store::Store;
use crate::time::EventTime;

/// How long shutdown and revocation wait for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(8);
const POLL_IDLE: Duration = Duration::from_millis(100);

pub const HEADER_REASON: &str = "fraudscore.dlq.reason";
pub const HEADER_ERROR: &str = "fraudscore.dlq.error";
pub const HEADER_TOPIC: &str = "fraudscore.source.topic";
pub const HEADER_PARTITION: &str = "fraudscore.source.partition";
pub const HEADER_OFFSET: &str = "fraudscore.source.offset";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("Kafka transaction failed, stopping so that a restart resumes from the last committed transaction: {0}")]
    Transaction(KafkaError),
}

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    pub model_loaded: AtomicBool,
    pub assigned: AtomicBool,
}

/// State shared between the pipeline thread, the client callbacks and the HTTP server.
pub struct Shared {
    pub metrics: Metrics,
    pub store: Arc<Store>,
    pub health: Health,
    offsets: Mutex<crate::offsets::OffsetTracker>,
}

impl Shared {
    pub fn new(metrics: Metrics, store: Arc<Store>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics,
            store,
            health: Health::default(),
            offsets: Mutex::default(),
        })
    }

    /// The Prometheus text, with the state gauges read at this moment.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.customers.set(self.store.customers() as i64);
        m.window_events.set(self.store.window_events());
        m.render()
    }

    fn offsets(&self) -> MutexGuard<'_, crate::offsets::OffsetTracker> {
        // A panic elsewhere must not stop deliveries being recorded: the data is still consistent.
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where an output came from; travels with the produce request and comes back on delivery.
struct Delivery {
    partition: i32,
    offset: i64,
    consumed_at: Instant,
    outcome: &'static str,
}

/// An output the producer gave up on, to be produced again.
struct Retry {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    delivery: Box<Delivery>,
}

struct DeliveryContext {
    shared: Arc<Shared>,
    retries: Mutex<Sender<Retry>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                let m = &self.shared.metrics;
                m.processing_seconds
                    .observe(delivery.consumed_at.elapsed().as_secs_f64());
                m.transactions.with_label_values(&[delivery.outcome]).inc();
                self.shared
                    .offsets()
                    .acknowledged(delivery.partition, delivery.offset);
            }
            Err((e, msg)) => {
                warn!(error = %e, topic = msg.topic(), partition = delivery.partition, offset = delivery.offset, "delivery failed; producing again");
                let retry = Retry {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(|h| h.detach()),
                    delivery,
                };
                let sender = self.retries.lock().unwrap_or_else(|e| e.into_inner());
                // The receiver lives as long as the pipeline; after it, nothing is committed anyway.
                let _ = sender.send(retry);
            }
        }
    }
}

type OutputProducer = ThreadedProducer<DeliveryContext>;

/// Consumer callbacks: hand partitions over cleanly on rebalances, and report lag.
struct GroupContext {
    shared: Arc<Shared>,
    producer: Arc<OutputProducer>,
    guarantee: Guarantee,
    input_topic: String,
    /// Set when a revocation aborted the open transaction: the pipeline drops its batch.
    aborted: Arc<AtomicBool>,
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
        self.shared.metrics.rebalances.inc();
        self.shared.health.assigned.store(false, Ordering::Relaxed);
        match self.guarantee {
            Guarantee::AtLeastOnce => {
                // Hand over everything acknowledged so far, so that the next owner repeats little.
                if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
                    warn!(error = %e, "flush before revocation incomplete; the next owner re-scores the rest");
                }
                let positions = self.shared.offsets().positions(&partitions);
                if let Err(e) = commit(consumer, &self.input_topic, &positions, CommitMode::Sync) {
                    warn!(error = %e, "commit on revocation failed; the next owner re-scores from the last commit");
                }
            }
            Guarantee::ExactlyOnce => {
                // Uncommitted work goes back to the group: the next owner redoes it in a new transaction.
                if self.producer.abort_transaction(FLUSH_TIMEOUT).is_ok() {
                    self.aborted.store(true, Ordering::Relaxed);
                }
            }
        }
        self.shared.offsets().forget(&partitions);
        let released = self.shared.store.release_partitions(&partitions);
        debug!(released, "customer state released");
        for p in &partitions {
            let _ = self
                .shared
                .metrics
                .consumer_lag
                .remove_label_values(&[&p.to_string()]);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "partitions assigned");
                self.shared
                    .health
                    .assigned
                    .store(!partitions.is_empty(), Ordering::Relaxed);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    positions: &[(i32, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    if positions.is_empty() {
        return Ok(());
    }
    consumer.commit(&offsets_list(topic, positions)?, mode)
}

fn offsets_list(topic: &str, positions: &[(i32, i64)]) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in positions {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    Ok(tpl)
}

/// librdkafka settings for one client: the common table, then the client's own, then what the
/// service itself depends on.
fn client_config(
    config: &Config,
    own: &std::collections::BTreeMap<String, crate::config::PropertyValue>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in config.kafka.common.iter().chain(own) {
        c.set(k, &v.0);
    }
    c
}

type InputConsumer = BaseConsumer<GroupContext>;

/// The pipeline: one consumer feeding a [`Worker`].
pub struct Pipeline {
    consumer: InputConsumer,
    worker: Worker,
}

/// Everything downstream of the consumer: engine, model, producer and the batch in progress.
struct Worker {
    producer: Arc<OutputProducer>,
    engine: Engine,
    scorer: Scorer,
    shared: Arc<Shared>,
    retries: Receiver<Retry>,
    aborted: Arc<AtomicBool>,
    config: Config,
    batch: Vec<Prepared>,
    sources: Vec<Source>,
    verdicts: Vec<Verdict>,
    in_transaction: bool,
}

/// The input message behind a prepared transaction.
struct Source {
    partition: i32,
    offset: i64,
    headers: Option<OwnedHeaders>,
    consumed_at: Instant,
}

impl Pipeline {
    /// Connects the clients and subscribes; the model is already loaded.
    pub fn new(
        config: Config,
        scorer: Scorer,
        shared: Arc<Shared>,
    ) -> Result<Pipeline, ServiceError> {
        let (retry_tx, retries) = mpsc::channel();
        let mut producer_config = client_config(&config, &config.kafka.producer);
        if config.kafka.processing_guarantee == Guarantee::ExactlyOnce {
            if let Some(id) = &config.kafka.transactional_id {
                producer_config.set("transactional.id", id);
            }
        }
        let producer: OutputProducer = producer_config.create_with_context(DeliveryContext {
            shared: shared.clone(),
            retries: Mutex::new(retry_tx),
        })?;
        let producer = Arc::new(producer);
        if config.kafka.processing_guarantee == Guarantee::ExactlyOnce {
            producer.init_transactions(Duration::from_secs(30))?;
        }

        let aborted = Arc::new(AtomicBool::new(false));
        let mut consumer_config = client_config(&config, &config.kafka.consumer);
        consumer_config
            .set("group.id", &config.kafka.group_id)
            // Offsets are ours to commit, after the output is acknowledged.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        if config.kafka.processing_guarantee == Guarantee::ExactlyOnce {
            consumer_config.set("isolation.level", "read_committed");
        }
        let consumer: BaseConsumer<GroupContext> =
            consumer_config.create_with_context(GroupContext {
                shared: shared.clone(),
                producer: producer.clone(),
                guarantee: config.kafka.processing_guarantee,
                input_topic: config.kafka.input_topic.clone(),
                aborted: aborted.clone(),
            })?;
        consumer.subscribe(&[&config.kafka.input_topic])?;

        let model = scorer.model();
        shared
            .metrics
            .model_info
            .with_label_values(&[model.version()])
            .set(1);
        let engine = Engine::new(
            model.spec().clone(),
            &config.engine.engine_config(),
            shared.store.clone(),
        );
        shared.health.model_loaded.store(true, Ordering::Relaxed);
        let worker = Worker {
            producer,
            engine,
            scorer,
            shared,
            retries,
            aborted,
            batch: Vec::with_capacity(config.model.max_batch),
            sources: Vec::with_capacity(config.model.max_batch),
            verdicts: Vec::new(),
            config,
            in_transaction: false,
        };
        Ok(Pipeline { consumer, worker })
    }

    /// Runs until `stop` is set, then finishes what is in flight, flushes and commits.
    pub fn run(self, stop: &AtomicBool) -> Result<(), ServiceError> {
        let Pipeline {
            consumer,
            mut worker,
        } = self;
        let max_batch = worker.config.model.max_batch;
        let max_wait = worker.config.model.max_wait;
        let mut batch_deadline = Instant::now();
        let mut next_commit = Instant::now() + worker.config.kafka.commit_interval;
        while !stop.load(Ordering::Relaxed) {
            let timeout = if worker.batch.is_empty() {
                POLL_IDLE
            } else {
                batch_deadline.saturating_duration_since(Instant::now())
            };
            let polled = consumer.poll(timeout);
            if worker.aborted.swap(false, Ordering::Relaxed) {
                worker.drop_aborted();
            }
            match polled {
                Some(Ok(msg)) => {
                    if worker.batch.is_empty() {
                        batch_deadline = Instant::now() + max_wait;
                    }
                    worker.handle(&msg)?;
                    // With max_wait zero the batch is what poll(0) hands over back to back,
                    // scored as soon as poll finds nothing more already fetched.
                    let waited_enough = !max_wait.is_zero() && Instant::now() >= batch_deadline;
                    if worker.batch.len() >= max_batch || waited_enough {
                        worker.score_batch(&consumer)?;
                    }
                }
                Some(Err(e)) => warn!(error = %e, "consumer error"),
                // Nothing more ready within max_wait: score what there is now.
                None => worker.score_batch(&consumer)?,
            }
            worker.produce_retries();
            if Instant::now() >= next_commit {
                worker.commit_progress(&consumer, CommitMode::Async);
                next_commit = Instant::now() + worker.config.kafka.commit_interval;
            }
        }
        worker.shutdown(&consumer)
    }
}

impl Worker {
    /// Decode, update windows, features: into the batch; or straight to the dead-letter topic.
    fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), ServiceError> {
        let (partition, offset) = (msg.partition(), msg.offset());
        let consumed_at = Instant::now();
        self.shared.offsets().consumed(partition, offset);
        let value = msg.payload().unwrap_or_default();
        match self.engine.prepare(partition, msg.key(), value) {
            Ok(prepared) => {
                self.batch.push(prepared);
                self.sources.push(Source {
                    partition,
                    offset,
                    headers: msg.headers().map(|h| h.detach()),
                    consumed_at,
                });
                Ok(())
            }
            Err(rejection) => self.dead_letter(msg, &rejection, consumed_at),
        }
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        rejection: &Rejection,
        consumed_at: Instant,
    ) -> Result<(), ServiceError> {
        let reason = rejection.reason.code();
        debug!(reason, error = %rejection.message, partition = msg.partition(), offset = msg.offset(), "dead-lettered");
        self.shared.metrics.dlq.with_label_values(&[reason]).inc();
        let headers = msg
            .headers()
            .map(|h| h.detach())
            .unwrap_or_default()
            .insert(header(HEADER_REASON, reason))
            .insert(header(HEADER_ERROR, &rejection.message))
            .insert(header(HEADER_TOPIC, msg.topic()))
            .insert(header(HEADER_PARTITION, &msg.partition().to_string()))
            .insert(header(HEADER_OFFSET, &msg.offset().to_string()));
        let delivery = Box::new(Delivery {
            partition: msg.partition(),
            offset: msg.offset(),
            consumed_at,
            outcome: "dlq",
        });
        self.begin_transaction()?;
        let topic = self.config.kafka.dlq_topic.clone();
        self.send(&topic, msg.key(), msg.payload(), Some(headers), delivery);
        Ok(())
    }

    /// One inference call for the batch, then one output per transaction.
    fn score_batch(&mut self, consumer: &InputConsumer) -> Result<(), ServiceError> {
        if self.batch.is_empty() {
            return self.commit_transaction(consumer);
        }
        let started = Instant::now();
        self.scorer.score(&self.batch, &mut self.verdicts)?;
        let m = &self.shared.metrics;
        m.inference_seconds.observe(started.elapsed().as_secs_f64());
        m.batch_size.observe(self.batch.len() as f64);
        self.begin_transaction()?;
        let scored_at = EventTime::now();
        let topic = self.config.kafka.output_topic.clone();
        let batch = std::mem::take(&mut self.batch);
        let sources = std::mem::take(&mut self.sources);
        for ((prepared, source), verdict) in batch.iter().zip(sources).zip(&self.verdicts) {
            let value = output::scored(
                self.engine.spec(),
                prepared,
                Some((*verdict, self.scorer.model().version())),
                scored_at,
            );
            let lag_ms = scored_at.millis() - prepared.transaction.timestamp.millis();
            self.shared
                .metrics
                .event_lag_seconds
                .observe(lag_ms.max(0) as f64 / 1000.0);
            if prepared.duplicate {
                self.shared.metrics.duplicates.inc();
            }
            let delivery = Box::new(Delivery {
                partition: source.partition,
                offset: source.offset,
                consumed_at: source.consumed_at,
                outcome: "scored",
            });
            let key = prepared.transaction.customer_id.as_str().as_bytes();
            self.send(&topic, Some(key), Some(&value), source.headers, delivery);
        }
        self.batch = batch;
        self.batch.clear();
        self.commit_transaction(consumer)
    }

    /// Hands a record to the producer, waiting while its queue is full: outputs are never dropped.
    fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        delivery: Box<Delivery>,
    ) {
        let mut record = BaseRecord::with_opaque_to(topic, delivery);
        record.key = key;
        record.payload = payload;
        record.headers = headers;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, r)) => {
                    error!(error = %e, topic, "produce refused; retrying in 100 ms");
                    record = r;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn produce_retries(&mut self) {
        while let Ok(r) = self.retries.try_recv() {
            self.shared.metrics.produce_retries.inc();
            self.send(
                &r.topic,
                r.key.as_deref(),
                r.payload.as_deref(),
                r.headers,
                r.delivery,
            );
        }
    }

    fn commit_progress(&mut self, consumer: &InputConsumer, mode: CommitMode) {
        if self.config.kafka.processing_guarantee == Guarantee::ExactlyOnce {
            return;
        }
        let positions = self.shared.offsets().to_commit();
        if let Err(e) = commit(consumer, &self.config.kafka.input_topic, &positions, mode) {
            // Not fatal: a later commit covers these offsets.
            warn!(error = %e, "offset commit failed");
        }
    }

    fn begin_transaction(&mut self) -> Result<(), ServiceError> {
        if self.config.kafka.processing_guarantee == Guarantee::ExactlyOnce && !self.in_transaction
        {
            self.producer
                .begin_transaction()
                .map_err(ServiceError::Transaction)?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Exactly-once: the outputs and the input positions commit together.
    fn commit_transaction(&mut self, consumer: &InputConsumer) -> Result<(), ServiceError> {
        if !self.in_transaction {
            return Ok(());
        }
        let positions = self.shared.offsets().consumed_positions();
        let tpl = offsets_list(&self.config.kafka.input_topic, &positions)?;
        let group = consumer
            .group_metadata()
            .ok_or(ServiceError::Transaction(KafkaError::NoMessageReceived))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &group, FLUSH_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(FLUSH_TIMEOUT))
            .map_err(ServiceError::Transaction)?;
        self.in_transaction = false;
        Ok(())
    }

    /// A revocation aborted the transaction: its outputs are gone, and so must the batch be.
    fn drop_aborted(&mut self) {
        warn!(
            dropped = self.batch.len(),
            "transaction aborted by a rebalance; the partitions' next owner re-scores its messages"
        );
        self.batch.clear();
        self.sources.clear();
        self.in_transaction = false;
    }

    fn shutdown(mut self, consumer: &InputConsumer) -> Result<(), ServiceError> {
        info!("stopping: scoring what is in flight, flushing and committing");
        self.score_batch(consumer)?;
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        loop {
            let _ = self.producer.flush(Duration::from_millis(200));
            self.produce_retries();
            if self.shared.offsets().in_flight() == 0 || Instant::now() >= deadline {
                break;
            }
        }
        let left = self.shared.offsets().in_flight();
        if left > 0 {
            warn!(left, "outputs not acknowledged at shutdown; their inputs stay uncommitted and will be re-scored");
        }
        self.commit_progress(consumer, CommitMode::Sync);
        info!("stopped");
        Ok(())
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
