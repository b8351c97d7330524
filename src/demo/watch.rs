//! The demo's view of the output topics: what was scored, which frauds were caught, at what latency.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fraudscore_contract::headers;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use super::feed::{SCENARIO_HEADER, SENT_HEADER};

pub const SCORED: &str = "transactions-scored";
pub const DLQ: &str = "transactions-dlq";

/// Flagged or not, by truth: the counts behind precision and recall.
#[derive(Debug, Default, Clone, Copy)]
pub struct Confusion {
    pub frauds: u64,
    pub frauds_flagged: u64,
    pub genuine_flagged: u64,
}

impl Confusion {
    fn add(&mut self, fraud: bool, flagged: bool) {
        self.frauds += u64::from(fraud);
        self.frauds_flagged += u64::from(fraud && flagged);
        self.genuine_flagged += u64::from(!fraud && flagged);
    }

    pub fn precision(&self) -> f64 {
        let flagged = self.frauds_flagged + self.genuine_flagged;
        if flagged == 0 {
            f64::NAN
        } else {
            self.frauds_flagged as f64 / flagged as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.frauds == 0 {
            f64::NAN
        } else {
            self.frauds_flagged as f64 / self.frauds as f64
        }
    }
}

/// Everything read so far.
pub struct Seen {
    pub history_outputs: u64,
    /// History inputs dead-lettered, by reason (none expected: the history is clean).
    pub history_dlq: BTreeMap<String, u64>,
    pub live_scored: u64,
    /// Live inputs dead-lettered, by reason.
    pub dlq: BTreeMap<String, u64>,
    /// Review or decline (score at or above the review threshold).
    pub flagged: Confusion,
    pub declined: Confusion,
    /// Flagged, per fraud scenario 1..=3.
    pub by_scenario: [Confusion; 4],
    /// Scenario 2 (compromised terminals) flagged, split by whether labels had already shown
    /// fraud at the terminal (some `terminal_risk_*` above 0).
    pub terminal_known: Confusion,
    pub terminal_unknown: Confusion,
    /// Live transactions scored with some `terminal_risk_*` above 0.
    pub with_terminal_risk: u64,
    pub latency_us: Histogram<u64>,
    pub second_us: Histogram<u64>,
    /// The highest-scored caught fraud of each scenario: (score, output as read).
    pub best_catch: [Option<BestCatch>; 4],
}

impl Seen {
    pub fn new() -> Seen {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        Seen {
            history_outputs: 0,
            history_dlq: BTreeMap::new(),
            live_scored: 0,
            dlq: BTreeMap::new(),
            flagged: Confusion::default(),
            declined: Confusion::default(),
            by_scenario: [Confusion::default(); 4],
            terminal_known: Confusion::default(),
            terminal_unknown: Confusion::default(),
            with_terminal_risk: 0,
            latency_us: histogram(),
            second_us: histogram(),
            best_catch: Default::default(),
        }
    }

    pub fn live_received(&self) -> u64 {
        self.live_scored + self.dlq.values().sum::<u64>()
    }

    fn scored(&mut self, out: &Scored, scenario: u8, value: &[u8]) {
        if out.transaction_id.starts_with("h-") {
            self.history_outputs += 1;
            return;
        }
        self.live_scored += 1;
        let fraud = scenario > 0;
        let flagged = out.decision != "approve";
        self.flagged.add(fraud, flagged);
        self.declined.add(fraud, out.decision == "decline");
        let terminal_risk = out
            .features
            .iter()
            .any(|(name, v)| name.starts_with("terminal_risk_") && *v > 0.0);
        self.with_terminal_risk += u64::from(terminal_risk);
        let Some(s) = self.by_scenario.get_mut(usize::from(scenario)) else {
            return;
        };
        if scenario > 0 {
            s.add(true, flagged);
        }
        if scenario == 2 {
            let split = if terminal_risk {
                &mut self.terminal_known
            } else {
                &mut self.terminal_unknown
            };
            split.add(true, flagged);
        }
        let best = &mut self.best_catch[usize::from(scenario)];
        if fraud && flagged && best.as_ref().is_none_or(|b| out.score > b.score) {
            *best = Some(BestCatch {
                score: out.score,
                output: String::from_utf8_lossy(value).into_owned(),
                why: why(&out.reasons),
            });
        }
    }
}

/// The highest-scored caught fraud of a scenario: its output, and its reasons made readable.
pub struct BestCatch {
    pub score: f64,
    pub output: String,
    pub why: String,
}

#[derive(Deserialize)]
struct Scored {
    transaction_id: String,
    score: f64,
    decision: String,
    features: HashMap<String, f64>,
    #[serde(default)]
    reasons: Vec<Reason>,
}

#[derive(Deserialize)]
struct Reason {
    feature: String,
    value: f64,
    contribution: f64,
}

/// "amount = 412.5 (+2.31), terminal_risk_7d_delay_7d = 0.5 (+1.20)": the reasons of an output.
fn why(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| format!("{} = {} ({:+.2})", r.feature, r.value, r.contribution))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads both output topics from the start until `done`, into `seen`.
pub fn read_outputs(
    brokers: &str,
    partitions: i32,
    clock: Instant,
    seen: &Mutex<Seen>,
    done: &AtomicBool,
) {
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
    for topic in [SCORED, DLQ] {
        for p in 0..partitions {
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
        if msg.topic() == DLQ {
            let reason = header(headers::DLQ_REASON).unwrap_or_default();
            // Only live inputs carry their send time.
            let by_reason = if header(SENT_HEADER).is_some() {
                &mut s.dlq
            } else {
                &mut s.history_dlq
            };
            *by_reason.entry(reason).or_default() += 1;
        } else {
            let value = msg.payload().unwrap_or_default();
            let scenario = header(SCENARIO_HEADER)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match serde_json::from_slice::<Scored>(value) {
                Ok(out) => s.scored(&out, scenario, value),
                Err(e) => eprintln!("demo reader: unreadable output: {e}"),
            }
        }
        if let Some(sent) = header(SENT_HEADER).and_then(|v| v.parse::<u64>().ok()) {
            let us = now_us.saturating_sub(sent).max(1);
            let _ = s.latency_us.record(us);
            let _ = s.second_us.record(us);
        }
    }
}
