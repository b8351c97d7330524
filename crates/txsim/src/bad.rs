//! Malformed input messages, one kind of defect for each of the service's rejection reasons.
//!
//! Every bad value embeds its transaction id `lg-<run>-<seq>`, so no two are alike and the
//! dead-letter copy (the same bytes) can be matched back by value.

use std::io::Write;

use fraudscore_contract::{RejectReason, DEFAULT_MAX_MESSAGE_BYTES, MAX_ID_BYTES};

use crate::sim::{CustomerId, Transaction};
use crate::traffic::{write_timestamp, write_transaction};

/// Values above this many bytes are `oversized` for the service (`max_message_bytes`).
pub const MAX_VALUE_BYTES: usize = DEFAULT_MAX_MESSAGE_BYTES;
/// How far back a `too_late` event is stamped. The rule is "older than the customer's newest
/// event minus the longest window minus 1 hour"; the longest window depends on the model's
/// features (7 days in the spec, 30 days in the current model), so go well beyond any of
/// them while staying after 2000-01-01.
const TOO_LATE_BY_MS: i64 = 400 * DAY_MS;
const DAY_MS: i64 = 86_400_000;
/// 2100-01-01T00:00:00Z, the first instant the service rejects.
const YEAR_2100_MS: i64 = 4_102_444_800_000;

/// The defects that should be rejected for this reason, in the order they are used. Exhaustive on
/// purpose: a reason added to the contract does not compile here until it has a defect.
pub fn defects(reason: RejectReason) -> &'static [Defect] {
    match reason {
        RejectReason::InvalidJson => &[Defect::NotJson, Defect::NotUtf8, Defect::NotAnObject],
        RejectReason::MissingField => &[
            Defect::MissingAmount,
            Defect::NullTimestamp,
            Defect::MissingTransactionId,
        ],
        RejectReason::InvalidField => &[
            Defect::NegativeAmount,
            Defect::AmountTooLarge,
            Defect::AmountNotANumber,
            Defect::TransactionIdTooLong,
            Defect::EmptyCustomerId,
            Defect::CustomerIdWrongType,
        ],
        RejectReason::InvalidKey => &[Defect::KeyDiffersFromCustomer],
        RejectReason::TimestampOutOfRange => &[
            Defect::TimestampBefore2000,
            Defect::TimestampIn2100,
            Defect::TimestampAheadOfClock,
        ],
        RejectReason::TooLate => &[Defect::TooLate],
        RejectReason::Oversized => &[Defect::Oversized],
    }
}

/// One specific way a message is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Defect {
    NotJson,
    NotUtf8,
    NotAnObject,
    MissingAmount,
    NullTimestamp,
    MissingTransactionId,
    NegativeAmount,
    KeyDiffersFromCustomer,
    AmountTooLarge,
    /// A numeric string is accepted, so this one is not numeric at all.
    AmountNotANumber,
    TransactionIdTooLong,
    EmptyCustomerId,
    /// Integers are accepted as ids, so this one is a boolean.
    CustomerIdWrongType,
    TimestampBefore2000,
    /// Epoch milliseconds, to cover the integer form too.
    TimestampIn2100,
    /// A day ahead of the wall clock: beyond the service's `max_future_skew`.
    TimestampAheadOfClock,
    /// 400 days older than an event already sent for the same customer: beyond the longest
    /// window plus the allowed lateness (1 hour).
    TooLate,
    Oversized,
}

impl Defect {
    pub fn reason(self) -> RejectReason {
        match self {
            Defect::NotJson | Defect::NotUtf8 | Defect::NotAnObject => RejectReason::InvalidJson,
            Defect::MissingAmount | Defect::NullTimestamp | Defect::MissingTransactionId => {
                RejectReason::MissingField
            }
            Defect::NegativeAmount
            | Defect::AmountTooLarge
            | Defect::AmountNotANumber
            | Defect::TransactionIdTooLong
            | Defect::EmptyCustomerId
            | Defect::CustomerIdWrongType => RejectReason::InvalidField,
            Defect::KeyDiffersFromCustomer => RejectReason::InvalidKey,
            Defect::TimestampBefore2000
            | Defect::TimestampIn2100
            | Defect::TimestampAheadOfClock => RejectReason::TimestampOutOfRange,
            Defect::TooLate => RejectReason::TooLate,
            Defect::Oversized => RejectReason::Oversized,
        }
    }

    /// The `n`-th bad message's defect: reasons take turns, so each gets an equal share, and
    /// each reason cycles through its own variants.
    pub fn nth(n: u64) -> Defect {
        let reasons = RejectReason::ALL.len() as u64;
        let defects = defects(RejectReason::ALL[(n % reasons) as usize]);
        defects[((n / reasons) % defects.len() as u64) as usize]
    }
}

/// Which messages of a run are bad: an exact share, evenly spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BadMix {
    ratio: f64,
}

impl BadMix {
    /// `ratio` is clamped to `[0, 1]`; NaN means none.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        BadMix { ratio }
    }

    /// `Some(n)` when message `seq` is the `n`-th bad one: message `seq` is bad when the
    /// running total `floor(ratio * count)` steps up at it.
    pub fn bad_index(&self, seq: u64) -> Option<u64> {
        let before = (self.ratio * seq as f64).floor() as u64;
        let after = (self.ratio * (seq + 1) as f64).floor() as u64;
        (after > before).then_some(before)
    }
}

/// What a bad message is built from: the transaction that would have been sent in its slot.
#[derive(Clone, Copy, Debug)]
pub struct Slot<'a> {
    pub transaction_id: &'a str,
    pub tx: &'a Transaction,
    pub epoch_millis: i64,
    /// The customer of the most recent good message, whose newest event the service has
    /// seen: needed for `too_late`.
    pub recent_customer: Option<CustomerId>,
}

/// A malformed message ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMessage {
    pub defect: Defect,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl BadMessage {
    pub fn reason(&self) -> RejectReason {
        self.defect.reason()
    }
}

/// Builds the message for `defect`. `TooLate` needs a customer with an earlier good event;
/// without one (the very first messages of a run) it becomes `TimestampBefore2000`.
pub fn build(defect: Defect, slot: &Slot<'_>) -> BadMessage {
    let defect = match (defect, slot.recent_customer) {
        (Defect::TooLate, None) => Defect::TimestampBefore2000,
        (other, _) => other,
    };
    let tx = slot.tx;
    let id = slot.transaction_id;
    let customer = tx.customer.to_string();
    let mut key = customer.clone().into_bytes();
    let mut value = Vec::with_capacity(256);
    // The common prefix of the JSON variants, up to and excluding the amount.
    let head = |value: &mut Vec<u8>, transaction_id: &str, customer_json: &str| {
        let _ = write!(
            value,
            "{{\"transaction_id\":\"{transaction_id}\",\"customer_id\":{customer_json},\
             \"terminal_id\":\"{}\",",
            tx.terminal
        );
    };
    let quoted = format!("\"{customer}\"");
    let timestamp = |value: &mut Vec<u8>, millis: i64| {
        value.extend_from_slice(b"\"timestamp\":\"");
        write_timestamp(value, millis);
        value.extend_from_slice(b"\"}");
    };
    match defect {
        Defect::NotJson => {
            let _ = write!(value, "{id} is not JSON {{");
        }
        Defect::NotUtf8 => {
            value.extend_from_slice(b"\xff\xfe");
            value.extend_from_slice(id.as_bytes());
            value.extend_from_slice(b"\xc3\x28");
        }
        Defect::NotAnObject => {
            let _ = write!(value, "[\"{id}\",\"{customer}\",{}]", tx.amount);
        }
        Defect::MissingAmount => {
            head(&mut value, id, &quoted);
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::NullTimestamp => {
            head(&mut value, id, &quoted);
            let _ = write!(value, "\"amount\":{},\"timestamp\":null}}", tx.amount);
        }
        Defect::MissingTransactionId => {
            let _ = write!(
                value,
                "{{\"customer_id\":\"{customer}\",\"terminal_id\":\"{}\",\"amount\":{},\
                 \"note\":\"{id}\",",
                tx.terminal, tx.amount
            );
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::NegativeAmount => {
            head(&mut value, id, &quoted);
            let _ = write!(value, "\"amount\":-{},", tx.amount.0.max(1) as f64 / 100.0);
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::KeyDiffersFromCustomer => {
            key = format!("{customer}-other").into_bytes();
            write_transaction(&mut value, id, tx, slot.epoch_millis);
        }
        Defect::AmountTooLarge => {
            head(&mut value, id, &quoted);
            value.extend_from_slice(b"\"amount\":2000000000.5,");
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::AmountNotANumber => {
            head(&mut value, id, &quoted);
            value.extend_from_slice(b"\"amount\":\"fifty\",");
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::TransactionIdTooLong => {
            let mut long = format!("{id}-");
            while long.len() <= MAX_ID_BYTES + 8 {
                long.push('x');
            }
            write_transaction(&mut value, &long, tx, slot.epoch_millis);
        }
        Defect::EmptyCustomerId => {
            key.clear();
            head(&mut value, id, "\"\"");
            let _ = write!(value, "\"amount\":{},", tx.amount);
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::CustomerIdWrongType => {
            head(&mut value, id, "true");
            let _ = write!(value, "\"amount\":{},", tx.amount);
            timestamp(&mut value, slot.epoch_millis);
        }
        Defect::TimestampBefore2000 => {
            head(&mut value, id, &quoted);
            let _ = write!(
                value,
                "\"amount\":{},\"timestamp\":\"1999-12-31T23:59:59.999Z\"}}",
                tx.amount
            );
        }
        Defect::TimestampIn2100 => {
            head(&mut value, id, &quoted);
            let _ = write!(
                value,
                "\"amount\":{},\"timestamp\":{YEAR_2100_MS}}}",
                tx.amount
            );
        }
        Defect::TimestampAheadOfClock => {
            head(&mut value, id, &quoted);
            let _ = write!(
                value,
                "\"amount\":{},\"timestamp\":{}}}",
                tx.amount,
                slot.epoch_millis + DAY_MS
            );
        }
        Defect::TooLate => {
            // Same customer (hence same key and partition) as an event the service has just
            // seen, so it is processed after it.
            let victim = slot.recent_customer.unwrap_or(tx.customer);
            key = victim.to_string().into_bytes();
            let late = Transaction {
                customer: victim,
                ..*tx
            };
            write_transaction(&mut value, id, &late, slot.epoch_millis - TOO_LATE_BY_MS);
        }
        Defect::Oversized => {
            head(&mut value, id, &quoted);
            let _ = write!(value, "\"amount\":{},\"padding\":\"", tx.amount);
            let target = MAX_VALUE_BYTES + 512;
            value.resize(target, b'x');
            value.extend_from_slice(b"\",");
            timestamp(&mut value, slot.epoch_millis);
        }
    }
    BadMessage { defect, key, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Cents, FraudLabel, SimDay, TerminalId};
    use std::collections::{HashMap, HashSet};

    fn tx() -> Transaction {
        Transaction {
            day: SimDay(0),
            second_of_day: 0,
            customer: CustomerId(42),
            terminal: TerminalId(7),
            amount: Cents(5716),
            label: FraudLabel::Genuine,
        }
    }

    const NOW: i64 = 1_795_664_698_123;

    fn make(defect: Defect, seq: u64) -> BadMessage {
        let id = format!("lg-run-{seq}");
        let tx = tx();
        build(
            defect,
            &Slot {
                transaction_id: &id,
                tx: &tx,
                epoch_millis: NOW,
                recent_customer: Some(CustomerId(9)),
            },
        )
    }

    fn json(message: &BadMessage) -> serde_json::Value {
        serde_json::from_slice(&message.value).unwrap_or_else(|e| {
            panic!(
                "{:?} is not JSON: {e}: {}",
                message.defect,
                String::from_utf8_lossy(&message.value)
            )
        })
    }

    fn all_defects() -> Vec<Defect> {
        RejectReason::ALL
            .iter()
            .flat_map(|&r| defects(r).iter().copied())
            .collect()
    }

    #[test]
    fn the_mix_has_the_exact_share_and_every_reason() {
        let mix = BadMix::new(0.01);
        let bad: Vec<u64> = (0..100_000).filter_map(|s| mix.bad_index(s)).collect();
        assert_eq!(bad.len(), 1000);
        assert!(bad.iter().enumerate().all(|(i, &n)| n == i as u64));
        let mut per_reason: HashMap<RejectReason, u64> = HashMap::new();
        for &n in &bad {
            *per_reason.entry(Defect::nth(n).reason()).or_default() += 1;
        }
        // Every reason, in equal shares (1000 over 7: 142 or 143 each).
        assert_eq!(per_reason.len(), RejectReason::ALL.len());
        assert!(per_reason.values().all(|&c| (142..=143).contains(&c)));
        let used: HashSet<Defect> = (0..200).map(Defect::nth).collect();
        assert_eq!(used.len(), all_defects().len());
        assert_eq!(BadMix::new(0.0).bad_index(5), None);
        assert!((0..10).all(|s| BadMix::new(1.0).bad_index(s) == Some(s)));
        assert_eq!(BadMix::new(f64::NAN).bad_index(5), None);
    }

    #[test]
    fn every_defect_is_unique_and_embeds_its_id() {
        let mut seen = HashSet::new();
        for defect in all_defects() {
            for seq in [1, 2] {
                let message = make(defect, seq);
                assert_eq!(message.defect, defect);
                let needle = format!("lg-run-{seq}");
                assert!(
                    message
                        .value
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes()),
                    "{defect:?}"
                );
                assert!(seen.insert(message.value.clone()), "{defect:?} repeats");
            }
        }
    }

    #[test]
    fn invalid_json_is_not_a_json_object() {
        for defect in defects(RejectReason::InvalidJson) {
            let message = make(*defect, 1);
            let parsed = std::str::from_utf8(&message.value)
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
            assert!(!parsed.is_some_and(|v| v.is_object()), "{defect:?}");
        }
        assert!(std::str::from_utf8(&make(Defect::NotUtf8, 1).value).is_err());
    }

    #[test]
    fn missing_fields_are_absent_or_null() {
        let v = json(&make(Defect::MissingAmount, 1));
        assert!(v.get("amount").is_none());
        let v = json(&make(Defect::NullTimestamp, 1));
        assert!(v["timestamp"].is_null());
        let v = json(&make(Defect::MissingTransactionId, 1));
        assert!(v.get("transaction_id").is_none());
        assert_eq!(v["note"], "lg-run-1");
    }

    #[test]
    fn invalid_fields_break_exactly_one_rule() {
        let m = make(Defect::NegativeAmount, 1);
        assert_eq!(json(&m)["amount"].as_f64(), Some(-57.16));
        assert_eq!(m.key, b"c-42");

        let m = make(Defect::KeyDiffersFromCustomer, 1);
        assert_eq!(json(&m)["customer_id"], "c-42");
        assert_ne!(m.key, b"c-42");

        assert!(json(&make(Defect::AmountTooLarge, 1))["amount"].as_f64() > Some(1e9));
        let amount = json(&make(Defect::AmountNotANumber, 1))["amount"].clone();
        assert!(amount.as_str().is_some_and(|s| s.parse::<f64>().is_err()));

        let v = json(&make(Defect::TransactionIdTooLong, 1));
        let id = v["transaction_id"].as_str().expect("string id");
        assert!(id.len() > MAX_ID_BYTES && id.starts_with("lg-run-1-"));

        let m = make(Defect::EmptyCustomerId, 1);
        assert_eq!(json(&m)["customer_id"], "");
        assert!(m.key.is_empty());

        let m = make(Defect::CustomerIdWrongType, 1);
        assert!(json(&m)["customer_id"].is_boolean());
    }

    #[test]
    fn out_of_range_timestamps_are_outside_2000_to_2100() {
        let v = json(&make(Defect::TimestampBefore2000, 1));
        assert!(v["timestamp"].as_str().is_some_and(|t| t < "2000-01-01"));
        let v = json(&make(Defect::TimestampIn2100, 1));
        assert_eq!(v["timestamp"].as_i64(), Some(YEAR_2100_MS));
    }

    #[test]
    fn too_late_reuses_a_recent_customer_far_back() {
        let m = make(Defect::TooLate, 1);
        let v = json(&m);
        assert_eq!(v["customer_id"], "c-9");
        assert_eq!(m.key, b"c-9");
        let mut expected = Vec::new();
        write_timestamp(&mut expected, NOW - TOO_LATE_BY_MS);
        assert_eq!(
            v["timestamp"].as_str().map(str::as_bytes),
            Some(&expected[..])
        );

        let tx = tx();
        let first = build(
            Defect::TooLate,
            &Slot {
                transaction_id: "lg-run-0",
                tx: &tx,
                epoch_millis: NOW,
                recent_customer: None,
            },
        );
        assert_eq!(first.defect, Defect::TimestampBefore2000);
        assert_eq!(first.reason(), RejectReason::TimestampOutOfRange);
    }

    #[test]
    fn oversized_is_valid_json_just_over_the_limit() {
        let m = make(Defect::Oversized, 1);
        assert!(m.value.len() > MAX_VALUE_BYTES && m.value.len() < MAX_VALUE_BYTES + 1024);
        let v = json(&m);
        assert_eq!(v["transaction_id"], "lg-run-1");
        assert_eq!(v["customer_id"], "c-42");
        assert!(v["amount"].is_number());
    }

    #[test]
    fn reason_codes_are_the_service_contract() {
        let codes: Vec<&str> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "invalid_json",
                "missing_field",
                "invalid_field",
                "invalid_key",
                "timestamp_out_of_range",
                "too_late",
                "oversized"
            ]
        );
        for defect in all_defects() {
            assert!(defects(defect.reason()).contains(&defect));
        }
    }
}
