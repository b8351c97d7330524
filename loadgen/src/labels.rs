//! `loadgen run --labels-topic`: event time that can run faster than the wall clock, and each good transaction's fraud label published once its delay has passed in event time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::kafka::{send_retrying, ClientSettings, DeliveryCounter};
use crate::sim::Transaction;
use crate::traffic;

/// The event time of a run's messages. At `factor` 1 it is the wall clock at the send time;
/// faster, it runs `factor` times the wall clock and ends where the run ends, so that every
/// timestamp is in the past (the service refuses the future) and days of windows and label
/// feedback fit in a run of seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventClock {
    wall_start_ms: i64,
    span_ms: i64,
    factor: f64,
}

impl EventClock {
    /// A run starting at `wall_start_ms` whose last message is due `span` after it.
    pub fn new(wall_start_ms: i64, span: Duration, factor: f64) -> EventClock {
        EventClock {
            wall_start_ms,
            span_ms: span.as_millis() as i64,
            factor: factor.max(1.0),
        }
    }

    /// The event time of the message due `offset` after the start.
    pub fn at(&self, offset: Duration) -> i64 {
        let offset_ms = offset.as_millis() as i64;
        let ahead = (self.span_ms - offset_ms).max(0) as f64 * (self.factor - 1.0);
        self.wall_start_ms + offset_ms - ahead as i64
    }
}

/// A label waiting for its `labelled_at`.
struct Pending {
    labelled_at_ms: i64,
    key: String,
    value: Vec<u8>,
}

/// Publishes each good transaction's label (`{"transaction_id", "customer_id", "terminal_id",
/// "timestamp", "label", "labelled_at"}`, the service's labels topic format) when the run's event
/// time reaches `labelled_at` = the transaction's time + the delay. Labels not yet due when the
/// run ends are not published.
pub struct LabelFeed {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
    delay_ms: i64,
    /// In `labelled_at` order: transactions are sent in event-time order and the delay is fixed.
    pending: VecDeque<Pending>,
}

impl LabelFeed {
    pub fn new(
        settings: &ClientSettings,
        linger_ms: u32,
        topic: &str,
        delay: Duration,
    ) -> Result<LabelFeed, KafkaError> {
        Ok(LabelFeed {
            producer: settings
                .producer(linger_ms, false)
                .create_with_context(DeliveryCounter::default())?,
            topic: topic.to_owned(),
            delay_ms: delay.as_millis() as i64,
            pending: VecDeque::new(),
        })
    }

    /// Queues the label of a transaction sent with event time `event_ms`.
    pub fn push(&mut self, transaction_id: &str, tx: &Transaction, event_ms: i64) {
        let labelled_at_ms = event_ms + self.delay_ms;
        let mut value = Vec::with_capacity(256);
        value.extend_from_slice(
            format!(
                "{{\"transaction_id\":\"{transaction_id}\",\"customer_id\":\"{}\",\"terminal_id\":\"{}\",\
                 \"label\":\"{}\",\"timestamp\":\"",
                tx.customer,
                tx.terminal,
                if tx.label.is_fraud() { "fraud" } else { "genuine" },
            )
            .as_bytes(),
        );
        traffic::write_timestamp(&mut value, event_ms);
        value.extend_from_slice(b"\",\"labelled_at\":\"");
        traffic::write_timestamp(&mut value, labelled_at_ms);
        value.extend_from_slice(b"\"}");
        self.pending.push_back(Pending {
            labelled_at_ms,
            key: tx.terminal.to_string(),
            value,
        });
    }

    /// Publishes every label known by event time `now_ms`.
    pub fn publish_due(&mut self, now_ms: i64) -> Result<(), KafkaError> {
        while self
            .pending
            .front()
            .is_some_and(|p| p.labelled_at_ms <= now_ms)
        {
            let Some(label) = self.pending.pop_front() else {
                break;
            };
            let record = BaseRecord::to(&self.topic)
                .key(label.key.as_bytes())
                .payload(&label.value[..]);
            send_retrying(&self.producer, record)?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits up to `timeout` for the published labels to be acknowledged; returns how many were.
    pub fn finish(self, timeout: Duration) -> u64 {
        if let Err(error) = self.producer.flush(timeout) {
            eprintln!("loadgen: labels producer flush: {error}");
        }
        self.producer.context().acked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_is_the_wall_clock_or_runs_faster_and_ends_with_the_run() {
        let start = 1_795_000_000_000;
        let span = Duration::from_secs(10);
        let live = EventClock::new(start, span, 1.0);
        assert_eq!(live.at(Duration::from_secs(3)), start + 3_000);
        let fast = EventClock::new(start, span, 3600.0);
        // Ten seconds of run are ten hours of event time, ending at the run's end.
        assert_eq!(fast.at(span), start + 10_000);
        assert_eq!(fast.at(Duration::ZERO), start + 10_000 - 10 * 3_600_000);
        assert_eq!(
            fast.at(Duration::from_secs(5)) - fast.at(Duration::from_secs(4)),
            3_600_000
        );
    }
}
