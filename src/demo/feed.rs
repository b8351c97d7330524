//! The demo's input: simulated days laid out in the past, the history sent at full speed, the live days accelerated, each label published once its delay has passed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use txsim::bad::{self, BadMix, Defect, Slot};
use txsim::sim::{CustomerId, FraudParams, PopulationParams, Simulator, Transaction};

use super::DemoError;
use crate::time::EventTime;

pub const DAY_MS: i64 = 86_400_000;
/// On every live input, copied by the service onto its output: the send time, for latency.
pub const SENT_HEADER: &str = "demo.sent_us";
/// On every input, copied onto its output: the simulator's fraud scenario (0: genuine).
pub const SCENARIO_HEADER: &str = "demo.fraud_scenario";
pub const INPUT: &str = "transactions";
pub const LABELS: &str = "fraud-labels";

/// Where the simulated days sit in real time. Day 0 starts at a midnight UTC so that the hours
/// of day are the simulator's; the last live day ends at today's midnight, so every event is in
/// the past (the service refuses events from the future).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    pub origin_ms: i64,
    pub history_days: u32,
    pub live_days: u32,
    /// Real time over which the live days are played.
    pub live: Duration,
    pub label_delay_ms: i64,
}

impl Timeline {
    pub fn new(
        now_ms: i64,
        history_days: u32,
        live_days: u32,
        live: Duration,
        label_delay: Duration,
    ) -> Timeline {
        let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
        Timeline {
            origin_ms: today - i64::from(history_days + live_days) * DAY_MS,
            history_days,
            live_days,
            live,
            label_delay_ms: label_delay.as_millis() as i64,
        }
    }

    pub fn event_ms(&self, tx: &Transaction) -> i64 {
        self.origin_ms + i64::from(tx.day.0) * DAY_MS + i64::from(tx.second_of_day) * 1000
    }

    pub fn live_start_ms(&self) -> i64 {
        self.origin_ms + i64::from(self.history_days) * DAY_MS
    }

    /// Simulated time per unit of real time in the live phase.
    pub fn acceleration(&self) -> f64 {
        i64::from(self.live_days) as f64 * DAY_MS as f64 / (self.live.as_millis().max(1) as f64)
    }

    /// When, counted from the start of the live phase, the event at `event_ms` is sent.
    pub fn send_at(&self, event_ms: i64) -> Duration {
        let sim_ms = (event_ms - self.live_start_ms()).max(0) as f64;
        Duration::from_secs_f64(sim_ms / self.acceleration() / 1000.0)
    }

    /// Days since day 0, for the table.
    pub fn sim_day(&self, event_ms: i64) -> f64 {
        (event_ms - self.origin_ms) as f64 / DAY_MS as f64
    }
}

/// What the feed has sent, read by the table while it runs.
#[derive(Debug, Default)]
pub struct FeedCounts {
    pub live_sent: AtomicU64,
    pub live_frauds: AtomicU64,
    pub labels: AtomicU64,
    /// Event time of the newest live input sent, epoch ms.
    pub event_ms: AtomicI64,
}

#[derive(Debug, Clone, Copy)]
pub struct HistorySent {
    pub transactions: u64,
    pub frauds: u64,
    pub labels: u64,
}

/// Counts the messages the cluster refused: the demo must not lose input silently.
#[derive(Default)]
struct Refusals {
    count: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Refusals {}

impl ProducerContext for Refusals {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.count.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// A label waiting for its `labelled_at`.
struct PendingLabel {
    labelled_at_ms: i64,
    key: String,
    value: String,
}

/// Sends the simulated days: inputs to `transactions`, labels to `fraud-labels`.
pub struct Feed {
    producer: ThreadedProducer<Refusals>,
    timeline: Timeline,
    sim: Simulator,
    day: Vec<Transaction>,
    /// In `labelled_at` order: transactions are sent in time order and the delay is fixed.
    labels: VecDeque<PendingLabel>,
    bad: BadMix,
}

impl Feed {
    pub fn new(
        brokers: &str,
        timeline: Timeline,
        customers: u32,
        seed: u64,
        bad_ratio: f64,
    ) -> Result<Feed, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            // The mock cluster keeps about 5 MB per partition and drops the oldest beyond:
            // compressed, the history fits.
            .set("compression.type", "lz4")
            .create_with_context(Refusals::default())?;
        // The book's two terminals per customer; its fraud scenarios unchanged.
        let population = PopulationParams {
            customers,
            terminals: customers * 2,
            ..PopulationParams::default()
        };
        Ok(Feed {
            producer,
            timeline,
            sim: Simulator::new(seed, &population, FraudParams::default()),
            day: Vec::new(),
            labels: VecDeque::new(),
            bad: BadMix::new(bad_ratio),
        })
    }

    /// The history days at full speed, and the labels known by the end of them.
    pub fn history(&mut self) -> Result<HistorySent, DemoError> {
        let mut sent = HistorySent {
            transactions: 0,
            frauds: 0,
            labels: 0,
        };
        for _ in 0..self.timeline.history_days {
            self.sim.next_day(&mut self.day);
            for tx in std::mem::take(&mut self.day) {
                let id = format!("h-{}", sent.transactions);
                let event_ms = self.timeline.event_ms(&tx);
                self.send_transaction(&id, &tx, event_ms, None);
                sent.transactions += 1;
                sent.frauds += u64::from(tx.label.is_fraud());
            }
        }
        sent.labels = self.publish_labels(self.timeline.live_start_ms());
        self.flush()?;
        self.check_nothing_dropped()?;
        Ok(sent)
    }

    /// The mock cluster keeps about 5 MB per partition and drops the oldest messages beyond it,
    /// acknowledged or not: a history too large for it must stop the demo, not skew it.
    fn check_nothing_dropped(&self) -> Result<(), DemoError> {
        let client = self.producer.client();
        for topic in [INPUT, LABELS] {
            for partition in 0..super::PARTITIONS {
                let (low, _) =
                    client.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
                if low > 0 {
                    return Err(DemoError::Incomplete(format!(
                        "the mock cluster dropped the oldest {low} messages of {topic} partition {partition} (it keeps about 5 MB a partition): use fewer --customers or --history-days"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Waits for every message to be acknowledged; an error if any was refused.
    pub fn flush(&self) -> Result<(), DemoError> {
        self.producer.flush(Duration::from_secs(30))?;
        let refusals = self.producer.context();
        match refusals.count.load(Ordering::Relaxed) {
            0 => Ok(()),
            count => Err(DemoError::Refused {
                count,
                first: refusals
                    .first
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default(),
            }),
        }
    }

    /// The live days, each event sent at its accelerated time from `start`; `clock` stamps the
    /// send time for latency.
    pub fn live(
        &mut self,
        start: Instant,
        clock: Instant,
        counts: &FeedCounts,
    ) -> Result<(), DemoError> {
        let mut n = 0u64;
        let mut recent_customer: Option<CustomerId> = None;
        for _ in 0..self.timeline.live_days {
            self.sim.next_day(&mut self.day);
            for tx in std::mem::take(&mut self.day) {
                let event_ms = self.timeline.event_ms(&tx);
                if let Some(wait) = self.timeline.send_at(event_ms).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                counts
                    .labels
                    .fetch_add(self.publish_labels(event_ms), Ordering::Relaxed);
                let id = format!("l-{n}");
                let sent_us = clock.elapsed().as_micros().to_string();
                match self.bad.bad_index(n) {
                    Some(k) => self.send_bad(&id, &tx, k, recent_customer, &sent_us),
                    None => {
                        recent_customer = Some(tx.customer);
                        self.send_transaction(&id, &tx, event_ms, Some(&sent_us));
                        counts
                            .live_frauds
                            .fetch_add(u64::from(tx.label.is_fraud()), Ordering::Relaxed);
                    }
                }
                counts.event_ms.store(event_ms, Ordering::Relaxed);
                counts.live_sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }
        self.flush()
    }

    fn send_transaction(
        &mut self,
        id: &str,
        tx: &Transaction,
        event_ms: i64,
        sent_us: Option<&str>,
    ) {
        let customer = tx.customer.to_string();
        let value = serde_json::json!({
            "transaction_id": id,
            "customer_id": customer,
            "terminal_id": tx.terminal.to_string(),
            "amount": tx.amount.as_units(),
            "timestamp": event_ms,
        })
        .to_string();
        let scenario = tx.label.scenario().to_string();
        let mut headers = OwnedHeaders::new().insert(Header {
            key: SCENARIO_HEADER,
            value: Some(&scenario),
        });
        if let Some(sent_us) = sent_us {
            headers = headers.insert(Header {
                key: SENT_HEADER,
                value: Some(sent_us),
            });
        }
        self.send(INPUT, customer.as_bytes(), value.as_bytes(), Some(headers));
        self.labels.push_back(PendingLabel {
            labelled_at_ms: event_ms + self.timeline.label_delay_ms,
            key: tx.terminal.to_string(),
            value: serde_json::json!({
                "transaction_id": id,
                "customer_id": customer,
                "terminal_id": tx.terminal.to_string(),
                "timestamp": event_ms,
                "label": if tx.label.is_fraud() { "fraud" } else { "genuine" },
                "labelled_at": event_ms + self.timeline.label_delay_ms,
            })
            .to_string(),
        });
    }

    /// One of the load generator's malformed messages, every reject reason in turn. Stamped
    /// with the wall clock, so that "ahead of the clock" is ahead of it.
    fn send_bad(
        &mut self,
        id: &str,
        tx: &Transaction,
        k: u64,
        recent_customer: Option<CustomerId>,
        sent_us: &str,
    ) {
        let slot = Slot {
            transaction_id: id,
            tx,
            epoch_millis: EventTime::now().millis(),
            recent_customer,
        };
        let m = bad::build(Defect::nth(k), &slot);
        let headers = OwnedHeaders::new().insert(Header {
            key: SENT_HEADER,
            value: Some(sent_us),
        });
        self.send(INPUT, &m.key, &m.value, Some(headers));
    }

    /// Publishes the labels known by `now_ms`; returns how many.
    fn publish_labels(&mut self, now_ms: i64) -> u64 {
        let mut published = 0;
        while self
            .labels
            .front()
            .is_some_and(|l| l.labelled_at_ms <= now_ms)
        {
            let Some(label) = self.labels.pop_front() else {
                break;
            };
            self.send(LABELS, label.key.as_bytes(), label.value.as_bytes(), None);
            published += 1;
        }
        published
    }

    fn send(&self, topic: &str, key: &[u8], value: &[u8], headers: Option<OwnedHeaders>) {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_ends_at_midnight_in_the_past_and_plays_live_days_in_the_live_time() {
        let now = 1_795_000_000_000; // 2026-11-17T08:26:40Z
        let t = Timeline::new(
            now,
            38,
            7,
            Duration::from_secs(30),
            Duration::from_secs(7 * 86_400),
        );
        assert_eq!(t.origin_ms % DAY_MS, 0);
        assert_eq!(t.origin_ms + 45 * DAY_MS, now - now % DAY_MS);
        assert!(t.live_start_ms() + 7 * DAY_MS <= now);
        assert_eq!(t.acceleration(), 7.0 * 86_400.0 / 30.0);
        assert_eq!(t.send_at(t.live_start_ms()), Duration::ZERO);
        assert_eq!(t.send_at(t.live_start_ms() - DAY_MS), Duration::ZERO);
        let last = t.send_at(t.live_start_ms() + 7 * DAY_MS);
        assert!((last.as_secs_f64() - 30.0).abs() < 1e-6, "{last:?}");
        assert_eq!(t.sim_day(t.live_start_ms()), 38.0);
    }
}
