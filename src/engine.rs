//! The scoring pipeline without Kafka: message bytes → validated transaction → window update → features → score.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use smallvec::SmallVec;

use crate::decode::{self, CustomerId, RejectReason, Rejection, Transaction};
use crate::features::{FeatureSpec, Features};
use crate::store::Store;
use crate::terminals::{TerminalStats, Terminals};
use crate::time::EventTime;
use crate::window::{Admission, Reach, Refused, Retention, WindowStats};

/// Settings of the engine that shape its answers.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_message_bytes: usize,
    /// How far behind the newest event of its partition an event may arrive (beyond the longest
    /// window) and still be scored.
    pub allowed_lateness: Duration,
    /// How far ahead of the wall clock a timestamp may be: one event from the future would
    /// otherwise push its partition's clock ahead and make real traffic look late.
    pub max_future_skew: Duration,
    /// With more than one input partition a message must carry its customer id as key: a
    /// null key would spread one customer's history over several partitions and instances.
    pub require_key: bool,
    /// Most events one customer may hold: window sums scan a customer's events, so this bounds
    /// the cost of one event. Beyond it an event is dead-lettered as `oversized`.
    pub max_events_per_customer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_message_bytes: fraudscore_contract::DEFAULT_MAX_MESSAGE_BYTES,
            allowed_lateness: Duration::from_secs(3600),
            max_future_skew: Duration::from_secs(300),
            require_key: false,
            max_events_per_customer: 200_000,
        }
    }
}

impl EngineConfig {
    /// How long the state keeps events for a model taking `spec`.
    pub fn retention(&self, spec: &FeatureSpec) -> Retention {
        Retention::new(spec.longest_window(), millis(self.allowed_lateness))
            .with_max_events(self.max_events_per_customer)
    }

    /// How far behind the newest label the terminal state keeps labels: the longest delayed
    /// window's reach, plus how far behind the newest transaction one may still be scored.
    pub fn terminal_span_ms(&self, spec: &FeatureSpec) -> i64 {
        spec.terminal_reach_ms().unwrap_or(0) + self.retention(spec).horizon_ms()
    }
}

/// A configured duration in milliseconds; absurdly long ones are capped well inside i64.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A transaction whose windows are updated and whose features are ready to score.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub transaction: Transaction,
    pub features: Features,
    /// A re-delivery: scored from the state, not counted again.
    pub duplicate: bool,
    /// The keyed hash of the transaction id, as the windows hold it.
    pub id_hash: u64,
}

/// Decodes transactions and keeps the windows; one per consuming thread.
pub struct Engine {
    spec: Arc<FeatureSpec>,
    retention: Retention,
    max_message_bytes: usize,
    max_future_skew_ms: i64,
    require_key: bool,
    store: Arc<Store>,
    stats: Vec<WindowStats>,
    /// Labels by terminal, for the terminal features; empty unless labels are read.
    terminals: Arc<Terminals>,
    terminal_stats: Vec<TerminalStats>,
    /// While a restore replays the messages after a snapshot: per customer, the offset up to
    /// which the snapshot's copy already held its messages.
    applied: HashMap<CustomerId, i64>,
}

impl Engine {
    pub fn new(spec: FeatureSpec, config: &EngineConfig, store: Arc<Store>) -> Engine {
        Engine {
            retention: config.retention(&spec),
            spec: Arc::new(spec),
            max_message_bytes: config.max_message_bytes,
            max_future_skew_ms: millis(config.max_future_skew),
            require_key: config.require_key,
            store,
            stats: Vec::new(),
            terminals: Arc::new(Terminals::new(0, &[])),
            terminal_stats: Vec::new(),
            applied: HashMap::new(),
        }
    }

    /// The engine reading terminal features from `terminals`.
    pub fn with_terminals(self, terminals: Arc<Terminals>) -> Engine {
        Engine { terminals, ..self }
    }

    /// Until [`Engine::forget_applied`], a message of one of these customers at or before its
    /// offset leaves the windows as they are: a snapshot copied the customer after applying it.
    pub fn skip_applied(&mut self, applied: HashMap<CustomerId, i64>) {
        self.applied = applied;
    }

    pub fn forget_applied(&mut self) {
        self.applied = HashMap::new();
    }

    pub fn spec(&self) -> &Arc<FeatureSpec> {
        &self.spec
    }

    /// Computes `spec`'s features from the next event on: for a reloaded model, whose windows
    /// [`crate::reload::check`] found within what the state holds.
    pub fn set_spec(&mut self, spec: Arc<FeatureSpec>) {
        self.spec = spec;
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Starts bringing the state of the customers keyed `keys` into the cache: called for a run
    /// of messages before they are prepared, so that their customers' cache misses overlap.
    pub fn prefetch<'k>(&self, keys: impl Iterator<Item = Option<&'k [u8]>>) {
        let mut ids: SmallVec<[&str; 64]> = keys
            .flatten()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .collect();
        for reach in Reach::ALL {
            ids.retain(|id| self.store.prefetch(id, self.spec.windows(), reach));
        }
    }

    /// Decodes one message (at `offset` of input `partition`), adds it to its customer's windows
    /// and computes its features.
    pub fn prepare(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Prepared, Rejection> {
        let transaction = decode::decode(key, value, self.max_message_bytes)?;
        // After decoding, so that a message that is also malformed says so first.
        if key.is_none() && self.require_key {
            return Err(Rejection::new(
                RejectReason::InvalidKey,
                "the message has no key: with more than one input partition the key must be the customer_id, or the customer's history would be split",
            ));
        }
        let (at, amount) = (transaction.timestamp, transaction.amount);
        let now = EventTime::now();
        if at.millis() > now.millis() + self.max_future_skew_ms {
            return Err(Rejection::new(
                RejectReason::TimestampOutOfRange,
                format!(
                    "`timestamp` {at} is more than max_future_skew = {} ms ahead of the wall clock ({now})",
                    self.max_future_skew_ms
                ),
            ));
        }
        self.store
            .admit(partition, at, self.retention.horizon_ms())
            .map_err(|newest| {
                Rejection::new(
                    RejectReason::TooLate,
                    format!(
                        "`timestamp` {at} is older than the newest event of input partition {partition} ({newest}) minus the longest window and the allowed lateness"
                    ),
                )
            })?;
        let tx_hash = self.store.id_hash(&transaction.transaction_id);
        let (retention, windows, stats) = (&self.retention, self.spec.windows(), &mut self.stats);
        let held = self
            .applied
            .get(&transaction.customer_id)
            .is_some_and(|&upto| offset <= upto);
        let admission = self
            .store
            .with_customer(partition, offset, &transaction.customer_id, |w| {
                let admission = if held {
                    Admission::Duplicate
                } else {
                    w.insert(at, tx_hash, amount, retention)?
                };
                w.stats(at, windows, stats);
                Ok(admission)
            })
            .map_err(|refused| match refused {
                Refused::TooLate { newest } => Rejection::new(
                    RejectReason::TooLate,
                    format!(
                        "`timestamp` {at} is older than customer {}'s newest event {newest} minus the longest window and the allowed lateness",
                        transaction.customer_id
                    ),
                ),
                Refused::Full { held } => {
                    self.store.refused_full();
                    Rejection::new(
                    RejectReason::Oversized,
                    format!(
                        "customer {} holds {held} events within reach of its windows, the most engine.max_events_per_customer allows",
                        transaction.customer_id
                    ),
                )
                }
            })?;
        let terminal_windows = self.spec.terminal_windows();
        match &transaction.terminal_id {
            Some(terminal) if !terminal_windows.is_empty() => {
                self.terminals
                    .stats(terminal, at, terminal_windows, &mut self.terminal_stats)
            }
            // No terminal: nothing is known about it, as for a terminal never labelled.
            _ => {
                self.terminal_stats.clear();
                self.terminal_stats
                    .resize(terminal_windows.len(), TerminalStats::default());
            }
        }
        let features = self
            .spec
            .compute(amount, at, &self.stats, &self.terminal_stats);
        Ok(Prepared {
            transaction,
            features,
            duplicate: admission == Admission::Duplicate,
            id_hash: tx_hash,
        })
    }
}

/// What the fraud team does with a score; ordered from the least strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Review,
    Decline,
}

impl Decision {
    /// The two-bit code kept beside a scored event in the windows (0 means not scored).
    pub fn code(self) -> u8 {
        match self {
            Decision::Approve => 1,
            Decision::Review => 2,
            Decision::Decline => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Decision> {
        match code {
            1 => Some(Decision::Approve),
            2 => Some(Decision::Review),
            3 => Some(Decision::Decline),
            _ => None,
        }
    }

    /// The name on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::Decline => "decline",
        }
    }
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

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("review threshold {review} and decline threshold {decline} must satisfy 0 <= review <= decline <= 1")]
pub struct ThresholdError {
    pub review: f32,
    pub decline: f32,
}

/// Thresholds a user set (config or command line), each optional: what is unset comes from the model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThresholdOverrides {
    pub review: Option<f32>,
    pub decline: Option<f32>,
}

impl Thresholds {
    pub fn new(review: f32, decline: f32) -> Result<Thresholds, ThresholdError> {
        if (0.0..=1.0).contains(&review) && (0.0..=1.0).contains(&decline) && review <= decline {
            Ok(Thresholds { review, decline })
        } else {
            Err(ThresholdError { review, decline })
        }
    }

    /// Each threshold from the overrides if set, else from the model (chosen on data when it was
    /// built), else the default.
    pub fn resolve(
        model: Option<Thresholds>,
        overrides: ThresholdOverrides,
    ) -> Result<Thresholds, ThresholdError> {
        let base = model.unwrap_or_default();
        Thresholds::new(
            overrides.review.unwrap_or(base.review),
            overrides.decline.unwrap_or(base.decline),
        )
    }

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
            .prepare(0, 0, None, &tx("a", "c", 10.0, "2026-01-01T10:00:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [1.0, 10.0, 1.0]);
        let p = e
            .prepare(0, 0, None, &tx("b", "c", 30.0, "2026-01-01T10:20:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [1.0, 20.0, 2.0]);
        // Arrives late and lands between the two: its windows hold the first and itself only.
        let p = e
            .prepare(0, 0, None, &tx("c", "c", 20.0, "2026-01-01T10:05:00Z"))
            .unwrap();
        assert_eq!(p.features.values(), [2.0, 15.0, 2.0]);
        // The re-delivery of b now sees the late one too, and is not counted again.
        let p = e
            .prepare(0, 0, None, &tx("b", "c", 30.0, "2026-01-01T10:20:00Z"))
            .unwrap();
        assert!(p.duplicate);
        assert_eq!(p.features.values(), [1.0, 20.0, 3.0]);
        // Other customers are separate.
        let p = e
            .prepare(1, 0, Some(b"d"), &tx("a", "d", 5.0, "2026-01-01T10:00:00Z"))
            .unwrap();
        assert!(!p.duplicate);
        assert_eq!(p.features.values(), [1.0, 5.0, 1.0]);
        assert_eq!((e.store().customers(), e.store().window_events()), (2, 4));
    }

    #[test]
    fn too_late_is_rejected_with_its_reason() {
        let mut e = engine(&[], Duration::from_secs(3600));
        e.prepare(0, 0, None, &tx("a", "c", 1.0, "2026-01-10T00:00:00Z"))
            .unwrap();
        // newest - 7d - 1h, exactly: still accepted.
        e.prepare(0, 0, None, &tx("b", "c", 1.0, "2026-01-02T23:00:00Z"))
            .unwrap();
        let r = e
            .prepare(0, 0, None, &tx("c", "c", 1.0, "2026-01-02T22:59:59.999Z"))
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

    #[test]
    fn thresholds_come_from_the_overrides_then_the_model_then_the_default() {
        let declared = Thresholds::new(0.2, 0.7).unwrap();
        let model = Some(declared);
        let none = ThresholdOverrides::default();
        assert_eq!(Thresholds::resolve(model, none), Ok(declared));
        assert_eq!(Thresholds::resolve(None, none), Ok(Thresholds::default()));
        let review = ThresholdOverrides {
            review: Some(0.4),
            decline: None,
        };
        assert_eq!(
            Thresholds::resolve(model, review),
            Thresholds::new(0.4, 0.7)
        );
        // An override that crosses the model's other threshold is refused, not reordered.
        let high = ThresholdOverrides {
            review: Some(0.8),
            decline: None,
        };
        assert_eq!(
            Thresholds::resolve(model, high),
            Err(ThresholdError {
                review: 0.8,
                decline: 0.7
            })
        );
        assert!(Thresholds::new(-0.1, 0.5).is_err());
        assert!(Thresholds::new(0.5, 1.5).is_err());
        assert!(Thresholds::new(f32::NAN, 0.5).is_err());
    }

    fn now_ms() -> i64 {
        EventTime::now().millis()
    }

    fn tx_at(id: &str, customer: &str, amount: f64, ms: i64) -> Vec<u8> {
        format!(r#"{{"transaction_id":"{id}","customer_id":"{customer}","amount":{amount},"timestamp":{ms}}}"#).into_bytes()
    }

    #[test]
    fn a_timestamp_beyond_the_future_skew_is_out_of_range_and_moves_nothing() {
        let mut e = engine(&["customer_tx_count_1h"], Duration::from_secs(3600));
        let now = now_ms();
        // Within the skew: accepted.
        e.prepare(0, 0, None, &tx_at("a", "c", 1.0, now + 60_000))
            .unwrap();
        let r = e
            .prepare(0, 0, None, &tx_at("b", "c", 1.0, now + 3_600_000))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::TimestampOutOfRange);
        assert!(r.message.contains("max_future_skew"), "{}", r.message);
        // Real traffic of an hour ago is still within the longest window plus lateness.
        let p = e
            .prepare(0, 0, None, &tx_at("c", "c", 1.0, now - 3_000_000))
            .unwrap();
        assert!(!p.duplicate);
    }

    #[test]
    fn two_transactions_in_one_millisecond_are_both_counted_even_when_their_ids_collide_on_22_bits()
    {
        // Two ids whose unkeyed 64-bit hashes agree on the 22 bits the windows used to keep:
        // the old scheme took the second for a re-delivery of the first.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u64..)
            .map(|i| format!("tx-{i}"))
            .find_map(|id| {
                let low = xxhash_rust::xxh3::xxh3_64(id.as_bytes()) & ((1 << 22) - 1);
                seen.insert(low, id.clone()).map(|other| (other, id))
            })
            .unwrap();
        let mut e = engine(&["customer_tx_count_1h"], Duration::from_secs(3600));
        let at = now_ms() - 1000;
        let first = e.prepare(0, 0, None, &tx_at(&a, "c", 5.0, at)).unwrap();
        let second = e.prepare(0, 0, None, &tx_at(&b, "c", 5.0, at)).unwrap();
        assert!(!first.duplicate && !second.duplicate, "{a} and {b}");
        assert_eq!(second.features.values(), [2.0, 5.0, 2.0]);
        // A true re-delivery is still recognised.
        assert!(
            e.prepare(0, 0, None, &tx_at(&b, "c", 5.0, at))
                .unwrap()
                .duplicate
        );
    }

    #[test]
    fn a_customer_at_the_cap_is_refused_as_oversized_and_counted() {
        let config = EngineConfig {
            max_events_per_customer: 2,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(
            FeatureSpec::for_model::<&str>(&[]).unwrap(),
            &config,
            Arc::new(Store::default()),
        );
        let at = now_ms() - 60_000;
        for id in ["a", "b"] {
            e.prepare(0, 0, None, &tx_at(id, "hot", 1.0, at)).unwrap();
        }
        let r = e
            .prepare(0, 0, None, &tx_at("c", "hot", 1.0, at))
            .unwrap_err();
        assert_eq!(r.reason, RejectReason::Oversized);
        assert!(
            r.message.contains("max_events_per_customer"),
            "{}",
            r.message
        );
        assert_eq!(e.store().take_full_refusals(), 1);
        // Other customers are not affected.
        assert!(e.prepare(0, 0, None, &tx_at("d", "cool", 1.0, at)).is_ok());
    }

    #[test]
    fn a_null_key_is_invalid_when_keys_are_required() {
        let config = EngineConfig {
            require_key: true,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(
            FeatureSpec::for_model::<&str>(&[]).unwrap(),
            &config,
            Arc::new(Store::default()),
        );
        let value = tx_at("a", "c", 1.0, now_ms());
        let r = e.prepare(0, 0, None, &value).unwrap_err();
        assert_eq!(r.reason, RejectReason::InvalidKey);
        assert!(e.prepare(0, 0, Some(b"c"), &value).is_ok());
        let r = e.prepare(0, 0, Some(b"d"), &value).unwrap_err();
        assert_eq!(r.reason, RejectReason::InvalidKey);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Evicting idle customers as often as possible changes no answer: every event gets the
        /// same features, or the same rejection, as in an engine that never evicts. Customers
        /// come and go over hours against 10- and 60-minute windows; events arrive out of order.
        #[test]
        fn eviction_changes_no_answer(
            events in proptest::collection::vec((0u8..6, 0i64..600, -90i64..30), 1..300),
            lateness_min in 0i64..30,
        ) {
            let features = ["customer_tx_count_10m", "customer_sum_amount_1h"];
            let lateness = Duration::from_secs(lateness_min as u64 * 60);
            let (mut evicting, mut keeping) = (engine(&features, lateness), engine(&features, lateness));
            let span = Retention::new(evicting.spec().longest_window(), lateness_min * 60_000).span_ms();
            // Far enough back that no event reaches the future-skew limit.
            let start = now_ms() - 40 * 86_400_000;
            let mut clock = 0i64;
            for (i, (customer, step, jitter)) in events.into_iter().enumerate() {
                // Time mostly moves forward, with events up to 90 minutes late.
                clock += step;
                let at = start + (clock + jitter).max(0) * 60_000 / 4;
                let value = tx_at(&format!("t{i}"), &format!("c{customer}"), (i % 7) as f64, at);
                let got = evicting.prepare(0, 0, None, &value).map(|p| p.features.values().to_vec());
                let want = keeping.prepare(0, 0, None, &value).map(|p| p.features.values().to_vec());
                proptest::prop_assert_eq!(
                    got.as_ref().map_err(|r| r.reason),
                    want.as_ref().map_err(|r| r.reason)
                );
                evicting.store().evict_idle(span);
            }
        }
    }

    /// A snapshot copied while the pipeline goes on applying messages, loaded and followed by a
    /// replay from its offset, gives exactly the state of one uninterrupted run, whatever the
    /// interleaving of the copy and the pipeline thread.
    #[test]
    fn a_snapshot_taken_during_scoring_plus_the_replay_equals_an_uninterrupted_run() {
        use crate::snapshot::{self, SnapshotDir, StateCheck};
        let config = EngineConfig {
            max_events_per_customer: 4,
            allowed_lateness: Duration::from_secs(600),
            ..EngineConfig::default()
        };
        let spec = FeatureSpec::for_model(&["customer_tx_count_10m"]).unwrap();
        let fresh = || Engine::new(spec.clone(), &config, Arc::new(Store::with_seed(7)));
        let start = now_ms() - 86_400_000;
        // 40 customers, 12,000 messages, time moving forward with events up to 15 minutes late.
        let messages: Vec<Vec<u8>> = (0..12_000i64)
            .map(|i| {
                let at = start + i * 2_000 - (i * 7919 % 900) * 1_000;
                tx_at(
                    &format!("t{}", i % 11_000),
                    &format!("c{}", i * 31 % 40),
                    1.0,
                    at,
                )
            })
            .collect();
        let mut uninterrupted = fresh();
        for (offset, m) in messages.iter().enumerate() {
            let _ = uninterrupted.prepare(0, offset as i64, None, m);
        }
        let retention = config.retention(&spec);
        for split in [2_000usize, 6_000] {
            let mut live = fresh();
            for (offset, m) in messages[..split].iter().enumerate() {
                let _ = live.prepare(0, offset as i64, None, m);
            }
            let store = live.store().clone();
            let check = StateCheck::new(&retention, &store);
            let dir = tempfile::tempdir().unwrap();
            let place = SnapshotDir::new(dir.path(), "tx");
            let captures = store.begin_capture(&[(0, split as i64)]);
            // The pipeline carries on while the snapshot is copied.
            let rest = messages[split..].to_vec();
            let pipeline = std::thread::spawn(move || {
                for (i, m) in rest.iter().enumerate() {
                    let _ = live.prepare(0, (split + i) as i64, None, m);
                }
            });
            snapshot::write_round(&place, &store, &captures, check).unwrap();
            pipeline.join().unwrap();

            let (_, path) = place.list(0).remove(0);
            let snap = snapshot::read(&path, 0, check).unwrap();
            assert!(snap.complete_at <= messages.len() as i64);
            let mut restored = fresh();
            let from = snap.offset as usize;
            restored.skip_applied(snap.applied);
            restored
                .store()
                .load_partition(0, snap.marks, snap.customers);
            for (i, m) in messages[from..].iter().enumerate() {
                let _ = restored.prepare(0, (from + i) as i64, None, m);
            }
            restored.forget_applied();
            for c in 0..40 {
                let id = format!("c{c}");
                let events = |e: &Engine| {
                    e.store()
                        .read_customer(&id, |w| w.events().collect::<Vec<_>>())
                };
                assert_eq!(
                    events(&restored),
                    events(&uninterrupted),
                    "customer {id}, split {split}"
                );
            }
            assert_eq!(
                restored.store().horizons(),
                uninterrupted.store().horizons()
            );
        }
    }

    /// The one case where applying a message twice changes the state: an event refused at the
    /// customer cap is admitted when replayed onto a copy holding later messages, whose newest
    /// time let two old events expire. The copy records that it holds them, and the replay skips them.
    #[test]
    fn a_replay_skips_what_the_copy_already_held() {
        use crate::snapshot::{self, SnapshotDir, StateCheck};
        let config = EngineConfig {
            max_events_per_customer: 3,
            allowed_lateness: Duration::from_secs(30 * 60),
            ..EngineConfig::default()
        };
        let spec = FeatureSpec::for_model(&["customer_tx_count_10m"]).unwrap();
        let fresh = || Engine::new(spec.clone(), &config, Arc::new(Store::with_seed(7)));
        // The state holds 2 × 7 days (the longest window, always held) + 30 minutes.
        let (min, day) = (60_000, 86_400_000);
        let t = now_ms() - 20 * day;
        let messages: Vec<Vec<u8>> = [
            ("m0", t),
            ("m0b", t + 1_000),
            ("m1", t + 14 * day + 15 * min),
            ("m2", t + 14 * day + 20 * min),
            ("m3", t + 14 * day + 31 * min),
        ]
        .iter()
        .map(|&(id, at)| tx_at(id, "c", 1.0, at))
        .collect();
        let mut live = fresh();
        let mut outcomes = Vec::new();
        for (offset, m) in messages[..3].iter().enumerate() {
            outcomes.push(live.prepare(0, offset as i64, None, m).is_ok());
        }
        // The copy begins before m2; m2 (refused: three events held) and m3 (admitted once m0 and
        // m0b expire) are applied before the copy reaches the customer.
        let captures = live.store().begin_capture(&[(0, 3)]);
        for (offset, m) in messages.iter().enumerate().skip(3) {
            outcomes.push(live.prepare(0, offset as i64, None, m).is_ok());
        }
        assert_eq!(outcomes, [true, true, true, false, true]);
        let dir = tempfile::tempdir().unwrap();
        let place = SnapshotDir::new(dir.path(), "tx");
        let check = StateCheck::new(&config.retention(&spec), live.store());
        snapshot::write_round(&place, live.store(), &captures, check).unwrap();
        let snap = snapshot::read(&place.list(0)[0].1, 0, check).unwrap();
        assert_eq!((snap.offset, snap.complete_at), (3, 5));

        let mut restored = fresh();
        restored.skip_applied(snap.applied);
        restored
            .store()
            .load_partition(0, snap.marks, snap.customers);
        for (offset, m) in messages.iter().enumerate().skip(3) {
            let _ = restored.prepare(0, offset as i64, None, m);
        }
        let events = |e: &Engine| e.store().read_customer("c", |w| w.len());
        assert_eq!(events(&restored), events(&live));
        assert_eq!(events(&live), Some(2));
    }

    #[test]
    fn a_stream_of_new_customers_levels_off() {
        let mut e = engine(&["customer_tx_count_10m"], Duration::from_secs(600));
        let span = Retention::new(e.spec().longest_window(), 600_000).span_ms();
        let start = now_ms() - 51 * 86_400_000;
        let mut most = 0;
        // A new customer every 10 minutes for 50 days of event time: 7,200 customers.
        for i in 0..7_200i64 {
            let at = start + i * 600_000;
            e.prepare(
                0,
                0,
                None,
                &tx_at(&format!("t{i}"), &format!("c{i}"), 1.0, at),
            )
            .unwrap();
            if i % 60 == 0 {
                e.store().evict_idle(span);
            }
            most = most.max(e.store().customers());
        }
        // The longest window is the always-present 7 days: the span is 14 days and 10 minutes,
        // 2,017 customers at one per 10 minutes, plus one eviction period.
        assert!(most <= 2_017 + 61, "held up to {most} customers");
        assert!(most >= 2_017, "evicted customers still in reach: {most}");
        assert_eq!(e.store().window_events(), e.store().customers() as i64);
    }
}
