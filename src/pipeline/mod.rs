//! The Kafka pipeline: consume → decode → update windows → score → produce → commit, losing nothing.
//!
//! One thread runs [`Pipeline::run`] on a consumer ([`clients`] holds the clients' callbacks);
//! prepared transactions wait in a [`batch::Batch`] for one inference call; [`producer::Output`]
//! hands their outputs to a threaded producer, whose acknowledgements let [`commit::Commits`]
//! move the input offsets. An input offset is committed only after its output is acknowledged.

mod batch;
mod clients;
mod commit;
mod producer;
mod restore;
mod snapshots;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraudscore_contract::RejectReason;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::decode::Rejection;
use crate::engine::{Engine, Prepared};
use crate::model::ModelError;
use crate::output;
use crate::reload::Candidate;
use crate::scorer::{Scorer, Verdict};
use crate::shared::Shared;
use crate::snapshot::{SnapshotDir, StateCheck};
use crate::time::EventTime;

use batch::{Batch, Source};
use clients::{Delivery, DeliveryContext, GroupContext, Outcome, OutputProducer};
use commit::Commits;
use producer::{classify, ErrorKind, Output, Record, SendError};
use snapshots::{SnapshotPlace, Snapshots};

/// How long shutdown and revocation wait for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(8);
const POLL_IDLE: Duration = Duration::from_millis(100);
/// A record the producer refuses as it is goes to the dead-letter topic with its key and value
/// cut to this many bytes and without the input's headers.
const TRUNCATED_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("starting the snapshot thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("stopping: the output producer failed fatally ({0}); what was acknowledged is committed, the rest is re-scored after a restart")]
    ProducerFatal(String),
    #[error("stopping: the output of partition {partition} offset {offset} cannot be produced even truncated ({error}); it stays uncommitted")]
    Undeliverable {
        partition: i32,
        offset: i64,
        error: KafkaError,
    },
}

/// What became of an output handed to [`Worker::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// To the producer as it was.
    AsIs,
    /// Refused as it was; dead-lettered truncated instead.
    Truncated,
    /// Not sent: the stop came while waiting for the producer. Stays uncommitted.
    Abandoned,
}

/// Messages polled and not yet taken, each with the time it was polled.
type Run<'c> = Vec<(BorrowedMessage<'c>, Instant)>;

/// The input message an output stands for, as the dead-letter headers name it.
#[derive(Debug, Clone, Copy)]
struct SourceRef {
    partition: i32,
    offset: i64,
}

/// The pipeline: the consumer and the [`Worker`] it feeds. Owned by the pipeline thread; what
/// others see of it is in [`Shared`].
pub struct Pipeline {
    consumer: BaseConsumer<GroupContext>,
    worker: Worker,
}

/// Everything downstream of the consumer: engine and scorer, the batch in progress, the producer
/// and the commits. Apart from the consumer because each message borrows the consumer.
struct Worker {
    output: Output,
    engine: Engine,
    scorer: Scorer,
    batch: Batch,
    /// The output value being sent, and the shadow record's: kept between transactions so
    /// that encoding does not allocate.
    encoded: Vec<u8>,
    encoded_shadow: Vec<u8>,
    commits: Commits,
    /// Periodic snapshots of the window state, unless `state.snapshot_interval` is zero.
    snapshots: Option<Snapshots>,
    shared: Arc<Shared>,
    config: Config,
    /// Outputs given up on because of a stop: in flight for good, so shutdown does not wait for them.
    abandoned: Cell<usize>,
    /// Checked models to swap in between two batches (SIGHUP, `model.watch`).
    candidates: mpsc::Receiver<Candidate>,
}

impl Pipeline {
    /// Connects the clients and subscribes; the model is already loaded.
    pub fn new(
        config: Config,
        scorer: Scorer,
        shared: Arc<Shared>,
        candidates: mpsc::Receiver<Candidate>,
    ) -> Result<Pipeline, PipelineError> {
        let (failed_tx, failed) = mpsc::channel();
        let producer: OutputProducer =
            config
                .client(&config.kafka.producer)
                .create_with_context(DeliveryContext {
                    shared: shared.clone(),
                    failed: Mutex::new(failed_tx),
                })?;
        let producer = Arc::new(producer);

        let mut consumer_config = config.client(&config.kafka.consumer);
        consumer_config
            .set("group.id", &config.kafka.group_id)
            // Offsets are ours to commit, after the output is acknowledged.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer<GroupContext> =
            consumer_config.create_with_context(GroupContext::new(
                shared.clone(),
                producer.clone(),
                config.kafka.input_topic.clone(),
            ))?;

        let require_key = input_partitions(&consumer, &config.kafka.input_topic) != Some(1);
        show_model(&shared, &scorer);
        // The scorer's spec: the model's features, and a shadow model's.
        let spec = scorer.spec();
        let engine_config = config.engine.engine_config(require_key);
        let engine = Engine::new(spec.as_ref().clone(), &engine_config, shared.store.clone())
            .with_terminals(shared.terminals.clone());
        let snapshots = if config.state.snapshots() {
            let place = SnapshotPlace {
                dir: SnapshotDir::new(&config.state.dir, &config.kafka.input_topic),
                check: StateCheck::new(&engine_config.retention(spec), &shared.store),
            };
            Some(Snapshots::start(
                place,
                config.state.snapshot_interval,
                shared.clone(),
            )?)
        } else {
            None
        };
        shared.health.model_loaded();
        let worker = Worker {
            output: Output::new(producer, failed),
            engine,
            scorer,
            candidates,
            batch: Batch::with_capacity(config.model.max_batch),
            encoded: Vec::new(),
            encoded_shadow: Vec::new(),
            commits: Commits::new(
                config.kafka.input_topic.clone(),
                config.kafka.commit_interval,
            ),
            snapshots,
            shared,
            config,
            abandoned: Cell::new(0),
        };
        Ok(Pipeline { consumer, worker })
    }

    /// Runs until `stop` is set, then finishes what is in flight, flushes and commits. On a fatal
    /// error it still commits what was acknowledged before returning the error.
    pub fn run(self, stop: &AtomicBool) -> Result<(), PipelineError> {
        let Pipeline {
            consumer,
            mut worker,
        } = self;
        // Terminal features need every label read up to where the topic ended at start: join
        // the group (and take partitions to score) only then.
        while worker.shared.health.is_labels_loading() && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let result = consumer
            .subscribe(&[&worker.config.kafka.input_topic])
            .map_err(PipelineError::from)
            .and_then(|()| worker.consume(&consumer, stop));
        if let Err(e) = &result {
            error!(error = %e, "pipeline failed");
        }
        worker.shutdown(&consumer, result.is_ok(), stop);
        result
    }
}

/// The model in use, in the metrics: its version and thresholds.
fn show_model(shared: &Shared, scorer: &Scorer) {
    let m = &shared.metrics;
    // Every rule in use is shown from the start, at 0 until it fires.
    for rule in scorer.rules().into_iter().flat_map(|r| r.names()) {
        m.rule_hits.with_label_values(&[rule]);
    }
    m.model_info.reset();
    m.model_info
        .with_label_values(&[scorer.model().version()])
        .set(1);
    let thresholds = scorer.thresholds();
    for (decision, at) in [
        ("review", thresholds.review),
        ("decline", thresholds.decline),
    ] {
        m.decision_threshold
            .with_label_values(&[decision])
            .set(f64::from(at));
    }
}

impl Worker {
    /// Swaps in a checked model if one is waiting: called between two batches, so that every
    /// transaction is prepared and scored by one model.
    fn swap_model(&mut self) {
        let Ok(Candidate {
            model,
            thresholds,
            rules,
            swaps_left,
        }) = self.candidates.try_recv()
        else {
            return;
        };
        let from = self.scorer.model().version().to_string();
        if let Err(e) = self.scorer.replace(Some((model, thresholds)), rules) {
            // Every feature parsed at load, so this is not expected; the running ones stay.
            warn!(error = %e, "reload refused: the new model, the rules and the shadow cannot be served together");
            self.shared
                .metrics
                .model_reloads
                .with_label_values(&["refused"])
                .inc();
            return;
        }
        self.engine.set_spec(self.scorer.spec().clone());
        self.shared.served.set(self.scorer.spec().clone());
        show_model(&self.shared, &self.scorer);
        // Counted once every pipeline scores with it.
        if swaps_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared
                .metrics
                .model_reloads
                .with_label_values(&["ok"])
                .inc();
        }
        info!(
            from,
            to = self.scorer.model().version(),
            review = thresholds.review,
            decline = thresholds.decline,
            "model swapped"
        );
    }

    fn consume<'c>(
        &mut self,
        consumer: &'c BaseConsumer<GroupContext>,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let (max_batch, max_wait) = (self.config.model.max_batch, self.config.model.max_wait);
        let mut batch_deadline = Instant::now();
        let mut run: Run<'c> = Vec::with_capacity(max_batch);
        while !stop.load(Ordering::Relaxed) {
            if self.batch.is_empty() {
                self.swap_model();
            }
            let timeout = if self.batch.is_empty() {
                POLL_IDLE
            } else {
                batch_deadline.saturating_duration_since(Instant::now())
            };
            match self.poll(consumer, timeout, &mut run, stop)? {
                Some(Ok(msg)) => {
                    if self.batch.is_empty() {
                        batch_deadline = Instant::now() + max_wait;
                    }
                    run.push((msg, Instant::now()));
                    self.gather(consumer, &mut run, stop)?;
                    self.take_run(&mut run, stop)?;
                    // With max_wait zero the batch is what poll(0) hands over back to back,
                    // scored as soon as poll finds nothing more already fetched.
                    let waited_enough = !max_wait.is_zero() && Instant::now() >= batch_deadline;
                    if self.batch.len() >= max_batch || waited_enough {
                        self.flush_batch(stop)?;
                    }
                }
                Some(Err(e)) => warn!(error = %e, "consumer error"),
                // Nothing more ready within max_wait: score what there is now.
                None => self.flush_batch(stop)?,
            }
            self.resend_failed(stop)?;
            // A fatal error can come from the producer's own thread with nothing to send (an id
            // refused at start): the pipeline would wait for acknowledgements for ever.
            if let Some(fatal) = self.output.fatal_error() {
                return Err(PipelineError::ProducerFatal(fatal));
            }
            self.commits.tick(consumer, &self.shared);
            if let Some(snapshots) = &mut self.snapshots {
                snapshots.tick();
            }
        }
        Ok(())
    }

    /// Adds to `run` what poll hands over without waiting, up to a full batch.
    fn gather<'c>(
        &mut self,
        consumer: &'c BaseConsumer<GroupContext>,
        run: &mut Run<'c>,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        while self.batch.len() + run.len() < self.config.model.max_batch {
            match self.poll(consumer, Duration::ZERO, run, stop)? {
                Some(Ok(msg)) => run.push((msg, Instant::now())),
                Some(Err(e)) => {
                    warn!(error = %e, "consumer error");
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Takes a run of messages in order, their customers' state first fetched from memory
    /// together: on a large state each customer is a few cache misses, which then overlap
    /// instead of coming one after another.
    fn take_run(&mut self, run: &mut Run<'_>, stop: &AtomicBool) -> Result<(), PipelineError> {
        self.engine.prefetch(run.iter().map(|(msg, _)| msg.key()));
        for (msg, consumed_at) in run.drain(..) {
            self.take(&msg, consumed_at, stop)?;
        }
        Ok(())
    }

    /// The scoring loop's one poll of the consumer. The rebalance callbacks run inside it; what
    /// they left to do is done before the message it returned (if any) joins `run`: messages of
    /// revoked partitions are dropped, and those polled before an assignment are taken before its
    /// restore.
    fn poll<'c>(
        &mut self,
        consumer: &'c BaseConsumer<GroupContext>,
        timeout: Duration,
        run: &mut Run<'c>,
        stop: &AtomicBool,
    ) -> Result<Option<KafkaResult<BorrowedMessage<'c>>>, PipelineError> {
        let polled = consumer.poll(timeout);
        self.drop_revoked(consumer, run);
        self.restore_assigned(consumer, run, stop)?;
        Ok(polled)
    }

    /// A rebalance inside `poll` revoked partitions and committed their acknowledged offsets:
    /// what is still batched or polled of them belongs to their next owner.
    fn drop_revoked(&mut self, consumer: &BaseConsumer<GroupContext>, run: &mut Run<'_>) {
        let revoked = consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let dropped = self.batch.drop_partitions(&revoked) + batch::drop_polled(run, &revoked);
        if dropped > 0 {
            info!(
                dropped,
                ?revoked,
                "batched transactions of revoked partitions left to their next owner"
            );
        }
    }

    /// A rebalance inside `poll` assigned partitions: bring their state up to the committed offset
    /// before anything of them is scored (the message `poll` returned may be one of theirs).
    fn restore_assigned(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        run: &mut Run<'_>,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let Some(assigned) = consumer.context().take_assigned() else {
            return Ok(());
        };
        // Score what was polled before first: a restore can take a while.
        self.take_run(run, stop)?;
        self.flush_batch(stop)?;
        let resumed = restore::restore(
            consumer,
            &mut self.engine,
            &self.shared,
            &self.config,
            self.snapshots.as_ref().map(Snapshots::place),
            &assigned,
            stop,
        );
        self.shared.health.restoring(false);
        for (partition, offset) in resumed? {
            self.shared.offsets().resume_at(partition, offset);
        }
        Ok(())
    }

    /// Decode, update windows, features: into the batch; or straight to the dead-letter topic.
    fn take(
        &mut self,
        msg: &BorrowedMessage<'_>,
        consumed_at: Instant,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let (partition, offset) = (msg.partition(), msg.offset());
        let epoch = self.shared.offsets().consumed(partition, offset);
        let value = msg.payload().unwrap_or_default();
        match self.engine.prepare(partition, offset, msg.key(), value) {
            Ok(prepared) => {
                let source = Source {
                    partition,
                    offset,
                    epoch,
                    headers: msg.headers().map(|h| h.detach()),
                    consumed_at,
                };
                self.batch.push(prepared, source);
                Ok(())
            }
            Err(rejection) => self.dead_letter(msg, epoch, &rejection, consumed_at, stop),
        }
    }

    /// The original key, value and headers, plus the reason, error and source headers.
    fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        epoch: fraudscore_contract::Epoch,
        rejection: &Rejection,
        consumed_at: Instant,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let reason = rejection.reason.code();
        let source = SourceRef {
            partition: msg.partition(),
            offset: msg.offset(),
        };
        debug!(reason, error = %rejection.message, partition = source.partition, offset = source.offset, "dead-lettered");
        let input_headers = msg.headers().map(|h| h.detach()).unwrap_or_default();
        let headers = self.dlq_headers(input_headers, reason, &rejection.message, source);
        let record = Record {
            topic: &self.config.kafka.dlq_topic,
            key: msg.key(),
            payload: msg.payload(),
            headers: Some(headers),
        };
        let delivery = Delivery {
            partition: source.partition,
            offset: source.offset,
            epoch,
            consumed_at,
            outcome: Outcome::DeadLettered,
        };
        let first = format!("dead-lettered first as {reason}: {}", rejection.message);
        if self.emit(record, delivery, Some(&first), stop)? == Sent::AsIs {
            self.shared.metrics.dlq.with_label_values(&[reason]).inc();
        }
        Ok(())
    }

    /// One inference call for the batch, then one output per transaction.
    fn flush_batch(&mut self, stop: &AtomicBool) -> Result<(), PipelineError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.batch.score(&mut self.scorer)?;
        let m = &self.shared.metrics;
        m.inference_seconds.observe(started.elapsed().as_secs_f64());
        m.batch_size.observe(self.batch.len() as f64);
        let scored_at = EventTime::now();
        let mut batch = std::mem::take(&mut self.batch);
        let mut result = Ok(());
        let shadow_topic = self.config.kafka.shadow_topic.as_deref();
        for (prepared, source, verdict) in batch.drain() {
            output::scored(
                &mut self.encoded,
                self.engine.spec(),
                &prepared,
                Some((&verdict, &self.scorer)),
                shadow_topic.is_none(),
                scored_at,
            );
            self.observe_scored(&prepared, &verdict, scored_at);
            let shadowed = shadow_topic.filter(|_| {
                output::shadowed(
                    &mut self.encoded_shadow,
                    &prepared,
                    &verdict,
                    &self.scorer,
                    scored_at,
                )
            });
            // Counted before either is sent: the input is committed once both are acknowledged.
            if shadowed.is_some() {
                self.shared.offsets().also(source.partition, source.offset);
            }
            let record = Record {
                topic: &self.config.kafka.output_topic,
                key: Some(prepared.transaction.customer_id.as_str().as_bytes()),
                payload: Some(&self.encoded),
                headers: source.headers,
            };
            let delivery = Delivery {
                partition: source.partition,
                offset: source.offset,
                epoch: source.epoch,
                consumed_at: source.consumed_at,
                outcome: Outcome::Scored,
            };
            if let Err(e) = self.emit(record, delivery, None, stop) {
                result = Err(e);
                break;
            }
            if let Some(topic) = shadowed {
                let record = Record {
                    topic,
                    key: Some(prepared.transaction.customer_id.as_str().as_bytes()),
                    payload: Some(&self.encoded_shadow),
                    headers: None,
                };
                let delivery = Delivery {
                    outcome: Outcome::Shadow,
                    ..delivery
                };
                if let Err(e) = self.emit(record, delivery, None, stop) {
                    result = Err(e);
                    break;
                }
            }
        }
        // The batch goes back (emptied, what was left unsent is re-scored after a restart), so
        // its capacity is kept either way.
        self.batch = batch;
        self.batch.clear();
        result
    }

    fn observe_scored(&self, prepared: &Prepared, verdict: &Verdict, scored_at: EventTime) {
        let m = &self.shared.metrics;
        let t = &prepared.transaction;
        let lag_ms = scored_at.millis() - t.timestamp.millis();
        m.event_lag_seconds.observe(lag_ms.max(0) as f64 / 1000.0);
        if prepared.duplicate {
            m.duplicates.inc();
        }
        m.decisions
            .with_label_values(&[verdict.decision.as_str()])
            .inc();
        if let Some(rules) = self.scorer.rules() {
            for &rule in &verdict.rules {
                m.rule_hits.with_label_values(&[rules.name(rule)]).inc();
            }
        }
        if let Some(shadow) = verdict.shadow {
            m.shadow_decisions
                .with_label_values(&[shadow.model_decision.as_str(), shadow.decision.as_str()])
                .inc();
        }
        m.score.observe(verdict.score as f64);
        // Kept beside the event, for the live quality metric when its label arrives.
        self.shared.store.record_outcome(
            &t.customer_id,
            t.timestamp,
            prepared.id_hash,
            verdict.decision.code(),
        );
    }

    /// Sends one output. A record the producer can never take as it is goes to the dead-letter
    /// topic truncated; a fatal producer error stops the pipeline; a stop leaves it uncommitted.
    /// `first` says what the record was, when it was a dead letter already.
    fn emit(
        &self,
        record: Record<'_>,
        delivery: Delivery,
        first: Option<&str>,
        stop: &AtomicBool,
    ) -> Result<Sent, PipelineError> {
        let (topic, key, payload) = (record.topic, record.key, record.payload);
        match self.output.send(record, delivery, stop) {
            Ok(()) => Ok(Sent::AsIs),
            Err(SendError::Stopped) => {
                self.abandoned.set(self.abandoned.get() + 1);
                Ok(Sent::Abandoned)
            }
            Err(SendError::Fatal(e)) => Err(PipelineError::ProducerFatal(e.to_string())),
            Err(SendError::Refused(error)) => {
                let mut why = describe_refusal(topic, key, payload, &error);
                if let Some(first) = first {
                    why = format!("{why} ({first})");
                }
                self.dead_letter_truncated(key, payload, &why, delivery, error, stop)?;
                Ok(Sent::Truncated)
            }
        }
    }

    /// The last resort for a record the producer refuses: reason `oversized`, key and value cut
    /// to [`TRUNCATED_BYTES`], no input headers, still naming the source message.
    fn dead_letter_truncated(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        why: &str,
        delivery: Delivery,
        error: KafkaError,
        stop: &AtomicBool,
    ) -> Result<(), PipelineError> {
        let source = SourceRef {
            partition: delivery.partition,
            offset: delivery.offset,
        };
        warn!(partition = source.partition, offset = source.offset, %error, "output refused by the producer; dead-lettering it truncated");
        let reason = RejectReason::Oversized.code();
        let m = &self.shared.metrics;
        // A shadow record dead-lettered is an output cut short, not a transaction dead-lettered.
        if delivery.outcome != Outcome::Shadow {
            m.dlq.with_label_values(&[reason]).inc();
        }
        m.outputs_truncated.inc();
        let headers = self.dlq_headers(OwnedHeaders::new(), reason, why, source);
        let record = Record {
            topic: &self.config.kafka.dlq_topic,
            key: key.map(|k| &k[..k.len().min(TRUNCATED_BYTES)]),
            payload: payload.map(|v| &v[..v.len().min(TRUNCATED_BYTES)]),
            headers: Some(headers),
        };
        // A shadow record dead-lettered is still the transaction's second output, not its outcome.
        let delivery = Delivery {
            outcome: match delivery.outcome {
                Outcome::Shadow => Outcome::Shadow,
                _ => Outcome::DeadLettered,
            },
            ..delivery
        };
        match self.output.send(record, delivery, stop) {
            Ok(()) => Ok(()),
            Err(SendError::Stopped) => {
                self.abandoned.set(self.abandoned.get() + 1);
                Ok(())
            }
            Err(SendError::Fatal(e)) => Err(PipelineError::ProducerFatal(e.to_string())),
            Err(SendError::Refused(_)) => Err(PipelineError::Undeliverable {
                partition: source.partition,
                offset: source.offset,
                error,
            }),
        }
    }

    fn dlq_headers(
        &self,
        headers: OwnedHeaders,
        reason: &str,
        error: &str,
        source: SourceRef,
    ) -> OwnedHeaders {
        output::dead_letter_headers(
            headers,
            reason,
            truncate(error, TRUNCATED_BYTES),
            &self.config.kafka.input_topic,
            source.partition,
            source.offset,
        )
    }

    /// Deliveries the producer gave up on: produced again, unless they can never succeed
    /// (dead-lettered truncated) or their partition was revoked meanwhile (its next owner redoes them).
    fn resend_failed(&self, stop: &AtomicBool) -> Result<(), PipelineError> {
        let failed: Vec<_> = self.output.failed().collect();
        for f in failed {
            let d = f.delivery;
            if !self
                .shared
                .offsets()
                .is_in_flight(d.partition, d.offset, d.epoch)
            {
                continue;
            }
            match classify(&f.error) {
                ErrorKind::Fatal => return Err(PipelineError::ProducerFatal(f.error.to_string())),
                ErrorKind::Permanent => {
                    let why = describe_refusal(
                        &f.topic,
                        f.key.as_deref(),
                        f.payload.as_deref(),
                        &f.error,
                    );
                    self.dead_letter_truncated(
                        f.key.as_deref(),
                        f.payload.as_deref(),
                        &why,
                        d,
                        f.error,
                        stop,
                    )?;
                }
                ErrorKind::QueueFull | ErrorKind::Retriable => {
                    warn!(error = %f.error, topic = f.topic, partition = d.partition, offset = d.offset, "delivery failed; producing again");
                    self.shared.metrics.produce_retries.inc();
                    let record = Record {
                        topic: &f.topic,
                        key: f.key.as_deref(),
                        payload: f.payload.as_deref(),
                        headers: f.headers,
                    };
                    self.emit(record, d, None, stop)?;
                }
            }
        }
        Ok(())
    }

    /// Scores what is batched (unless the producer is gone), waits for deliveries up to
    /// [`FLUSH_TIMEOUT`], and commits what was acknowledged. Bounded in time whatever happens.
    fn shutdown(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        producer_usable: bool,
        stop: &AtomicBool,
    ) {
        info!("stopping: scoring what is in flight, flushing and committing");
        if producer_usable {
            // Sends give up at once when `stop` is set; with the pipeline stopping on its own
            // accord (an error) `stop` may be clear, so use a flag that is set.
            let stopping = AtomicBool::new(stop.load(Ordering::Relaxed));
            if let Err(e) = self.flush_batch(&stopping) {
                warn!(error = %e, "scoring the last batch failed; it is re-scored after a restart");
            }
            let deadline = Instant::now() + FLUSH_TIMEOUT;
            loop {
                use rdkafka::producer::Producer;
                let _ = self.output.producer().flush(Duration::from_millis(200));
                if let Err(e) = self.resend_failed(&stopping) {
                    warn!(error = %e, "re-sending failed outputs at shutdown");
                    break;
                }
                // Records given up on when the stop came are in flight for good: not waited for.
                let waiting = self
                    .shared
                    .offsets()
                    .in_flight()
                    .saturating_sub(self.abandoned.get());
                if waiting == 0 || Instant::now() >= deadline {
                    break;
                }
            }
        }
        let left = self.shared.offsets().in_flight();
        if left > 0 {
            warn!(left, "outputs not acknowledged at shutdown; their inputs stay uncommitted and will be re-scored");
        }
        self.commits.last(consumer, &self.shared);
        if let Some(snapshots) = self.snapshots.take() {
            snapshots.finish();
        }
        // Dropping the consumer leaves the group: on a stop, not before the other pipelines have
        // committed. A pipeline failing on its own leaves at once, so that the service stops.
        let wait = if stop.load(Ordering::Relaxed) {
            FLUSH_TIMEOUT
        } else {
            Duration::ZERO
        };
        self.shared.departure.ready_and_wait(wait);
        info!("stopped");
    }
}

/// How many partitions the input topic has, if the broker says within a few seconds.
fn input_partitions(consumer: &BaseConsumer<GroupContext>, topic: &str) -> Option<usize> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| warn!(error = %e, topic, "reading the input topic's metadata; null keys will be dead-lettered as invalid_key"))
        .ok()?;
    let partitions = metadata.topics().first()?.partitions().len();
    info!(topic, partitions, "input topic");
    (partitions > 0).then_some(partitions)
}

/// The error header of a record the producer refused.
fn describe_refusal(
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    error: &KafkaError,
) -> String {
    let len = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
    format!(
        "the output to {topic} ({} key bytes, {} value bytes, with the input's headers) was refused by the producer: {error}; dead-lettered with key and value cut to {TRUNCATED_BYTES} bytes and without the input's headers",
        len(key),
        len(payload)
    )
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
