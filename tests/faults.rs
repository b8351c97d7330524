//! Faults in-process on librdkafka's mock cluster: outputs the producer refuses, and consumer-group rebalances under load.
//!
//! Each test runs the real `Service` (shipped config, shipped model) against its own
//! `MockCluster`, feeds it with its own producer and reads both output topics back from the
//! beginning with a consumer that assigns itself every partition (no group membership).
//! `RUST_LOG=fraudscore=debug` shows the service's logs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use fraudscore::config::Config;
use fraudscore::service::{Service, ServiceError};
use fraudscore::shared::Lanes;
use fraudscore_contract::headers;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const SHIPPED_CONFIG: &str = include_str!("../config/fraudscore.toml");
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fraud.onnx");
const INPUT: &str = "transactions";
const SCORED: &str = "transactions-scored";
const DLQ: &str = "transactions-dlq";
/// The service's consumer group in the shipped config.
const GROUP: &str = "fraudscore";
/// What the pipeline cuts a refused output's key and value to (`TRUNCATED_BYTES` in src/pipeline).
const TRUNCATED_BYTES: usize = 1024;

type Cluster = MockCluster<'static, DefaultProducerContext>;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The service's logs on the test's output; `RUST_LOG` overrides the default filter.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fraudscore=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A fresh mock cluster with the input topic (`input_partitions`) and both output topics (4 each).
fn cluster(input_partitions: i32) -> Cluster {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(INPUT, input_partitions, 1)
        .expect("input topic");
    for topic in [SCORED, DLQ] {
        cluster.create_topic(topic, 4, 1).expect("output topic");
    }
    cluster
}

/// The shipped config pointed at the mock cluster, with an ephemeral HTTP port, plus `extra`
/// overrides in the `FRAUDSCORE__...` form.
fn config(brokers: &str, extra: &[(&str, &str)]) -> Config {
    let base = [
        ("FRAUDSCORE__KAFKA__BROKERS", brokers),
        ("FRAUDSCORE__HTTP__LISTEN", "127.0.0.1:0"),
        ("FRAUDSCORE__MODEL__PATH", MODEL),
        // The mock cluster's statistics are of no use here.
        ("FRAUDSCORE__KAFKA__CONSUMER__STATISTICS_INTERVAL_MS", "0"),
        // No snapshots: every test makes a fresh mock cluster with the same topic names, whose
        // offsets a snapshot from an earlier test would match. Snapshots are tested on nisshi.
        ("FRAUDSCORE__STATE__SNAPSHOT_INTERVAL", "0s"),
    ];
    let env = base
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()));
    Config::parse(SHIPPED_CONFIG, "config/fraudscore.toml", env).expect("config")
}

/// The tests measure timing-sensitive behaviour on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running service that is stopped even when the test fails halfway, so that its pipeline
/// does not outlive the test (and its mock cluster).
struct Running(Option<Service>);

impl Running {
    fn start(config: Config) -> Running {
        Running(Some(Service::start(config).expect("service start")))
    }

    /// `stop()`, failing the test if it takes longer than `limit`. The result and how long it took.
    fn stop_within(mut self, limit: Duration) -> (Result<(), ServiceError>, Duration) {
        let service = self.0.take().expect("running");
        let started = Instant::now();
        match stop_in_background(service).recv_timeout(limit) {
            Ok(result) => (result, started.elapsed()),
            Err(_) => panic!("service.stop() did not return within {limit:?}"),
        }
    }
}

impl std::ops::Deref for Running {
    type Target = Service;

    fn deref(&self) -> &Service {
        self.0.as_ref().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(service) = self.0.take() {
            // Bounded, and no panic here: this runs while a failed test unwinds.
            let _ = stop_in_background(service).recv_timeout(Duration::from_secs(30));
        }
    }
}

/// Stops the service on a thread of its own (a hung stop must not hang the test run).
fn stop_in_background(service: Service) -> mpsc::Receiver<Result<(), ServiceError>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(service.stop());
    });
    rx
}

/// Starts a service and waits (bounded) until the group gave it partitions.
fn start_with_partitions(config: Config) -> Running {
    let service = Running::start(config);
    let waited = wait_until(Duration::from_secs(30), || service.lanes().has_partitions());
    assert!(waited, "the service got no partitions within 30 s");
    service
}

/// Polls `done` every 20 ms until it holds or `limit` passes; whether it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A valid input value.
fn transaction(id: &str, customer: &str, amount: f64) -> Vec<u8> {
    json!({
        "transaction_id": id,
        "customer_id": customer,
        "amount": amount,
        "timestamp": now_millis(),
    })
    .to_string()
    .into_bytes()
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        // In order and once each, so that what the service outputs twice is its own doing.
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

/// Sends fifty valid transactions, `t-0` to `t-49`, of ten customers.
fn send_fifty(producer: &ThreadedProducer<DefaultProducerContext>) {
    for i in 0..50 {
        let customer = format!("c-{}", i % 10);
        let value = transaction(&format!("t-{i}"), &customer, 5.0 + i as f64);
        send(producer, customer.as_bytes(), &value, None);
    }
}

/// Sends one record, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    key: &[u8],
    value: &[u8],
    headers: Option<OwnedHeaders>,
) {
    let mut record = BaseRecord::to(INPUT).key(key).payload(value);
    record.headers = headers;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((e, r)) => {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "test producer: {e}"
                );
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// One message read back from an output topic.
#[derive(Debug, Clone)]
struct Out {
    topic: String,
    partition: i32,
    offset: i64,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    /// A field of the scored output, and of a dead letter's original value.
    transaction_id: Option<String>,
}

impl Out {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

fn transaction_id(value: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(value).ok()?;
    value["transaction_id"].as_str().map(str::to_string)
}

/// Reads output topics from the beginning on a thread of its own, outside any group.
struct Reader {
    seen: Arc<Mutex<Vec<Out>>>,
    /// Distinct transaction ids seen, kept up to date by the reading thread.
    distinct: Arc<AtomicUsize>,
    last_at: Arc<Mutex<Instant>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Reads both output topics.
    fn start(brokers: &str) -> Reader {
        Reader::start_on(brokers, &[SCORED, DLQ])
    }

    fn start_on(brokers: &str, topics: &[&str]) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // librdkafka wants a group even for `assign`; this one never joins nor commits.
            .set("group.id", "faults-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            for p in 0..4 {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .expect("tpl");
            }
        }
        consumer.assign(&tpl).expect("assign");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let distinct = Arc::new(AtomicUsize::new(0));
        let last_at = Arc::new(Mutex::new(Instant::now()));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, distinct, last_at, done) = (
                seen.clone(),
                distinct.clone(),
                last_at.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let mut ids = HashSet::new();
                while !done.load(Ordering::Relaxed) {
                    let msg = match consumer.poll(Duration::from_millis(50)) {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => panic!("reader: {e}"),
                        None => continue,
                    };
                    let headers = msg
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let value = msg.payload().unwrap_or_default().to_vec();
                    let out = Out {
                        topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                        transaction_id: transaction_id(&value),
                        value,
                        headers,
                    };
                    if let Some(id) = &out.transaction_id {
                        ids.insert(id.clone());
                        distinct.store(ids.len(), Ordering::Relaxed);
                    }
                    seen.lock().unwrap().push(out);
                    *last_at.lock().unwrap() = Instant::now();
                }
            })
        };
        Reader {
            seen,
            distinct,
            last_at,
            done,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Out> {
        self.seen.lock().unwrap().clone()
    }

    /// Distinct transaction ids output so far, on either topic.
    fn distinct_ids(&self) -> usize {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Waits until nothing new arrived for `quiet` (bounded by `limit`), then stops reading and
    /// returns everything read.
    fn finish(mut self, quiet: Duration, limit: Duration) -> Vec<Out> {
        wait_until(limit, || self.last_at.lock().unwrap().elapsed() >= quiet);
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("reader thread");
        }
        self.snapshot()
    }
}

/// The value of an unlabelled metric in the Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// 0. A shadow record not yet acknowledged
// ---------------------------------------------------------------------------------------------

/// With `kafka.shadow_topic`, each input has two outputs, and is committed only once both are
/// acknowledged: while the shadow topic has no leader, the scored outputs come out and nothing is
/// committed; once it has one, the shadow records follow and so do the commits.
#[test]
fn an_input_whose_shadow_record_is_not_acknowledged_stays_uncommitted() {
    let _serial = serial();
    logs();
    const SHADOW: &str = "transactions-shadow";
    let cluster = cluster(1);
    cluster.create_topic(SHADOW, 4, 1).expect("shadow topic");
    let no_leader = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE;
    cluster.topic_error(SHADOW, no_leader).expect("topic error");
    let brokers = cluster.bootstrap_servers();
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.onnx");
    let service = start_with_partitions(config(
        &brokers,
        &[
            ("FRAUDSCORE__MODEL__SHADOW", tiny),
            ("FRAUDSCORE__KAFKA__SHADOW_TOPIC", SHADOW),
        ],
    ));
    let scored = Reader::start(&brokers);
    let input = producer(&brokers);
    send_fifty(&input);
    input.flush(Duration::from_secs(10)).expect("input flushed");
    assert!(
        wait_until(Duration::from_secs(30), || scored.distinct_ids() == 50),
        "every scored output came out: {}",
        scored.distinct_ids()
    );
    // Ten commit intervals and more.
    std::thread::sleep(Duration::from_secs(1));
    let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
    assert_eq!(
        committed,
        [-1],
        "nothing committed while the shadow records wait (input ends at {ends:?})"
    );

    let no_error = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
    cluster
        .topic_error(SHADOW, no_error)
        .expect("topic error cleared");
    let shadowed = Reader::start_on(&brokers, &[SHADOW]);
    assert!(
        wait_until(Duration::from_secs(60), || shadowed.distinct_ids() == 50),
        "every shadow record came out: {}",
        shadowed.distinct_ids()
    );
    let caught_up = wait_until(Duration::from_secs(30), || {
        let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
        committed == ends
    });
    assert!(
        caught_up,
        "{:?}",
        common::committed_and_ends(&brokers, GROUP, INPUT, 1)
    );
    let (stopped, _) = service.stop_within(Duration::from_secs(30));
    stopped.expect("clean stop");
}

// ---------------------------------------------------------------------------------------------
// 1. An output the producer refuses
// ---------------------------------------------------------------------------------------------

#[test]
fn an_output_the_producer_refuses_is_dead_lettered_truncated_and_the_partition_keeps_flowing() {
    let _serial = serial();
    logs();
    // One input partition: everything sent after the refused messages queues behind them.
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let service = start_with_partitions(config(
        &brokers,
        &[("FRAUDSCORE__KAFKA__PRODUCER__MESSAGE_MAX_BYTES", "20000")],
    ));
    let reader = Reader::start(&brokers);
    let input = producer(&brokers);
    let sent_at = Instant::now();

    // (a) A valid transaction with ~30 kB of headers: its scored output carries them too and
    // is over the service producer's message.max.bytes.
    let chunk = vec![b'h'; 1000];
    let big_headers = (0..30).fold(OwnedHeaders::new(), |h, i| {
        h.insert(Header {
            key: &format!("pad-{i}"),
            value: Some(&chunk),
        })
    });
    send(
        &input,
        b"c-big",
        &transaction("t-big", "c-big", 10.0),
        Some(big_headers),
    );
    // (b) ~30 kB that is not JSON: under the engine's 64 KiB limit, so it is dead-lettered as
    // it is, which is again over the producer's limit.
    let mut not_json = b"{\"transaction_id\": \"t-bad\", \"padding\": \"".to_vec();
    not_json.resize(30_000, b'x');
    send(&input, b"c-bad", &not_json, None);
    // (c) Fifty normal ones behind them.
    let normal: BTreeSet<String> = (0..50).map(|i| format!("t-{i}")).collect();
    send_fifty(&input);
    input.flush(Duration::from_secs(10)).expect("input flushed");

    let arrived = wait_until(Duration::from_secs(30), || {
        let seen = reader.snapshot();
        let scored = seen.iter().filter(|o| o.topic == SCORED).count();
        let dlq = seen.iter().filter(|o| o.topic == DLQ).count();
        scored >= normal.len() && dlq >= 2
    });
    let took = sent_at.elapsed();
    // Read while running, from the periodic commits: a commit at stop can be refused while the
    // group is still settling the second pipeline's join (RebalanceInProgress), which is not
    // what this test is about.
    let (mut committed, mut ends) = (Vec::new(), Vec::new());
    wait_until(Duration::from_secs(10), || {
        (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
        committed == ends
    });
    let metrics = service.lanes().render_metrics();
    let (stopped, stop_took) = service.stop_within(Duration::from_secs(30));
    let seen = reader.finish(Duration::from_millis(500), Duration::from_secs(5));

    let scored: Vec<&Out> = seen.iter().filter(|o| o.topic == SCORED).collect();
    let dlq: Vec<&Out> = seen.iter().filter(|o| o.topic == DLQ).collect();
    println!(
        "refused outputs: {} scored, {} dead-lettered after {took:?} (all arrived: {arrived}); stop took {stop_took:?}; committed {committed:?} of {ends:?}",
        scored.len(),
        dlq.len()
    );
    for d in &dlq {
        println!(
            "  dlq {}@{}: reason {:?}, source offset {:?}, {} value bytes, error {:?}",
            d.partition,
            d.offset,
            d.header(headers::DLQ_REASON),
            d.header(headers::SOURCE_OFFSET),
            d.value.len(),
            d.header(headers::DLQ_ERROR)
        );
    }
    for line in metrics.lines().filter(|l| {
        [
            "fraudscore_dlq_total",
            "fraudscore_transactions_total",
            "fraudscore_outputs_truncated_total",
        ]
        .iter()
        .any(|m| l.starts_with(m))
    }) {
        println!("  {line}");
    }

    let scored_ids: BTreeSet<String> = scored
        .iter()
        .filter_map(|o| o.transaction_id.clone())
        .collect();
    assert_eq!(
        scored_ids, normal,
        "exactly the 50 normal transactions are scored (and nothing after the refused ones is stuck)"
    );
    assert_eq!(scored.len(), normal.len(), "each scored once");
    assert_eq!(
        dlq.len(),
        2,
        "both refused outputs are dead-lettered, once each"
    );

    let mut by_offset: BTreeMap<i64, &Out> = BTreeMap::new();
    for d in &dlq {
        assert_eq!(d.header(headers::DLQ_REASON).as_deref(), Some("oversized"));
        assert_eq!(d.header(headers::SOURCE_TOPIC).as_deref(), Some(INPUT));
        assert_eq!(d.header(headers::SOURCE_PARTITION).as_deref(), Some("0"));
        assert!(
            d.value.len() <= TRUNCATED_BYTES,
            "value cut to {TRUNCATED_BYTES} bytes, got {}",
            d.value.len()
        );
        let error = d.header(headers::DLQ_ERROR).unwrap_or_default();
        assert!(
            error.contains("refused"),
            "the error header says the producer refused the output: {error:?}"
        );
        assert!(
            !d.headers.iter().any(|(k, _)| k.starts_with("pad-")),
            "the input's headers are not copied onto the truncated dead letter"
        );
        let offset = d
            .header(headers::SOURCE_OFFSET)
            .and_then(|o| o.parse().ok())
            .expect("source offset header");
        by_offset.insert(offset, d);
    }
    // (a) was input offset 0, (b) offset 1.
    assert_eq!(by_offset.keys().copied().collect::<Vec<_>>(), [0, 1]);
    let from_big = String::from_utf8_lossy(&by_offset[&0].value);
    assert!(
        from_big.contains("t-big"),
        "the truncated scored output of t-big: {from_big:?}"
    );
    assert_eq!(
        by_offset[&1].value,
        not_json[..TRUNCATED_BYTES],
        "the first {TRUNCATED_BYTES} bytes of the invalid input"
    );

    assert_eq!(
        metric(&metrics, "fraudscore_outputs_truncated_total"),
        Some(2.0),
        "metrics:\n{metrics}"
    );
    // Each message counted once, under the reason it went out with.
    assert_eq!(
        metric(&metrics, "fraudscore_dlq_total{reason=\"oversized\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&metrics, "fraudscore_dlq_total{reason=\"invalid_json\"}"),
        Some(0.0)
    );
    let first = by_offset[&1].header(headers::DLQ_ERROR).unwrap_or_default();
    assert!(
        first.contains("invalid_json"),
        "the truncated dead letter keeps the original reason: {first:?}"
    );
    assert!(arrived, "all outputs arrived within 30 s");
    stopped.expect("the service stops cleanly");
    assert_eq!(
        committed, ends,
        "every input offset is committed, the refused ones included"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A rebalance under load
// ---------------------------------------------------------------------------------------------

#[test]
fn a_rebalance_under_load_neither_loses_nor_duplicates_eager() {
    rebalance_under_load(Protocol::Eager, "0ms");
}

#[test]
fn a_rebalance_under_load_neither_loses_nor_duplicates_cooperative() {
    rebalance_under_load(Protocol::Cooperative, "0ms");
}

/// With `model.max_wait`, transactions wait in the batch for up to a second, so a revocation
/// finds some of the revoked partitions' transactions there: they are dropped for the next
/// owner, not output by both. (With the shipped 0 ms the batch is scored before the next poll that finds nothing,
/// so a revocation rarely finds one.) Duplicates are asserted only when the mock accepted the
/// revocation commit (see the end of `rebalance_under_load`): without the drop, 3 of 4 runs
/// failed here, with 26 to 41 transactions output twice.
#[test]
fn a_rebalance_while_transactions_wait_in_the_batch_neither_loses_nor_duplicates() {
    rebalance_under_load(Protocol::Cooperative, "1s");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Eager,
    Cooperative,
}

const TOTAL: u64 = 6000;
/// 12 s of load: long enough to span both rebalances (see `rebalance_under_load`).
const RATE: u64 = 500;
const CUSTOMERS: u64 = 500;
const PARTITIONS: i32 = 4;

/// Sends `TOTAL` transactions at `RATE` per second, ids `tx-0`, `tx-1`, ...
fn send_load(brokers: &str) -> JoinHandle<()> {
    let input = producer(brokers);
    std::thread::spawn(move || {
        let started = Instant::now();
        for n in 0..TOTAL {
            let due = Duration::from_secs_f64(n as f64 / RATE as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            let customer = format!("c-{}", n % CUSTOMERS);
            let value = transaction(&format!("tx-{n}"), &customer, 1.0 + (n % 97) as f64);
            send(&input, customer.as_bytes(), &value, None);
        }
        input.flush(Duration::from_secs(10)).expect("load flushed");
    })
}

/// The partitions each instance held, sampled every 20 ms.
struct Sample {
    at: Instant,
    a: Vec<i32>,
    b: Vec<i32>,
}

fn sample_health(a: Arc<Lanes>, b: Arc<Lanes>, done: Arc<AtomicBool>) -> JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !done.load(Ordering::Relaxed) {
            samples.push(Sample {
                at: Instant::now(),
                a: a.held(),
                b: b.held(),
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        samples
    })
}

/// Two instances in one group, B joining and then A leaving while transactions flow: every
/// transaction is output, and with the cooperative protocol none twice.
fn rebalance_under_load(protocol: Protocol, max_wait: &str) {
    let _serial = serial();
    logs();
    let cluster = cluster(PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let strategy = match protocol {
        Protocol::Eager => "range",
        Protocol::Cooperative => "cooperative-sticky",
    };
    let config = config(
        &brokers,
        &[
            (
                "FRAUDSCORE__KAFKA__CONSUMER__PARTITION_ASSIGNMENT_STRATEGY",
                strategy,
            ),
            // The mock coordinator holds the group in its joining state for session.timeout.ms
            // minus 1 s after every join (9 s with the shipped 10 s), however fast the members
            // rejoin; a shorter session keeps both rebalances inside the load.
            ("FRAUDSCORE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "4000"),
            ("FRAUDSCORE__KAFKA__CONSUMER__HEARTBEAT_INTERVAL_MS", "500"),
            ("FRAUDSCORE__MODEL__MAX_WAIT", max_wait),
        ],
    );
    let a = start_with_partitions(config.clone());
    // Kept past A's stop, for its metrics.
    let a_shared = a.lanes().clone();
    let reader = Reader::start(&brokers);
    let t0 = Instant::now();
    let sender = send_load(&brokers);

    std::thread::sleep(Duration::from_millis(1500));
    let b_started = Instant::now();
    let b = Running::start(config);
    let done_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_health(a_shared.clone(), b.lanes().clone(), done_sampling.clone());

    // B's join is a rebalance: stop A once it is over (B holds partitions) and ~1.5 s passed.
    let b_joined = wait_until(Duration::from_secs(30), || {
        b.lanes().has_partitions() && b_started.elapsed() >= Duration::from_millis(1500)
    });
    assert!(b_joined, "instance B got no partitions within 30 s");
    let a_held_before_stop = a.lanes().held();
    let a_stop_called = Instant::now();
    let (a_stopped, a_stop_took) = a.stop_within(Duration::from_secs(30));
    let a_stop_returned = Instant::now();

    // A's leave is the second rebalance; wait until everything sent is output.
    let all_out = wait_until(Duration::from_secs(60), || {
        sender.is_finished() && reader.distinct_ids() as u64 >= TOTAL
    });
    let all_out_at = t0.elapsed();
    done_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let b_metrics = b.lanes().render_metrics();
    let (b_stopped, b_stop_took) = b.stop_within(Duration::from_secs(30));
    sender.join().expect("sender");
    let outputs = reader.finish(Duration::from_secs(2), Duration::from_secs(15));
    let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, PARTITIONS);

    // What came out, per transaction id, over both topics.
    let mut count: HashMap<String, u32> = HashMap::new();
    let mut dlq = 0;
    for o in &outputs {
        if o.topic == DLQ {
            dlq += 1;
        }
        if let Some(id) = &o.transaction_id {
            *count.entry(id.clone()).or_default() += 1;
        }
    }
    let missing: Vec<String> = (0..TOTAL)
        .map(|n| format!("tx-{n}"))
        .filter(|id| !count.contains_key(id))
        .collect();
    let duplicated = count.values().filter(|&&c| c > 1).count();
    let extra_outputs: u32 = count.values().map(|&c| c - 1).sum();

    // The instances' partitions over time.
    let since = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
    let mut changes = Vec::new();
    let mut last: Option<(&Vec<i32>, &Vec<i32>)> = None;
    for s in &samples {
        if last != Some((&s.a, &s.b)) {
            changes.push(format!("{:.2}s A{:?} B{:?}", since(s.at), s.a, s.b));
            last = Some((&s.a, &s.b));
        }
    }
    // During B's join (B started .. A asked to stop): was A ever left with nothing?
    let during_join: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= b_started && s.at < a_stop_called)
        .collect();
    let a_empty_during_join = during_join.iter().filter(|s| s.a.is_empty()).count();
    // When B took over: the eager protocol revokes everything on every rebalance, so B is
    // briefly without partitions when A leaves; from holding all of them after A's leave on, it
    // must keep them. The cooperative protocol never takes from B what it keeps, so from its
    // first assignment on.
    let took_over = match protocol {
        Protocol::Eager => samples
            .iter()
            .position(|s| s.at >= a_stop_returned && s.b.len() == PARTITIONS as usize),
        Protocol::Cooperative => samples.iter().position(|s| !s.b.is_empty()),
    };
    let b_empty_after = took_over.map(|i| samples[i..].iter().filter(|s| s.b.is_empty()).count());

    println!(
        "{protocol:?} rebalance under load (max_wait {max_wait}): {TOTAL} sent at {RATE}/s; {} outputs ({dlq} dead letters) \
         for {} distinct ids, {} missing, {duplicated} ids output more than once ({extra_outputs} extra outputs); \
         all out at {all_out_at:.1?} (all_out={all_out}); B started at {:.2}s, A held {a_held_before_stop:?} \
         when asked to stop at {:.2}s, A's stop took {a_stop_took:?}, B's stop {b_stop_took:?}; \
         committed {committed:?} of {ends:?}",
        outputs.len(),
        count.len(),
        missing.len(),
        since(b_started),
        since(a_stop_called),
    );
    println!(
        "  partitions held (changes of {} samples): {}",
        samples.len(),
        changes.join(" | ")
    );
    println!(
        "  during B's join: {} samples, A empty in {a_empty_during_join}; B took over at sample {took_over:?}, empty in {b_empty_after:?} samples after",
        during_join.len(),
    );
    let a_metrics = a_shared.render_metrics();
    for (name, m) in [("A", &a_metrics), ("B", &b_metrics)] {
        println!(
            "  {name}: fraudscore_rebalances_total {:?}",
            metric(m, "fraudscore_rebalances_total")
        );
    }

    assert!(
        missing.is_empty(),
        "{} transactions never output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(dlq, 0, "valid transactions are not dead-lettered");
    a_stopped.expect("instance A stops cleanly");
    b_stopped.expect("instance B stops cleanly");
    let took_over = took_over.expect("B took over");
    assert_eq!(
        b_empty_after,
        Some(0),
        "B stayed ready once it took over (from {:.2}s)",
        since(samples[took_over].at)
    );
    if protocol == Protocol::Cooperative {
        assert!(!during_join.is_empty(), "sampled A during B's join");
        assert_eq!(
            a_empty_during_join, 0,
            "a cooperative (partial) revoke left A without partitions, i.e. not ready"
        );
    }
    assert_eq!(committed, ends, "every input offset committed at the end");
    // A graceful handover outputs nothing twice when the revoking instance's commit is accepted:
    // it flushes, commits what was acknowledged and drops what it had batched of the revoked
    // partitions. The mock coordinator refuses every OffsetCommit while a join is in progress
    // (REBALANCE_IN_PROGRESS, rdkafka_mock_cgrp.c, librdkafka 2.12), where a real broker
    // accepts the current generation's commits during PreparingRebalance. The eager revocation
    // commit always falls in the join, the cooperative one sometimes does; the instance counts
    // such a refused commit (it waits for the answer), and then the next owner repeats what
    // came after the last accepted commit. Nothing is lost either way (asserted above).
    let refused = metric(&a_metrics, "fraudscore_commit_failures_total").unwrap_or(0.0);
    println!("  A: commits refused {refused}");
    if refused == 0.0 {
        assert_eq!(
            duplicated, 0,
            "a graceful handover whose commits were accepted outputs nothing twice ({extra_outputs} extra outputs)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A fatal error of the idempotent producer
// ---------------------------------------------------------------------------------------------

/// The broker refuses the producer an id (a fatal error for an idempotent producer): the service
/// stops on its own with an error, so the process exits non-zero, and commits nothing it did
/// not deliver.
#[test]
fn a_fatal_producer_error_stops_the_service_with_an_error_committing_nothing_undelivered() {
    let _serial = serial();
    logs();
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    // The input first, by a producer that got its own id.
    let input = producer(&brokers);
    send(&input, b"c-1", &transaction("t-1", "c-1", 5.0), None);
    input.flush(Duration::from_secs(10)).expect("flushed");
    // The next producer id asked for, the service's, is refused.
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::InitProducerId,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let service = Running::start(config(&brokers, &[]));
    let ended = wait_until(Duration::from_secs(60), || service.is_finished());
    assert!(
        ended,
        "the service stops on its own after a fatal producer error"
    );
    let (result, _) = service.stop_within(Duration::from_secs(30));
    assert!(
        matches!(
            result,
            Err(ServiceError::Pipeline(
                fraudscore::pipeline::PipelineError::ProducerFatal(_)
            ))
        ),
        "{result:?}"
    );
    let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
    assert_eq!(ends, [1]);
    assert!(
        committed[0] < 1,
        "nothing undelivered is committed: {committed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A stop while the group rebalances
// ---------------------------------------------------------------------------------------------

/// The broker refuses the commit at stop with `REBALANCE_IN_PROGRESS` (as Kafka does while a
/// joining member is being settled, and librdkafka does not retry it): the service serves the
/// rebalance and commits again, within the stop's limit, instead of leaving everything since the
/// last periodic commit to be re-scored after the restart.
#[test]
fn a_commit_at_stop_refused_while_the_group_rebalances_is_made_again() {
    let _serial = serial();
    logs();
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let service = start_with_partitions(config(
        &brokers,
        &[
            // No periodic commit: the commit at stop is the only one.
            ("FRAUDSCORE__KAFKA__COMMIT_INTERVAL", "1h"),
            ("FRAUDSCORE__PIPELINE__THREADS", "1"),
        ],
    ));
    let reader = Reader::start(&brokers);
    let input = producer(&brokers);
    send_fifty(&input);
    input.flush(Duration::from_secs(10)).expect("input flushed");
    assert!(
        wait_until(Duration::from_secs(30), || reader.distinct_ids() == 50),
        "every output came out: {}",
        reader.distinct_ids()
    );
    let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
    assert_eq!(
        (committed.as_slice(), ends.as_slice()),
        ([-1].as_slice(), [50].as_slice()),
        "nothing committed before the stop"
    );

    let rebalancing = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
        &[rebalancing; 3],
    );
    let (stopped, took) = service.stop_within(Duration::from_secs(30));
    stopped.expect("clean stop");
    reader.finish(Duration::ZERO, Duration::ZERO);
    let (committed, ends) = common::committed_and_ends(&brokers, GROUP, INPUT, 1);
    println!("stop took {took:?}; committed {committed:?} of {ends:?}");
    assert_eq!(
        committed, ends,
        "what was acknowledged is committed at stop, after the refusals"
    );
}
