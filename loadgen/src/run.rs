//! `loadgen run`: open-loop load at a fixed rate, end-to-end latency of every output.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::bad::{self, BadMix, Defect};
use crate::kafka::{self, send_retrying, ClientSettings, DeliveryCounter, LoggingContext};
use crate::labels::{EventClock, LabelFeed};
use crate::matcher::{Counts, Expected, Matcher, Output, Topic, Verdict};
use crate::report::{self, LatencySummary, ReportError, SecondStats};
use crate::schedule::{Schedule, ScheduleError};
use crate::sim::{self, CustomerId, Radius};
use crate::sut::{self, Sut};
use crate::traffic::{self, TransactionStream, LABEL_HEADER, RUN_HEADER, SEQ_HEADER};
use fraudscore_contract::{headers, RejectReason};

/// Header marking readiness probes, so their outputs never count as results.
const PROBE_HEADER: &str = "loadgen.probe";
const SUT_GRACE: Duration = Duration::from_secs(10);

/// Everything about a load except its rate, duration and report folder; shared with
/// `capacity`, which varies those per step.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Bootstrap servers. Local brokers such as nisshi listen on IPv4 only: use 127.0.0.1.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "transactions")]
    pub input_topic: String,
    #[arg(long, default_value = "transactions-scored")]
    pub scored_topic: String,
    #[arg(long, default_value = "transactions-dlq")]
    pub dlq_topic: String,
    /// Appended to the three topic names, e.g. `-r1` for fresh topics `transactions-r1`, ...
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub topic_suffix: String,
    /// Create the three topics first (with the Kafka admin API) if they do not exist.
    #[arg(long)]
    pub create_topics: bool,
    /// Delete the three topics after the run, e.g. fresh ones made with --create-topics.
    #[arg(long)]
    pub delete_topics: bool,
    /// Partitions of topics created with --create-topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Customers in the simulated population.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u32,
    /// Terminals in the simulated population [default: 2 x customers, as in the book].
    #[arg(long)]
    pub terminals: Option<u32>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of malformed messages, spread evenly over the six rejection reasons.
    #[arg(long, default_value_t = 0.01)]
    pub bad_ratio: f64,
    /// After the last send, how long to wait for outstanding outputs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Leave the first part of the run out of the latency figures (still checked for loss).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Producer linger.ms: a few ms, since one produce request per message overwhelms small
    /// brokers.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// Before measuring, send probe transactions until one comes out; 0s skips the probe.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Start this shell command as the system under test before the run and stop it after.
    /// Placeholders: {brokers} {input} {scored} {dlq} {group} {run}.
    #[arg(long)]
    pub sut_cmd: Option<String>,
    /// Also publish each good transaction's fraud label to this topic (suffix applied), once
    /// its delay has passed in event time: the service's labels topic, e.g. fraud-labels.
    #[arg(long)]
    pub labels_topic: Option<String>,
    /// Event time from a transaction to its label (the fraud handbook's 7 days).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub label_delay: Duration,
    /// Event time runs this many times faster than the wall clock and ends with the run, so
    /// timestamps lie in the past: 20160 plays 7 days in 30 s, enough for labels 7 days late to
    /// show in the service's terminal features. 1: every timestamp is its send time.
    #[arg(long, default_value_t = 1.0, value_parser = acceleration)]
    pub time_acceleration: f64,
    /// librdkafka property for the producer and consumer, e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = kafka::parse_property)]
    pub property: Vec<(String, String)>,
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Folder for report.json, latency.hgrm and the SVG charts.
    #[arg(long, default_value = "out/run")]
    pub report: PathBuf,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    NotReady(String),
    #[error("the simulator produced no transactions (no customer has a terminal in reach)")]
    NoTraffic,
}

fn acceleration(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!("{text:?} is not a factor of at least 1")),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// The topic names of a run, suffix applied.
#[derive(Clone, Debug, Serialize)]
pub struct Topics {
    pub input: String,
    pub scored: String,
    pub dlq: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

impl Topics {
    /// Every topic the run writes or reads.
    fn all(&self) -> Vec<&str> {
        let mut all = vec![self.input.as_str(), self.scored.as_str(), self.dlq.as_str()];
        all.extend(self.labels.as_deref());
        all
    }
}

impl LoadArgs {
    pub fn topics(&self) -> Topics {
        Topics {
            input: format!("{}{}", self.input_topic, self.topic_suffix),
            scored: format!("{}{}", self.scored_topic, self.topic_suffix),
            dlq: format!("{}{}", self.dlq_topic, self.topic_suffix),
            labels: self
                .labels_topic
                .as_ref()
                .map(|t| format!("{t}{}", self.topic_suffix)),
        }
    }

    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            brokers: self.brokers.clone(),
            properties: self.property.clone(),
        }
    }

    fn population(&self) -> sim::PopulationParams {
        sim::PopulationParams {
            customers: self.customers,
            terminals: self
                .terminals
                .unwrap_or_else(|| self.customers.saturating_mul(2)),
            radius: Radius::default(),
        }
    }
}

/// The run's settings as recorded in report.json; secrets in `-X` values are masked.
#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub brokers: String,
    pub topics: Topics,
    pub rate: f64,
    pub duration_s: f64,
    pub messages: u64,
    pub customers: u32,
    pub terminals: u32,
    pub seed: u64,
    pub bad_ratio: f64,
    pub drain_timeout_s: f64,
    pub warmup_s: f64,
    pub linger_ms: u32,
    pub label_delay_s: f64,
    pub time_acceleration: f64,
    pub properties: BTreeMap<String, String>,
    pub sut_cmd: Option<String>,
}

fn masked(properties: &[(String, String)]) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(key, value)| {
            let secret = ["password", "secret", "key", "token"]
                .iter()
                .any(|word| key.contains(word));
            let shown = if secret {
                "***".to_owned()
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

/// The results of a run: everything printed at the end, and more.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Messages handed to the producer.
    pub sent: u64,
    pub produce_acked: u64,
    pub produce_failed: u64,
    /// Messages per second the sender achieved over the schedule.
    pub send_rate: f64,
    /// How late the sender was against the schedule (sender-side stall, not the service).
    pub send_lag_p99_ms: f64,
    pub send_lag_max_ms: f64,
    /// Inputs with at least one output.
    pub received: u64,
    pub missing: u64,
    /// First outputs per second, from the start to the later of the schedule's end and the
    /// last output.
    pub throughput: f64,
    #[serde(flatten)]
    pub counts: Counts,
    pub bad_sent: u64,
    pub bad_sent_by_reason: BTreeMap<RejectReason, u64>,
    /// Bad messages without any output.
    pub bad_missing: u64,
    /// True when every input had its output before the drain timeout.
    pub drained: bool,
    /// True when Ctrl-C/SIGTERM cut the sending short.
    pub interrupted: bool,
    /// End-to-end latency, intended send time to output received (after the warm-up).
    pub latency: LatencySummary,
    /// Labels published (with --labels-topic): those due before the run ended.
    pub labels_published: u64,
    /// The first missing sequence numbers, to look up in the topics.
    pub missing_sample: Vec<u64>,
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: String,
    pub config: RunConfig,
    pub summary: RunSummary,
    pub series: Vec<SecondStats>,
}

/// State the sender and receiver threads share.
struct Shared {
    expected: Mutex<Expected>,
    sent: AtomicU64,
    sending_done: AtomicBool,
    /// Microseconds after the start when draining ends; `u64::MAX` while still sending.
    drain_deadline_us: AtomicU64,
    deliveries: Arc<DeliveryCounter>,
    /// Failures before the run (probes), not the run's.
    failed_before: u64,
}

/// What the receiver thread hands back.
struct Received {
    matcher: Matcher,
    histogram: Histogram<u64>,
    series: Vec<SecondStats>,
    last_first_output: Option<Duration>,
    all_arrived: bool,
}

/// Runs one load test and writes its report; the caller decides what a missing message
/// means for the exit code.
/// `stop` ends the sending early (Ctrl-C); what was sent is still drained and reported.
pub fn execute(args: &RunArgs, stop: &AtomicBool) -> Result<RunReport, RunError> {
    let load = &args.load;
    let schedule = Schedule::new(args.rate, args.duration)?;
    let run_id = traffic::new_run_id();
    let topics = load.topics();
    let settings = load.settings();
    let population = load.population();
    fs::create_dir_all(&args.report)
        .map_err(io_err(format!("creating {}", args.report.display())))?;

    if load.create_topics {
        kafka::create_topics(
            &settings,
            &topics.all(),
            load.partitions,
            Duration::from_secs(30),
        )?;
    }
    let group = format!("loadgen-{run_id}");
    let mut sut = match &load.sut_cmd {
        Some(template) => {
            let command = sut::expand(
                template,
                &sut::Placeholders {
                    brokers: &load.brokers,
                    input: &topics.input,
                    scored: &topics.scored,
                    dlq: &topics.dlq,
                    group: &format!("sut-{run_id}"),
                    run: &run_id,
                },
            );
            let log = args.report.join("sut.log");
            eprintln!("loadgen: starting the system under test: {command}");
            Some(Sut::start(&command, &log).map_err(io_err(format!("starting `{command}`")))?)
        }
        None => None,
    };

    let plan = Plan {
        args,
        schedule: &schedule,
        run_id: &run_id,
        topics: &topics,
        settings: &settings,
        group: &group,
        population,
        stop,
    };
    let result = measure(&plan, sut.as_mut());
    if let Some(sut) = sut {
        let _ = sut.stop(SUT_GRACE);
    }
    if load.delete_topics {
        if let Err(error) = kafka::delete_topics(&settings, &topics.all(), Duration::from_secs(30))
        {
            eprintln!("loadgen: deleting the topics: {error}");
        }
    }
    let (summary, series, histogram, started_at) = result?;

    let report = RunReport {
        run_id: run_id.clone(),
        started_at,
        config: RunConfig {
            brokers: load.brokers.clone(),
            topics,
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            messages: schedule.count(),
            customers: population.customers,
            terminals: population.terminals,
            seed: load.seed,
            bad_ratio: load.bad_ratio,
            drain_timeout_s: load.drain_timeout.as_secs_f64(),
            warmup_s: load.warmup.as_secs_f64(),
            linger_ms: load.linger_ms,
            label_delay_s: load.label_delay.as_secs_f64(),
            time_acceleration: load.time_acceleration,
            properties: masked(&load.property),
            sut_cmd: load.sut_cmd.clone(),
        },
        summary,
        series,
    };
    report::write_json(&args.report.join("report.json"), &report)?;
    report::write_hgrm_file(&args.report.join("latency.hgrm"), &histogram)?;
    report::plot_run(
        &args.report,
        &format!(
            "{}/s for {}",
            args.rate,
            humantime::format_duration(args.duration)
        ),
        &histogram,
        &report.series,
    )?;
    Ok(report)
}

type Measured = (RunSummary, Vec<SecondStats>, Histogram<u64>, String);

/// Everything one measurement needs, fixed before it starts.
struct Plan<'a> {
    args: &'a RunArgs,
    schedule: &'a Schedule,
    run_id: &'a str,
    topics: &'a Topics,
    settings: &'a ClientSettings,
    group: &'a str,
    population: sim::PopulationParams,
    /// Set by the caller (Ctrl-C) to end the sending early.
    stop: &'a AtomicBool,
}

fn measure(plan: &Plan<'_>, sut: Option<&mut Sut>) -> Result<Measured, RunError> {
    let &Plan {
        args,
        schedule,
        run_id,
        topics,
        settings,
        group,
        population,
        stop,
    } = plan;
    let load = &args.load;
    // Not idempotent by default (see ClientSettings::producer): a retried send would show up
    // as a duplicate output, so it cannot hide; -X enable.idempotence=true restores it.
    let producer: BaseProducer<DeliveryCounter> = settings
        .producer(load.linger_ms, false)
        .create_with_context(DeliveryCounter::default())?;
    let counter = producer.context().clone();
    let consumer: BaseConsumer<LoggingContext> = settings
        .consumer(group)
        .set("auto.offset.reset", "latest")
        .create_with_context(LoggingContext)?;
    let outputs = [topics.scored.as_str(), topics.dlq.as_str()];
    let metadata_timeout = Duration::from_secs(30);

    if !load.ready_timeout.is_zero() {
        kafka::assign_at_end(&consumer, &outputs, metadata_timeout)?;
        let waited = wait_ready(
            &producer,
            &consumer,
            &topics.input,
            run_id,
            load.ready_timeout,
            sut,
            stop,
        )?;
        eprintln!(
            "loadgen: the system under test answered after {:.1}s",
            waited.as_secs_f64()
        );
    }
    // Probe acknowledgements must not count as the run's.
    let _ = producer.flush(Duration::from_secs(5));
    let acked_before = counter.acked.load(Ordering::Relaxed);
    let failed_before = counter.failed.load(Ordering::Relaxed);
    // Start both output topics at their current end: everything after is ours or foreign.
    kafka::assign_at_end(&consumer, &outputs, metadata_timeout)?;

    // Draw the population before the clock starts: it takes a moment for large populations.
    let mut stream = TransactionStream::start(load.seed, population)
        .map_err(io_err("starting the simulator thread"))?;
    let mut first = Some(stream.next_transaction().ok_or(RunError::NoTraffic)?);

    let shared = Arc::new(Shared {
        expected: Mutex::new(Expected::default()),
        sent: AtomicU64::new(0),
        sending_done: AtomicBool::new(false),
        drain_deadline_us: AtomicU64::new(u64::MAX),
        deliveries: counter.clone(),
        failed_before,
    });
    // A short lead so the receiver is polling before the first message is due.
    let start = Instant::now() + Duration::from_millis(50);
    let wall_start_ms = traffic::now_millis() + 50;
    let started_at =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_start_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();

    let receiver = {
        let shared = shared.clone();
        let schedule = *schedule;
        let run_id = run_id.to_owned();
        let scored_topic = topics.scored.clone();
        let warmup = load.warmup;
        thread::Builder::new()
            .name("loadgen-receive".into())
            .spawn(move || {
                receive(
                    &consumer,
                    &shared,
                    &schedule,
                    &run_id,
                    &scored_topic,
                    start,
                    warmup,
                )
            })
            .map_err(io_err("starting the receiver thread"))?
    };

    let clock = EventClock::new(
        wall_start_ms,
        schedule.offset(schedule.count().saturating_sub(1)),
        load.time_acceleration,
    );
    let mut labels = match &topics.labels {
        Some(topic) => Some(LabelFeed::new(
            settings,
            load.linger_ms,
            topic,
            load.label_delay,
        )?),
        None => None,
    };
    let mix = BadMix::new(load.bad_ratio);
    let mut bad_sent_by_reason: BTreeMap<RejectReason, u64> = BTreeMap::new();
    let mut send_lag = report::latency_histogram();
    let mut recent_customer: Option<CustomerId> = None;
    let mut value = Vec::with_capacity(512);
    let mut sent = 0u64;
    let mut interrupted = false;
    let mut last_send = start;
    let mut send_error = None;

    for seq in 0..schedule.count() {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let offset = schedule.offset(seq);
        let due = start + offset;
        wait_until(due, &producer);
        let tx = match first.take() {
            Some(tx) => tx,
            None => stream.next_transaction().ok_or(RunError::NoTraffic)?,
        };
        // Malformed messages keep the wall clock: "ahead of the clock" must be ahead of it.
        let epoch_millis = wall_start_ms + offset.as_millis() as i64;
        let event_millis = clock.at(offset);
        let transaction_id = traffic::transaction_id(run_id, seq);
        let (key, label) = match mix.bad_index(seq) {
            Some(n) => {
                let message = bad::build(
                    Defect::nth(n),
                    &bad::Slot {
                        transaction_id: &transaction_id,
                        tx: &tx,
                        epoch_millis,
                        recent_customer,
                    },
                );
                shared
                    .expected
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .add_bad(seq, message.reason(), &message.value);
                *bad_sent_by_reason.entry(message.reason()).or_default() += 1;
                value = message.value;
                (message.key, None)
            }
            None => {
                value.clear();
                traffic::write_transaction(&mut value, &transaction_id, &tx, event_millis);
                if let Some(labels) = labels.as_mut() {
                    labels.push(&transaction_id, &tx, event_millis);
                }
                recent_customer = Some(tx.customer);
                (
                    tx.customer.to_string().into_bytes(),
                    Some(tx.label.scenario()),
                )
            }
        };
        let seq_text = seq.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: SEQ_HEADER,
                value: Some(&seq_text),
            })
            .insert(Header {
                key: RUN_HEADER,
                value: Some(run_id),
            });
        if let Some(label) = label {
            headers = headers.insert(Header {
                key: LABEL_HEADER,
                value: Some(&label.to_string()),
            });
        }
        let record = BaseRecord::to(&topics.input)
            .key(&key[..])
            .payload(&value[..])
            .headers(headers);
        if let Err(error) = send_retrying(&producer, record) {
            send_error = Some(error);
            break;
        }
        if let Some(labels) = labels.as_mut() {
            if let Err(error) = labels.publish_due(event_millis) {
                send_error = Some(error);
                break;
            }
        }
        last_send = Instant::now();
        send_lag.saturating_record(micros(last_send.saturating_duration_since(due)));
        sent += 1;
        shared.sent.store(sent, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
    }

    let send_end = Instant::now();
    let drain_deadline = send_end.saturating_duration_since(start) + load.drain_timeout;
    shared
        .drain_deadline_us
        .store(micros(drain_deadline), Ordering::Relaxed);
    shared.sending_done.store(true, Ordering::Release);
    // Waits for acknowledgements while the receiver keeps collecting outputs.
    let flushed = producer.flush(load.drain_timeout);
    let labels_published = labels.map_or(0, |l| l.finish(load.drain_timeout));
    let received = receiver
        .join()
        .map_err(|_| RunError::NotReady("the receiver thread panicked".into()))??;
    if let Some(error) = send_error {
        return Err(error.into());
    }
    if let Err(error) = flushed {
        eprintln!("loadgen: producer flush: {error}");
    }

    let expected = shared
        .expected
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let matcher = &received.matcher;
    let missing = sent.saturating_sub(matcher.unique());
    let bad_missing = expected
        .bad_seqs()
        .filter(|&(seq, _)| !matcher.has_received(seq))
        .count() as u64;
    let scheduled_span = schedule.offset(sent.saturating_sub(1)) + schedule.offset(1);
    let send_span = last_send.saturating_duration_since(start) + schedule.offset(1);
    let receive_span = received
        .last_first_output
        .unwrap_or_default()
        .max(scheduled_span);
    let per_second = |count: u64, span: Duration| {
        if span.is_zero() {
            0.0
        } else {
            count as f64 / span.as_secs_f64()
        }
    };
    let lag = LatencySummary::of(&send_lag);
    let summary = RunSummary {
        sent,
        produce_acked: counter.acked.load(Ordering::Relaxed) - acked_before,
        produce_failed: counter.failed.load(Ordering::Relaxed) - failed_before,
        send_rate: per_second(sent, send_span),
        send_lag_p99_ms: lag.p99_ms,
        send_lag_max_ms: lag.max_ms,
        received: matcher.unique(),
        missing,
        throughput: per_second(matcher.unique(), receive_span),
        counts: matcher.counts.clone(),
        bad_sent: bad_sent_by_reason.values().sum(),
        bad_sent_by_reason,
        bad_missing,
        drained: received.all_arrived,
        interrupted,
        latency: LatencySummary::of(&received.histogram),
        labels_published,
        missing_sample: matcher.missing(sent).take(20).collect(),
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    Ok((summary, received.series, received.histogram, started_at))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Sleeps until `due`, serving delivery reports meanwhile when there is time for it.
fn wait_until<C: ProducerContext>(due: Instant, producer: &BaseProducer<C>) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_millis(2) {
            producer.poll(left - Duration::from_millis(1));
        } else {
            thread::sleep(left);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn header<'a>(message: &'a BorrowedMessage<'a>, name: &str) -> Option<&'a [u8]> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn header_number<T: std::str::FromStr>(message: &BorrowedMessage<'_>, name: &str) -> Option<T> {
    std::str::from_utf8(header(message, name)?)
        .ok()?
        .parse()
        .ok()
}

/// The receiver thread: matches outputs, records latency, prints progress each second and
/// decides when the run is over.
fn receive(
    consumer: &BaseConsumer<LoggingContext>,
    shared: &Shared,
    schedule: &Schedule,
    run_id: &str,
    scored_topic: &str,
    start: Instant,
    warmup: Duration,
) -> Result<Received, RunError> {
    let mut matcher = Matcher::new(run_id, schedule.count());
    let probe_prefix = format!("lg-{run_id}-probe-");
    let mut histogram = report::latency_histogram();
    let mut second = report::latency_histogram();
    let mut series = Vec::new();
    let mut second_received = 0u64;
    let mut sent_before = 0u64;
    let mut next_tick = start + Duration::from_secs(1);
    let mut last_first_output = None;
    let all_arrived = loop {
        // Consumer errors are mostly transient (a broker connection dropping); librdkafka
        // retries by itself, and what never arrives is reported as missing.
        let polled = match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => Some(message),
            Some(Err(error)) => {
                eprintln!("loadgen: consumer: {error}");
                None
            }
            None => None,
        };
        if let Some(message) = polled {
            let now = Instant::now();
            let is_probe = header(&message, PROBE_HEADER).is_some()
                || (header(&message, RUN_HEADER).is_none()
                    && message
                        .payload()
                        .is_some_and(|value| contains(value, probe_prefix.as_bytes())));
            if !is_probe {
                let topic = if message.topic() == scored_topic {
                    Topic::Scored
                } else {
                    Topic::DeadLetter
                };
                let ours = header(&message, RUN_HEADER) == Some(run_id.as_bytes());
                let output = Output {
                    value: message.payload(),
                    header_seq: if ours {
                        header_number(&message, SEQ_HEADER)
                    } else {
                        None
                    },
                    dlq_reason: header(&message, headers::DLQ_REASON)
                        .and_then(|v| std::str::from_utf8(v).ok()),
                    label: header_number(&message, LABEL_HEADER),
                };
                let verdict = {
                    let expected = shared
                        .expected
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    matcher.on_output(topic, &output, &expected)
                };
                if let Verdict::First(seq) = verdict {
                    let intended = start + schedule.offset(seq);
                    let latency = micros(now.saturating_duration_since(intended));
                    second.saturating_record(latency.max(1));
                    if schedule.offset(seq) >= warmup {
                        histogram.saturating_record(latency.max(1));
                    }
                    second_received += 1;
                    last_first_output = Some(now.saturating_duration_since(start));
                }
            }
        }
        let now = Instant::now();
        while now >= next_tick {
            let sent = shared.sent.load(Ordering::Relaxed);
            let stats = SecondStats {
                second: series.len() as u64,
                sent: sent - sent_before,
                received: second_received,
                p50_ms: second.value_at_quantile(0.5) as f64 / report::MICROS_PER_MS,
                p99_ms: second.value_at_quantile(0.99) as f64 / report::MICROS_PER_MS,
                max_ms: second.max() as f64 / report::MICROS_PER_MS,
            };
            eprintln!(
                "[{:>4}s] sent {:>9} ({:>6}/s)  received {:>9} ({:>6}/s)  p50 {:>7.2} ms  p99 {:>7.2} ms",
                stats.second + 1,
                sent,
                stats.sent,
                matcher.unique(),
                stats.received,
                stats.p50_ms,
                stats.p99_ms
            );
            series.push(stats);
            sent_before = sent;
            second_received = 0;
            second.reset();
            next_tick += Duration::from_secs(1);
        }
        if shared.sending_done.load(Ordering::Acquire) {
            let sent = shared.sent.load(Ordering::Relaxed);
            let failed = shared.deliveries.failed.load(Ordering::Relaxed) - shared.failed_before;
            if matcher.unique() + failed >= sent {
                break matcher.unique() >= sent;
            }
            let deadline = shared.drain_deadline_us.load(Ordering::Relaxed);
            if micros(now.saturating_duration_since(start)) >= deadline {
                break false;
            }
        }
    };
    // The partial last second still belongs in the series.
    if second_received > 0 || shared.sent.load(Ordering::Relaxed) > sent_before {
        series.push(SecondStats {
            second: series.len() as u64,
            sent: shared.sent.load(Ordering::Relaxed) - sent_before,
            received: second_received,
            p50_ms: second.value_at_quantile(0.5) as f64 / report::MICROS_PER_MS,
            p99_ms: second.value_at_quantile(0.99) as f64 / report::MICROS_PER_MS,
            max_ms: second.max() as f64 / report::MICROS_PER_MS,
        });
    }
    Ok(Received {
        matcher,
        histogram,
        series,
        last_first_output,
        all_arrived,
    })
}

/// Sends a probe transaction every half second until one comes out on an output topic, so
/// that a service still joining its group or loading its model does not count against the
/// measurement.
fn wait_ready<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    consumer: &BaseConsumer<LoggingContext>,
    input_topic: &str,
    run_id: &str,
    timeout: Duration,
    mut sut: Option<&mut Sut>,
    stop: &AtomicBool,
) -> Result<Duration, RunError> {
    let started = Instant::now();
    let customer = format!("lg-probe-{run_id}");
    let probe_prefix = format!("lg-{run_id}-probe-");
    for attempt in 0u64.. {
        if started.elapsed() > timeout {
            return Err(RunError::NotReady(format!(
                "no output for a probe on {input_topic} within {}: is the service running and \
                 reading that topic?",
                humantime::format_duration(timeout)
            )));
        }
        if stop.load(Ordering::Relaxed) {
            return Err(RunError::NotReady("interrupted while waiting".into()));
        }
        if let Some(sut) = sut.as_deref_mut() {
            if let Some(status) = sut.exited().map_err(io_err("checking the service"))? {
                return Err(RunError::NotReady(format!(
                    "the system under test exited ({status}) before it was ready; see sut.log"
                )));
            }
        }
        // The probe has its own customer so it never touches the run's customers' windows.
        let probe_id = format!("lg-{run_id}-probe-{attempt}");
        let mut value = format!(
            "{{\"transaction_id\":\"{probe_id}\",\"customer_id\":\"{customer}\",\
             \"terminal_id\":\"t-0\",\"amount\":1.00,\"timestamp\":\""
        )
        .into_bytes();
        traffic::write_timestamp(&mut value, traffic::now_millis());
        value.extend_from_slice(b"\"}");
        let headers = OwnedHeaders::new().insert(Header {
            key: PROBE_HEADER,
            value: Some(run_id),
        });
        let record = BaseRecord::to(input_topic)
            .key(customer.as_bytes())
            .payload(&value[..])
            .headers(headers);
        send_retrying(producer, record)?;
        let wait_until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < wait_until {
            producer.poll(Duration::ZERO);
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(20)) {
                // The header is the contract; the id in the value covers a service that
                // drops headers.
                let in_value = message
                    .payload()
                    .is_some_and(|value| contains(value, probe_prefix.as_bytes()));
                if header(&message, PROBE_HEADER) == Some(run_id.as_bytes()) || in_value {
                    return Ok(started.elapsed());
                }
            }
        }
    }
    Err(RunError::NotReady("probe loop ended".into()))
}

/// The end-of-run text on stdout.
pub fn print_summary(report: &RunReport, dir: &Path) {
    let s = &report.summary;
    let c = &s.counts;
    let l = &s.latency;
    println!(
        "run {}: {}/s for {}s against {} -> {}",
        report.run_id,
        report.config.rate,
        report.config.duration_s,
        report.config.topics.input,
        dir.display()
    );
    println!(
        "sent {} (achieved {:.0}/s, {} produce failures), scored {}, dead-lettered {}, missing {}, \
         duplicated {}, unexpected {}",
        s.sent,
        s.send_rate,
        s.produce_failed,
        c.scored,
        c.dead_lettered,
        s.missing,
        c.duplicates,
        c.unexpected
    );
    println!(
        "throughput {:.0}/s; latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  \
         (n = {}, sender lag p99 {:.2} max {:.2})",
        s.throughput,
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        l.count,
        s.send_lag_p99_ms,
        s.send_lag_max_ms
    );
    println!(
        "bad sent {}, bad missing {}, bad scored {}, dlq reason mismatches {}, good \
         dead-lettered {}, matched by header only {}",
        s.bad_sent,
        s.bad_missing,
        c.bad_scored,
        c.dlq_reason_mismatches,
        c.good_dead_lettered,
        c.matched_by_header
    );
    if !c.dlq_by_reason.is_empty() {
        println!("dead letters by reason: {:?}", c.dlq_by_reason);
    }
    if c.bad_scored > 0 && c.dead_lettered > 0 {
        // Only a real service is expected to reject them; a pass-through scores them all.
        println!(
            "bad messages scored instead of rejected, by intended reason: {:?}",
            c.bad_scored_by_reason
        );
    }
    if let Some(topic) = &report.config.topics.labels {
        println!(
            "labels published to {topic}: {} ({} after each transaction in event time, which ran \
             {}x the wall clock)",
            s.labels_published,
            humantime::format_duration(Duration::from_secs_f64(report.config.label_delay_s)),
            report.config.time_acceleration
        );
    }
    if !s.missing_sample.is_empty() {
        println!("first missing sequence numbers: {:?}", s.missing_sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_the_report() {
        let shown = masked(&[
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.password".into(), "hunter2".into()),
            ("ssl.key.pem".into(), "-----BEGIN".into()),
        ]);
        assert_eq!(shown["security.protocol"], "SASL_SSL");
        assert_eq!(shown["sasl.password"], "***");
        assert_eq!(shown["ssl.key.pem"], "***");
    }

    #[test]
    fn suffixes_apply_to_all_three_topics() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--topic-suffix",
            "-r1",
            "--rate",
            "500",
            "--duration",
            "3s",
            "-X",
            "linger.ms=1",
        ]);
        let topics = cli.run.load.topics();
        assert_eq!(
            (
                topics.input.as_str(),
                topics.scored.as_str(),
                topics.dlq.as_str()
            ),
            (
                "transactions-r1",
                "transactions-scored-r1",
                "transactions-dlq-r1"
            )
        );
        assert_eq!(cli.run.duration, Duration::from_secs(3));
        assert_eq!(cli.run.load.property, [("linger.ms".into(), "1".into())]);
        assert_eq!(cli.run.load.population().terminals, 20_000);
    }
}
