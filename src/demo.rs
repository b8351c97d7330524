//! The embedded demo: the whole pipeline in one process on librdkafka's in-process mock cluster, under a modest load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraudscore_contract::headers;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use txsim::bad::{self, BadMix, Defect, Slot};
use txsim::sim::{CustomerId, FraudParams, PopulationParams, Simulator, Transaction};

use crate::config::Config;
use crate::service::{Service, ServiceError, StartError};
use crate::time::EventTime;

const SHIPPED_CONFIG: &str = include_str!("../config/fraudscore.toml");
const PARTITIONS: i32 = 4;
/// Carried on every demo input and copied by the service onto its output: the send time.
const SENT_HEADER: &str = "demo.sent_us";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub rate: u32,
    pub duration: Duration,
    pub customers: u32,
    pub bad_ratio: f64,
    pub model: std::path::PathBuf,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("mock cluster: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Incomplete(String),
}

/// What the demo's own consumer saw on the output topics.
#[derive(Default)]
struct Seen {
    scored: u64,
    dlq: BTreeMap<String, u64>,
    latency_us: Option<Histogram<u64>>,
    second_us: Option<Histogram<u64>>,
    /// (score, the output value as it came off the topic).
    samples: Vec<(f64, String)>,
}

pub fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    for topic in [
        "transactions",
        "transactions-scored",
        "transactions-dlq",
        "fraud-labels",
    ] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    let env = [
        ("FRAUDSCORE__KAFKA__BROKERS".to_string(), brokers.clone()),
        (
            "FRAUDSCORE__MODEL__PATH".to_string(),
            opts.model.display().to_string(),
        ),
        // librdkafka's mock cluster keeps no statistics worth showing and joins groups fast.
        (
            "FRAUDSCORE__KAFKA__CONSUMER__STATISTICS_INTERVAL_MS".to_string(),
            "0".to_string(),
        ),
        // The cluster lives only as long as the demo: state saved from it would describe topics
        // that are gone.
        (
            "FRAUDSCORE__STATE__SNAPSHOT_INTERVAL".to_string(),
            "0s".to_string(),
        ),
    ];
    let mut config = Config::parse(SHIPPED_CONFIG, "config/fraudscore.toml (embedded)", env)?;
    let service = match Service::start(config.clone()) {
        Err(StartError::Listen { .. }) => {
            // Port 9464 is taken (another instance?): any free port will do for a demo.
            config.http.listen.set_port(0);
            Service::start(config)?
        }
        other => other?,
    };
    println!(
        "fraudscore demo: mock Kafka cluster at {brokers}, service metrics at http://{}/metrics",
        service.http_addr()
    );
    println!(
        "load: {} transactions/s for {:?} from {} simulated customers, {:.1}% malformed\n",
        opts.rate,
        opts.duration,
        opts.customers,
        opts.bad_ratio * 100.0
    );

    // The consumer group's first join takes a few seconds; latency is measured from then on.
    let joining = Instant::now();
    while !service.shared().health.has_partitions() {
        if joining.elapsed() > Duration::from_secs(30) || service.is_finished() {
            service.stop()?;
            return Err(DemoError::Incomplete(
                "the service did not get its partitions within 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both ends stamp times against one clock.
    let clock = Instant::now();
    let seen = Arc::new(Mutex::new(Seen {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        second_us: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Seen::default()
    }));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, done, brokers) = (seen.clone(), done.clone(), brokers.clone());
        std::thread::spawn(move || read_outputs(&brokers, clock, &seen, &done))
    };
    // Let the reader connect and fetch once, so its start-up is not counted as latency.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (sent, brokers, opts) = (sent.clone(), brokers.clone(), opts.clone());
        std::thread::spawn(move || produce_load(&brokers, &opts, clock, &sent))
    };

    println!(
        "{:>5}  {:>8}  {:>8}  {:>5}  {:>9}  {:>8}  {:>8}",
        "t(s)", "sent", "scored", "dlq", "rate/s", "p50 ms", "p99 ms"
    );
    let mut last_received = 0;
    let drain_deadline = opts.duration + Duration::from_secs(15);
    for second in 1.. {
        std::thread::sleep(
            Duration::from_secs(1)
                .saturating_sub(started.elapsed() - Duration::from_secs(second - 1)),
        );
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        let dlq: u64 = s.dlq.values().sum();
        let received = s.scored + dlq;
        let (p50, p99) = s.second_us.as_ref().map_or((0.0, 0.0), |h| {
            (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            )
        });
        if let Some(h) = s.second_us.as_mut() {
            h.reset();
        }
        println!(
            "{second:>5}  {:>8}  {:>8}  {dlq:>5}  {:>9}  {p50:>8.1}  {p99:>8.1}",
            sent.load(Ordering::Relaxed),
            s.scored,
            received - last_received
        );
        last_received = received;
        let all_sent = writer.is_finished();
        if (all_sent && received >= sent.load(Ordering::Relaxed))
            || started.elapsed() > drain_deadline
        {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let _ = writer.join();
    let metrics = service.shared().render_metrics();
    service.stop()?;

    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let sent = sent.load(Ordering::Relaxed);
    let dlq: u64 = s.dlq.values().sum();
    println!(
        "\nsummary: {sent} sent, {} scored, {dlq} dead-lettered, {} missing",
        s.scored,
        sent.saturating_sub(s.scored + dlq)
    );
    if let Some(h) = &s.latency_us {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "end-to-end latency (produce → scored output received): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!("dead letters by reason: {:?}", s.dlq);
    for line in metrics.lines().filter(|l| {
        l.starts_with("fraudscore_inference_seconds_sum")
            || l.starts_with("fraudscore_inference_seconds_count")
            || l.starts_with("fraudscore_customers ")
    }) {
        println!("  {line}");
    }
    println!("\na few scored transactions (the three highest scores, then the lowest):");
    let mut samples = s.samples.clone();
    samples.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, value) in samples.iter().take(3).chain(samples.iter().rev().take(1)) {
        println!("{value}");
    }
    println!(
        "\nTo run against a real broker: create the topics transactions, transactions-scored, transactions-dlq and fraud-labels, then\n  \
         FRAUDSCORE__KAFKA__BROKERS=host:9092 cargo run --release -- run --config config/fraudscore.toml\n\
         (SASL/SSL: set librdkafka properties in [kafka.common] of config/fraudscore.toml.)"
    );
    if s.scored + dlq < sent {
        return Err(DemoError::Incomplete(format!(
            "{} outputs missing",
            sent - s.scored - dlq
        )));
    }
    Ok(())
}

/// Open-loop load from the transaction simulator: live timestamps, a share of malformed messages.
fn produce_load(brokers: &str, opts: &DemoOptions, clock: Instant, sent: &AtomicU64) {
    let producer: ThreadedProducer<DefaultProducerContext> = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo load: {e}");
            return;
        }
    };
    let params = PopulationParams {
        customers: opts.customers,
        ..PopulationParams::default()
    };
    let mut sim = Simulator::new(opts.seed, &params, FraudParams::default());
    let mut day: Vec<Transaction> = Vec::new();
    let total = (opts.rate as f64 * opts.duration.as_secs_f64()) as u64;
    let mix = BadMix::new(opts.bad_ratio);
    let mut recent_customer: Option<CustomerId> = None;
    let schedule = Instant::now();
    for n in 0..total {
        let due = Duration::from_secs_f64(n as f64 / opts.rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(schedule.elapsed()) {
            std::thread::sleep(wait);
        }
        while day.is_empty() {
            sim.next_day(&mut day);
            day.reverse();
        }
        let Some(tx) = day.pop() else { continue };
        let transaction_id = format!("demo-{n}");
        let now_ms = EventTime::now().millis();
        // The load generator's malformed messages, one defect per reject reason in turn.
        let (key, value) = match mix.bad_index(n) {
            Some(k) => {
                let slot = Slot {
                    transaction_id: &transaction_id,
                    tx: &tx,
                    epoch_millis: now_ms,
                    recent_customer,
                };
                let m = bad::build(Defect::nth(k), &slot);
                (m.key, m.value)
            }
            None => {
                recent_customer = Some(tx.customer);
                let value = serde_json::json!({
                    "transaction_id": transaction_id,
                    "customer_id": tx.customer.to_string(),
                    "terminal_id": tx.terminal.to_string(),
                    "amount": tx.amount.as_units(),
                    "timestamp": now_ms,
                });
                (
                    tx.customer.to_string().into_bytes(),
                    value.to_string().into_bytes(),
                )
            }
        };
        let sent_us = clock.elapsed().as_micros().to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: SENT_HEADER,
            value: Some(&sent_us),
        });
        let mut record = BaseRecord::to("transactions")
            .key(&key)
            .payload(&value)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = producer.flush(Duration::from_secs(10));
}

/// Reads both output topics from the start and records latencies from the propagated send time.
fn read_outputs(brokers: &str, clock: Instant, seen: &Mutex<Seen>, done: &AtomicBool) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fraudscore-demo-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo reader: {e}");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for topic in ["transactions-scored", "transactions-dlq"] {
        for p in 0..PARTITIONS {
            let _ = tpl.add_partition_offset(topic, p, Offset::Beginning);
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        eprintln!("demo reader: {e}");
        return;
    }
    while !done.load(Ordering::Relaxed) {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let now_us = clock.elapsed().as_micros() as u64;
        let header = |name: &str| {
            msg.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        if msg.topic() == "transactions-dlq" {
            *s.dlq
                .entry(header(headers::DLQ_REASON).unwrap_or_default())
                .or_default() += 1;
        } else {
            s.scored += 1;
            if s.samples.len() < 1000 {
                let value = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
                let score = serde_json::from_str::<serde_json::Value>(&value)
                    .ok()
                    .and_then(|v| v["score"].as_f64());
                if let Some(score) = score {
                    s.samples.push((score, value));
                }
            }
        }
        if let Some(sent) = header(SENT_HEADER).and_then(|v| v.parse::<u64>().ok()) {
            let us = now_us.saturating_sub(sent).max(1);
            let Seen {
                latency_us,
                second_us,
                ..
            } = &mut *s;
            for h in [latency_us, second_us].into_iter().flatten() {
                let _ = h.record(us);
            }
        }
    }
}
