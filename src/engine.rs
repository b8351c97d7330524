//! The scoring pipeline without Kafka: message bytes → validated transaction → window update → features → score.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::decode::{self, RejectReason, Rejection, Transaction};
use crate::features::{FeatureSpec, Features};
use crate::model::{Model, ModelError};
use crate::store::Store;
use crate::window::{Admission, Retention, WindowStats};

/// Settings of the engine that shape its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_message_bytes: usize,
    /// How far behind a customer's newest event an event may arrive and still be scored.
    pub allowed_lateness: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_message_bytes: fraudscore_contract::DEFAULT_MAX_MESSAGE_BYTES,
            allowed_lateness: Duration::from_secs(3600),
        }
    }
}

/// A transaction whose windows are updated and whose features are ready to score.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub transaction: Transaction,
    pub features: Features,
    /// A re-delivery: scored from the state, not counted again.
    pub duplicate: bool,
}

/// Decodes transactions and keeps the windows; one per consuming thread.
pub struct Engine {
    spec: Arc<FeatureSpec>,
    retention: Retention,
    max_message_bytes: usize,
    store: Arc<Store>,
    stats: Vec<WindowStats>,
}

impl Engine {
    pub fn new(spec: FeatureSpec, config: &EngineConfig, store: Arc<Store>) -> Engine {
        let lateness_ms =
            i64::try_from(config.allowed_lateness.as_millis()).unwrap_or(i64::MAX / 4);
        Engine {
            retention: Retention::new(spec.longest_window(), lateness_ms),
            spec: Arc::new(spec),
            max_message_bytes: config.max_message_bytes,
            store,
            stats: Vec::new(),
        }
    }

    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Decodes one message, adds it to its customer's windows and computes its features.
    pub fn prepare(
        &mut self,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Prepared, Rejection> {
        let transaction = decode::decode(key, value, self.max_message_bytes)?;
        let tx_hash = xxhash_rust::xxh3::xxh3_64(transaction.transaction_id.as_bytes());
        let (at, amount) = (transaction.timestamp, transaction.amount);
        let (retention, windows, stats) = (&self.retention, self.spec.windows(), &mut self.stats);
        let admission = self
            .store
            .with_customer(partition, &transaction.customer_id, |w| {
                let admission = w.insert(at, tx_hash, amount, retention)?;
                w.stats(at, windows, stats);
                Ok(admission)
            })
            .map_err(|late: crate::window::TooLate| {
                Rejection::new(
                    RejectReason::TooLate,
                    format!(
                        "`timestamp` {at} is older than customer {}'s newest event {} minus the longest window and the allowed lateness",
                        transaction.customer_id, late.newest
                    ),
                )
            })?;
        let features = self.spec.compute(amount, at, &self.stats);
        Ok(Prepared {
            transaction,
            features,
            duplicate: admission == Admission::Duplicate,
        })
    }
}

/// What the fraud team does with a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Review,
    Decline,
}

/// Scores at or above `review` are reviewed; at or above `decline`, declined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub review: f32,
    pub decline: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            review: 0.5,
            decline: 0.9,
        }
    }
}

impl Thresholds {
    pub fn decide(&self, score: f32) -> Decision {
        if score >= self.decline {
            Decision::Decline
        } else if score >= self.review {
            Decision::Review
        } else {
            Decision::Approve
        }
    }
}

/// A model's verdict on one transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub score: f32,
    pub decision: Decision,
}

/// The model and the thresholds: turns a batch of prepared transactions into verdicts.
pub struct Scorer {
    model: Model,
    thresholds: Thresholds,
    scores: Vec<f32>,
}

impl Scorer {
    pub fn new(model: Model, thresholds: Thresholds) -> Scorer {
        Scorer {
            model,
            thresholds,
            scores: Vec::new(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// One inference call for the whole batch.
    pub fn score(
        &mut self,
        batch: &[Prepared],
        verdicts: &mut Vec<Verdict>,
    ) -> Result<(), ModelError> {
        self.model
            .score_features(batch.iter().map(|p| &p.features), &mut self.scores)?;
        verdicts.clear();
        verdicts.extend(self.scores.iter().map(|&score| Verdict {
            score,
            decision: self.thresholds.decide(score),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(features: &[&str], lateness: Duration) -> Engine {
        let config = EngineConfig {
            allowed_lateness: lateness,
            ..EngineConfig::default()
        };
        Engine::new(
            FeatureSpec::for_model(features).unwrap(),
            &config,
            Arc::new(Store::default()),
        )
    }

    fn tx(id: &str, customer: &str, amount: f64, ts: &str) -> Vec<u8> {
        format!(r#"{{"transaction_id":"{id}","customer_id":"{customer}","amount":{amount},"timestamp":"{ts}"}}"#).into_bytes()
    }

    #[test]
    fn late_event_lands_in_place_and_redelivery_is_flagged() {
        let mut e = engine(&["customer_tx_count_1h"], Duration::from_secs(3600));
        let p = e
            .prepare(0, None, &tx("a", "c", 10.0, "2026-01-01T10:00:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [1.0, 10.0, 1.0]);
        let p = e
            .prepare(0, None, &tx("b", "c", 30.0, "2026-01-01T10:20:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [1.0, 20.0, 2.0]);
        // Arrives late and lands between the two: its windows hold the first and itself only.
        let p = e
            .prepare(0, None, &tx("c", "c", 20.0, "2026-01-01T10:05:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [2.0, 15.0, 2.0]);
        // The re-delivery of b now sees the late one too, and is not counted again.
        let p = e
            .prepare(0, None, &tx("b", "c", 30.0, "2026-01-01T10:20:00Z"))
            .unwrap();
        assert!(p.duplicate);
        assert_eq!(p.features.values(), [1.0, 20.0, 3.0]);
        // Other customers are separate.
        let p = e
            .prepare(1, Some(b"d"), &tx("a", "d", 5.0, "2026-01-01T10:00:00Z"))
            .unwrap();
        assert!(!p.duplicate);
        assert_eq!(p.features.values(), [1.0, 5.0, 1.0]);
        assert_eq!((e.store().customers(), e.store().window_events()), (2, 4));
    }

    #[test]
    fn too_late_is_rejected_with_its_reason() {
        let mut e = engine(&[], Duration::from_secs(3600));
        e.prepare(0, None, &tx("a", "c", 1.0, "2026-01-10T00:00:00Z"))
            .unwrap();
        // newest - 7d - 1h, exactly: still accepted.
        e.prepare(0, None, &tx("b", "c", 1.0, "2026-01-02T23:00:00Z"))
            .unwrap();
        let r = e
            .prepare(0, None, &tx("c", "c", 1.0, "2026-01-02T22:59:59.999Z"))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::TooLate);
        assert!(r.message.contains("timestamp"), "{}", r.message);
    }

    #[test]
    fn thresholds_decide() {
        let t = Thresholds {
            review: 0.3,
            decline: 0.8,
        };
        assert_eq!(t.decide(0.0), Decision::Approve);
        assert_eq!(t.decide(0.3), Decision::Review);
        assert_eq!(t.decide(0.79), Decision::Review);
        assert_eq!(t.decide(0.8), Decision::Decline);
    }
}
