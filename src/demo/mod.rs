//! The embedded demo: the whole pipeline in one process on librdkafka's in-process mock cluster, fed by the fraud simulator.

mod feed;
mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fraudscore_contract::RejectReason;
use rdkafka::mocking::MockCluster;

use crate::config::Config;
use crate::service::{Service, ServiceError, StartError};
use crate::time::EventTime;
use feed::{Feed, FeedCounts, Timeline};
use watch::{Confusion, Seen};

const SHIPPED_CONFIG: &str = include_str!("../../config/fraudscore.toml");
const PARTITIONS: i32 = 4;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated days sent before the live ones, at full speed, so that windows are full.
    pub history_days: u32,
    /// Simulated days played live, over `duration`.
    pub live_days: u32,
    pub duration: Duration,
    pub customers: u32,
    pub bad_ratio: f64,
    /// How long after a transaction its fraud label is published (in simulated time).
    pub label_delay: Duration,
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
    #[error("the mock cluster refused {count} demo messages, the first with: {first}")]
    Refused { count: u64, first: String },
    #[error("{0}")]
    Incomplete(String),
}

pub fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    for topic in [feed::INPUT, watch::SCORED, watch::DLQ, feed::LABELS] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    let timeline = Timeline::new(
        EventTime::now().millis(),
        opts.history_days,
        opts.live_days,
        opts.duration,
        opts.label_delay,
    );
    println!(
        "fraudscore demo: mock Kafka cluster at {brokers}; {} simulated customers and {} terminals, the fraud \
         handbook's three scenarios; labels (fraud or genuine) published {} after each transaction",
        opts.customers,
        opts.customers * 2,
        days(opts.label_delay)
    );

    // History: sent before the service starts, so that it is consumed at full speed through the
    // real path (labels first, then the group join, then every input scored).
    let mut feed = Feed::new(
        &brokers,
        timeline,
        opts.customers,
        opts.seed,
        opts.bad_ratio,
    )?;
    let sent = Instant::now();
    let history = feed.history()?;
    println!(
        "history: {} days, {} transactions ({} frauds) and {} labels sent in {:.1} s",
        opts.history_days,
        history.transactions,
        history.frauds,
        history.labels,
        sent.elapsed().as_secs_f64()
    );

    let service = start_service(&brokers, opts)?;
    let warming = Instant::now();
    let clock = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, done, brokers) = (seen.clone(), done.clone(), brokers.clone());
        std::thread::spawn(move || watch::read_outputs(&brokers, PARTITIONS, clock, &seen, &done))
    };
    let scored_history = || {
        let s = lock(&seen);
        s.history_outputs + s.history_dlq.values().sum::<u64>()
    };
    while scored_history() < history.transactions {
        if warming.elapsed() > Duration::from_secs(180) || service.is_finished() {
            done.store(true, Ordering::Relaxed);
            service.stop()?;
            return Err(DemoError::Incomplete(format!(
                "only {} of the {} history transactions were scored or dead-lettered within 180 s (dead letters: {:?})",
                scored_history(),
                history.transactions,
                lock(&seen).history_dlq
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let warm_up = warming.elapsed().as_secs_f64();
    println!(
        "warm-up: the service read the labels, joined the group and scored the history in {warm_up:.1} s \
         ({:.0} transactions/s, start-up included); service metrics at http://{}/metrics\n",
        history.transactions as f64 / warm_up,
        service.http_addr()
    );
    println!(
        "live: {} simulated days in {} ({:.0}x real time), {:.1}% malformed messages.\n\
         frauds: sent so far; caught: frauds flagged (review or decline); false+: genuine flagged; \
         labels: published so far;\nt-risk: scored transactions whose terminal already has labelled \
         fraud in its delayed windows (terminal_risk_* > 0)",
        opts.live_days,
        humantime::format_duration(opts.duration),
        timeline.acceleration(),
        opts.bad_ratio * 100.0
    );

    let counts = Arc::new(FeedCounts::default());
    let started = Instant::now();
    let writer = {
        let counts = counts.clone();
        std::thread::spawn(move || feed.live(started, clock, &counts))
    };
    println!(
        "{:>4}  {:>7}  {:>7}  {:>7}  {:>4}  {:>6}  {:>6}  {:>7}  {:>7}  {:>7}  {:>6}  {:>6}",
        "t(s)",
        "sim day",
        "sent",
        "scored",
        "dlq",
        "frauds",
        "caught",
        "false+",
        "labels",
        "t-risk",
        "p50 ms",
        "p99 ms"
    );
    let drain_deadline = opts.duration + Duration::from_secs(30);
    for second in 1.. {
        std::thread::sleep(
            Duration::from_secs(1)
                .saturating_sub(started.elapsed() - Duration::from_secs(second - 1)),
        );
        let mut s = lock(&seen);
        let (p50, p99) = (
            s.second_us.value_at_quantile(0.5) as f64 / 1000.0,
            s.second_us.value_at_quantile(0.99) as f64 / 1000.0,
        );
        s.second_us.reset();
        let sent = counts.live_sent.load(Ordering::Relaxed);
        println!(
            "{second:>4}  {:>7.2}  {sent:>7}  {:>7}  {:>4}  {:>6}  {:>6}  {:>7}  {:>7}  {:>6.1}%  {p50:>6.1}  {p99:>6.1}",
            timeline.sim_day(counts.event_ms.load(Ordering::Relaxed).max(timeline.live_start_ms())),
            s.live_scored,
            s.live_received() - s.live_scored,
            counts.live_frauds.load(Ordering::Relaxed),
            s.flagged.frauds_flagged,
            s.flagged.genuine_flagged,
            history.labels + counts.labels.load(Ordering::Relaxed),
            100.0 * s.with_terminal_risk as f64 / s.live_scored.max(1) as f64,
        );
        if (writer.is_finished() && s.live_received() >= sent) || started.elapsed() > drain_deadline
        {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let fed = writer.join().unwrap_or_else(|_| {
        Err(DemoError::Incomplete(
            "the demo's load thread panicked".into(),
        ))
    });
    let thresholds = service.thresholds();
    service.stop()?;
    fed?;

    let s = lock(&seen);
    let sent = counts.live_sent.load(Ordering::Relaxed);
    let dlq: u64 = s.dlq.values().sum();
    println!(
        "\nlive: {sent} sent, {} scored, {dlq} dead-lettered, {} missing; {} frauds among the scored",
        s.live_scored,
        sent.saturating_sub(s.live_received()),
        s.flagged.frauds
    );
    let h = &s.latency_us;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "end-to-end latency (sent → scored output or dead letter received): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    println!("\ndecisions (thresholds from the model's metadata unless overridden in the config):");
    let row = |name: &str, c: &Confusion| {
        println!(
            "  {name:<34} {:>6} flagged  precision {:>5.1}%  recall {:>5.1}%",
            c.frauds_flagged + c.genuine_flagged,
            100.0 * c.precision(),
            100.0 * c.recall()
        );
    };
    row(
        &format!("review or decline (score >= {:.3})", thresholds.review),
        &s.flagged,
    );
    row(
        &format!("decline (score >= {:.3})", thresholds.decline),
        &s.declined,
    );
    println!("  recall by fraud scenario (flagged / frauds):");
    for (scenario, what) in [
        (1, "amount over 220"),
        (2, "compromised terminal"),
        (3, "compromised card"),
    ] {
        let c = &s.by_scenario[scenario];
        println!(
            "    {scenario} {what:<22} {:>4} / {:<4} {:>5.1}%",
            c.frauds_flagged,
            c.frauds,
            100.0 * c.recall()
        );
    }
    println!(
        "  compromised terminals, by what the labels had shown: fraud already labelled there \
         (terminal_risk > 0) {}/{} caught, nothing labelled yet {}/{} caught",
        s.terminal_known.frauds_flagged,
        s.terminal_known.frauds,
        s.terminal_unknown.frauds_flagged,
        s.terminal_unknown.frauds
    );
    println!("\ndead letters by reason:");
    for reason in RejectReason::ALL {
        println!(
            "  {:<24} {}",
            reason.code(),
            s.dlq.get(reason.code()).copied().unwrap_or(0)
        );
    }
    println!("\nthe highest-scored caught fraud of each scenario, and why (each reason: the feature, its value, and what it added to the score in log-odds):");
    for (best, scenario) in s.best_catch.iter().zip(0..).skip(1) {
        if let Some(best) = best {
            println!(
                "  scenario {scenario}: {}\n      why: {}",
                best.output, best.why
            );
        }
    }
    println!(
        "\nTo run against a real broker: create the topics transactions, transactions-scored, transactions-dlq and fraud-labels, then\n  \
         FRAUDSCORE__KAFKA__BROKERS=host:9092 cargo run --release -- run --config config/fraudscore.toml\n\
         (SASL/SSL: set librdkafka properties in [kafka.common] of config/fraudscore.toml.)"
    );
    if s.live_received() < sent {
        return Err(DemoError::Incomplete(format!(
            "{} outputs missing",
            sent - s.live_received()
        )));
    }
    Ok(())
}

/// "7 days" rather than humantime's "7days".
fn days(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// The service with the shipped configuration, pointed at the mock cluster.
fn start_service(brokers: &str, opts: &DemoOptions) -> Result<Service, DemoError> {
    let env = [
        (
            "FRAUDSCORE__KAFKA__BROKERS".to_string(),
            brokers.to_string(),
        ),
        (
            "FRAUDSCORE__MODEL__PATH".to_string(),
            opts.model.display().to_string(),
        ),
        // The cluster lives only as long as the demo: state saved from it would describe topics
        // that are gone.
        (
            "FRAUDSCORE__STATE__SNAPSHOT_INTERVAL".to_string(),
            "0s".to_string(),
        ),
    ];
    let mut config = Config::parse(SHIPPED_CONFIG, "config/fraudscore.toml (embedded)", env)?;
    match Service::start(config.clone()) {
        Err(StartError::Listen { .. }) => {
            // Port 9464 is taken (another instance?): any free port will do for a demo.
            config.http.listen.set_port(0);
            Ok(Service::start(config)?)
        }
        other => Ok(other?),
    }
}
