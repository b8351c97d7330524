//! Decoding one input message value into a validated [`Transaction`] (or a fraud [`Label`]), or a
//! [`Rejection`] with its reason.

mod flat;

use std::borrow::Cow;
use std::fmt;

use compact_str::{CompactString, ToCompactString};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::time::EventTime;

pub use fraudscore_contract::RejectReason;
use fraudscore_contract::{MAX_AMOUNT, MAX_ID_BYTES};

/// A rejected message: the reason code and a message naming the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// The customer a transaction belongs to: the key of all window state. Ids up to 24 bytes are
/// kept inline, so that the customer map compares keys without following a pointer to a
/// random place in memory (a cache miss per event on a large population).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(CompactString);

impl CustomerId {
    pub fn new(id: impl Into<CompactString>) -> Self {
        CustomerId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CustomerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One validated input transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub transaction_id: CompactString,
    pub customer_id: CustomerId,
    pub terminal_id: Option<CompactString>,
    pub amount: f64,
    pub timestamp: EventTime,
}

/// One validated fraud label: the outcome of an earlier transaction, learned later.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub transaction_id: CompactString,
    pub customer_id: CustomerId,
    pub terminal_id: CompactString,
    /// The labelled transaction's time.
    pub timestamp: EventTime,
    pub fraud: bool,
    /// When the outcome became known: from then on it counts. The transaction's time when absent.
    pub labelled_at: EventTime,
}

/// Refuses a label whose transaction time is more than `max_future_skew` ahead of the wall
/// clock, as for transactions: a label from the future would make every other label look too
/// old to keep.
pub fn label_in_time(label: &Label, max_future_skew: std::time::Duration) -> Result<(), Rejection> {
    let now = EventTime::now();
    let skew_ms = i64::try_from(max_future_skew.as_millis()).unwrap_or(i64::MAX / 4);
    if label.timestamp.millis() > now.millis().saturating_add(skew_ms) {
        return Err(Rejection::new(
            RejectReason::TimestampOutOfRange,
            format!(
                "`timestamp` {} is more than max_future_skew = {skew_ms} ms ahead of the wall clock ({now})",
                label.timestamp
            ),
        ));
    }
    Ok(())
}

/// Decodes and validates one message value of the labels topic.
pub fn decode_label(value: &[u8], max_message_bytes: usize) -> Result<Label, Rejection> {
    parse(value, max_message_bytes)?.validate_label()
}

/// Decodes and validates one message value. `key`, when present, must be the customer id:
/// window state is partitioned by key, so a mismatch would put the customer's history in two places.
pub fn decode(
    key: Option<&[u8]>,
    value: &[u8],
    max_message_bytes: usize,
) -> Result<Transaction, Rejection> {
    let transaction = parse(value, max_message_bytes)?.validate()?;
    if let Some(key) = key {
        if key != transaction.customer_id.as_str().as_bytes() {
            // The key is the client's bytes: quote a bounded prefix of it, never all of it.
            let shown = String::from_utf8_lossy(&key[..key.len().min(MAX_ID_BYTES)]);
            return Err(Rejection::new(
                RejectReason::InvalidKey,
                format!(
                    "message key {:?}{} ({} bytes) differs from customer_id {:?}",
                    shown,
                    if key.len() > MAX_ID_BYTES { "..." } else { "" },
                    key.len(),
                    transaction.customer_id.as_str()
                ),
            ));
        }
    }
    Ok(transaction)
}

/// The message's fields, not yet validated.
fn parse(value: &[u8], max_message_bytes: usize) -> Result<RawMessage<'_>, Rejection> {
    if value.len() > max_message_bytes {
        return Err(Rejection::new(
            RejectReason::Oversized,
            format!(
                "message is {} bytes, over max_message_bytes = {max_message_bytes}",
                value.len()
            ),
        ));
    }
    // The plain shape producers send is read without serde; anything else, and every error, by
    // serde_json.
    if let Some(raw) = flat::read(value) {
        return Ok(raw);
    }
    serde_json::from_slice(value).map_err(|e| {
        let message = e.to_string();
        match e.classify() {
            // Field-level problems are found by our own visitor and tagged as such.
            serde_json::error::Category::Data if message.starts_with(FIELD_TAG) => Rejection::new(
                RejectReason::InvalidField,
                strip_position(&message[FIELD_TAG.len()..]),
            ),
            _ => Rejection::new(RejectReason::InvalidJson, message),
        }
    })
}

/// serde_json appends " at line L column C" to custom errors; the field name says enough.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

const FIELD_TAG: &str = "\u{1}field:";

/// A JSON scalar as it appeared, so that type problems become `invalid_field` with the field's name
/// instead of a generic parse error.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i128),
    Float(f64),
    Null,
    /// A boolean, array or object, described for the error message.
    Other(&'static str),
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Str(s) => format!("the string {:?}", truncate(s, 40)),
            Scalar::Int(i) => format!("the integer {i}"),
            Scalar::Float(x) => format!("the number {x}"),
            Scalar::Null => "null".to_string(),
            Scalar::Other(what) => (*what).to_string(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The fields of a transaction or a label, as they appeared.
#[derive(Debug, Default)]
struct RawMessage<'a> {
    transaction_id: Option<Scalar<'a>>,
    customer_id: Option<Scalar<'a>>,
    terminal_id: Option<Scalar<'a>>,
    amount: Option<Scalar<'a>>,
    timestamp: Option<Scalar<'a>>,
    label: Option<Scalar<'a>>,
    labelled_at: Option<Scalar<'a>>,
}

/// The fields we read; everything else is skipped without allocating.
enum Field {
    TransactionId,
    CustomerId,
    TerminalId,
    Amount,
    Timestamp,
    Label,
    LabelledAt,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        match name {
            "transaction_id" => Field::TransactionId,
            "customer_id" => Field::CustomerId,
            "terminal_id" => Field::TerminalId,
            "amount" => Field::Amount,
            "timestamp" => Field::Timestamp,
            "label" => Field::Label,
            "labelled_at" => Field::LabelledAt,
            _ => Field::Other,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Field::TransactionId => "transaction_id",
            Field::CustomerId => "customer_id",
            Field::TerminalId => "terminal_id",
            Field::Amount => "amount",
            Field::Timestamp => "timestamp",
            Field::Label => "label",
            Field::LabelledAt => "labelled_at",
            Field::Other => "",
        }
    }
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(Field::of(v))
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> de::Deserialize<'de> for RawMessage<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMessage<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = RawMessage::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let Some(slot) = raw.slot(&field) else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format!(
                            "{FIELD_TAG}`{}` appears more than once",
                            field.name()
                        )));
                    }
                    *slot = Some(map.next_value()?);
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> RawMessage<'a> {
    /// Where a field's value goes; `None` for a field we do not read.
    fn slot(&mut self, field: &Field) -> Option<&mut Option<Scalar<'a>>> {
        Some(match field {
            Field::TransactionId => &mut self.transaction_id,
            Field::CustomerId => &mut self.customer_id,
            Field::TerminalId => &mut self.terminal_id,
            Field::Amount => &mut self.amount,
            Field::Timestamp => &mut self.timestamp,
            Field::Label => &mut self.label,
            Field::LabelledAt => &mut self.labelled_at,
            Field::Other => return None,
        })
    }

    fn validate_label(self) -> Result<Label, Rejection> {
        let transaction_id = id(
            "transaction_id",
            required("transaction_id", self.transaction_id)?,
        )?;
        let customer_id = id("customer_id", required("customer_id", self.customer_id)?)?;
        let terminal_id = id("terminal_id", required("terminal_id", self.terminal_id)?)?;
        let timestamp = timestamp("timestamp", required("timestamp", self.timestamp)?)?;
        let fraud = match required("label", self.label)? {
            Scalar::Str(s) if s == "fraud" => true,
            Scalar::Str(s) if s == "genuine" => false,
            other => {
                return Err(invalid(
                    "label",
                    format!("must be \"fraud\" or \"genuine\", got {}", other.describe()),
                ))
            }
        };
        let labelled_at = match self.labelled_at {
            None | Some(Scalar::Null) => timestamp,
            Some(v) => timestamp_field("labelled_at", v)?,
        };
        if labelled_at < timestamp {
            return Err(invalid(
                "labelled_at",
                format!("({labelled_at}) is before the transaction's timestamp ({timestamp})"),
            ));
        }
        Ok(Label {
            transaction_id,
            customer_id: CustomerId::new(customer_id),
            terminal_id,
            timestamp,
            fraud,
            labelled_at,
        })
    }

    fn validate(self) -> Result<Transaction, Rejection> {
        let transaction_id = id(
            "transaction_id",
            required("transaction_id", self.transaction_id)?,
        )?;
        let customer_id = id("customer_id", required("customer_id", self.customer_id)?)?;
        let terminal_id = match self.terminal_id {
            None | Some(Scalar::Null) => None,
            Some(v) => Some(id("terminal_id", v)?),
        };
        let amount = amount(required("amount", self.amount)?)?;
        let timestamp = timestamp("timestamp", required("timestamp", self.timestamp)?)?;
        Ok(Transaction {
            transaction_id,
            customer_id: CustomerId::new(customer_id),
            terminal_id,
            amount,
            timestamp,
        })
    }
}

fn required<'a>(name: &str, v: Option<Scalar<'a>>) -> Result<Scalar<'a>, Rejection> {
    match v {
        None | Some(Scalar::Null) => Err(Rejection::new(
            RejectReason::MissingField,
            format!("`{name}` is missing"),
        )),
        Some(v) => Ok(v),
    }
}

fn invalid(name: &str, why: String) -> Rejection {
    Rejection::new(RejectReason::InvalidField, format!("`{name}` {why}"))
}

/// Ids are short: kept inline, they cost no allocation.
fn id(name: &str, v: Scalar<'_>) -> Result<CompactString, Rejection> {
    let s = match v {
        Scalar::Str(Cow::Borrowed(s)) => CompactString::new(s),
        Scalar::Str(Cow::Owned(s)) => CompactString::from(s),
        Scalar::Int(i) => i.to_compact_string(),
        other => {
            return Err(invalid(
                name,
                format!("must be a string or an integer, got {}", other.describe()),
            ))
        }
    };
    if s.is_empty() {
        return Err(invalid(name, "is empty".into()));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(invalid(
            name,
            format!("is {} bytes, over {MAX_ID_BYTES}", s.len()),
        ));
    }
    Ok(s)
}

fn amount(v: Scalar<'_>) -> Result<f64, Rejection> {
    let x = match &v {
        Scalar::Int(i) => *i as f64,
        Scalar::Float(x) => *x,
        Scalar::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| invalid("amount", format!("must be a number, got {}", v.describe())))?,
        Scalar::Null | Scalar::Other(_) => {
            return Err(invalid(
                "amount",
                format!("must be a number, got {}", v.describe()),
            ))
        }
    };
    if !x.is_finite() || !(0.0..=MAX_AMOUNT).contains(&x) {
        return Err(invalid(
            "amount",
            format!(
                "must be a finite number from 0 to 1e9, got {}",
                v.describe()
            ),
        ));
    }
    Ok(x)
}

fn timestamp(name: &str, v: Scalar<'_>) -> Result<EventTime, Rejection> {
    let ms = match &v {
        Scalar::Int(ms) => *ms,
        Scalar::Str(s) => {
            let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
                invalid(name, format!("is not RFC 3339 ({e}), got {}", v.describe()))
            })?;
            t.unix_timestamp_nanos() / 1_000_000
        }
        other => {
            return Err(invalid(
                name,
                format!(
                    "must be an RFC 3339 string or integer epoch milliseconds, got {}",
                    other.describe()
                ),
            ))
        }
    };
    EventTime::checked(ms).ok_or_else(|| {
        Rejection::new(
            RejectReason::TimestampOutOfRange,
            format!(
                "`{name}` {} is outside [2000-01-01, 2100-01-01)",
                v.describe()
            ),
        )
    })
}

/// A second timestamp field: out of range is a bad field, not a bad event time.
fn timestamp_field(name: &str, v: Scalar<'_>) -> Result<EventTime, Rejection> {
    timestamp(name, v).map_err(|r| Rejection::new(RejectReason::InvalidField, r.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn ok(json: &str) -> Transaction {
        decode(None, json.as_bytes(), MAX).unwrap_or_else(|r| panic!("{json}: {r}"))
    }

    fn rejected(json: &[u8]) -> Rejection {
        match decode(None, json, MAX) {
            Ok(t) => panic!("{} accepted as {t:?}", String::from_utf8_lossy(json)),
            Err(r) => r,
        }
    }

    fn reason(json: &str) -> RejectReason {
        rejected(json.as_bytes()).reason
    }

    #[test]
    fn accepts_the_documented_example() {
        let t = ok(
            r#"{"transaction_id": "tx-1", "customer_id": "c-42", "terminal_id": "t-7", "amount": 57.16, "timestamp": "2026-11-26T03:44:58.123Z"}"#,
        );
        assert_eq!(t.transaction_id, "tx-1");
        assert_eq!(t.customer_id.as_str(), "c-42");
        assert_eq!(t.terminal_id.as_deref(), Some("t-7"));
        assert_eq!(t.amount, 57.16);
        assert_eq!(t.timestamp.millis(), 1_795_664_698_123);
        assert_eq!(t.timestamp.to_string(), "2026-11-26T03:44:58.123Z");
    }

    #[test]
    fn accepts_each_variant_of_the_fields() {
        // integer ids, normalised to decimal strings
        let t = ok(
            r#"{"transaction_id": 17, "customer_id": -42, "terminal_id": 7, "amount": 1, "timestamp": 946684800000}"#,
        );
        assert_eq!(
            (
                t.transaction_id.as_str(),
                t.customer_id.as_str(),
                t.terminal_id.as_deref()
            ),
            ("17", "-42", Some("7"))
        );
        assert_eq!(t.amount, 1.0);
        assert_eq!(t.timestamp.millis(), 946_684_800_000);
        // numeric string amount, terminal absent, RFC 3339 with an offset and no fraction
        let t = ok(
            r#"{"transaction_id": "a", "customer_id": "b", "amount": "57.16", "timestamp": "2026-11-26T05:44:58+02:00"}"#,
        );
        assert_eq!(t.amount, 57.16);
        assert_eq!(t.terminal_id, None);
        assert_eq!(t.timestamp.to_string(), "2026-11-26T03:44:58.000Z");
        // terminal null, amount zero, upper bound of amount, unknown fields ignored, escapes in ids
        let t = ok(
            r#"{"transaction_id": "a\"b", "customer_id": "\u00e9", "terminal_id": null, "amount": 0, "timestamp": "2000-01-01T00:00:00Z", "is_fraud": 1, "nested": {"x": [1, 2]}}"#,
        );
        assert_eq!(t.transaction_id, "a\"b");
        assert_eq!(t.customer_id.as_str(), "é");
        assert_eq!(t.amount, 0.0);
        assert_eq!(ok(r#"{"transaction_id": "a", "customer_id": "b", "amount": 1e9, "timestamp": 4102444799999}"#).amount, 1e9);
        // ids of exactly the maximum length
        let long = "x".repeat(MAX_ID_BYTES);
        let t = ok(&format!(
            r#"{{"transaction_id": "{long}", "customer_id": "c", "amount": 1, "timestamp": 1000000000000}}"#
        ));
        assert_eq!(t.transaction_id.len(), MAX_ID_BYTES);
    }

    #[test]
    fn key_must_match_customer() {
        let json = br#"{"transaction_id": "a", "customer_id": "c-1", "amount": 1, "timestamp": 1000000000000}"#;
        assert!(decode(Some(b"c-1"), json, MAX).is_ok());
        let r = decode(Some(b"c-2"), json, MAX).unwrap_err();
        assert_eq!(r.reason, RejectReason::InvalidKey);
        assert!(r.message.contains("customer_id"), "{}", r.message);
        // A long binary key is quoted in part, so the error header stays small.
        let long = vec![0xffu8; 500_000];
        let r = decode(Some(&long), json, MAX).unwrap_err();
        assert_eq!(r.reason, RejectReason::InvalidKey);
        assert!(r.message.len() < 1024, "{} bytes", r.message.len());
        assert!(r.message.contains("500000 bytes"), "{}", r.message);
    }

    #[test]
    fn invalid_json() {
        for bad in [
            &b"\xff\xfe"[..],
            b"",
            b"{",
            b"not json",
            b"[1, 2]",
            b"\"a string\"",
            b"42",
            b"null",
            b"{\"amount\": 1e999}",
        ] {
            assert_eq!(
                rejected(bad).reason,
                RejectReason::InvalidJson,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn missing_field_names_the_field() {
        for field in ["transaction_id", "customer_id", "amount", "timestamp"] {
            let mut v = serde_json::json!({"transaction_id": "a", "customer_id": "b", "amount": 1, "timestamp": 1000000000000i64});
            v.as_object_mut().unwrap().remove(field);
            let r = rejected(v.to_string().as_bytes());
            assert_eq!(r.reason, RejectReason::MissingField);
            assert!(r.message.contains(field), "{}", r.message);
            v[field] = serde_json::Value::Null;
            assert_eq!(
                rejected(v.to_string().as_bytes()).reason,
                RejectReason::MissingField
            );
        }
    }

    #[test]
    fn invalid_field_names_the_field() {
        let long = "y".repeat(MAX_ID_BYTES + 1);
        let cases = [
            (
                r#""transaction_id": "", "customer_id": "b", "amount": 1, "timestamp": 1000000000000"#,
                "transaction_id",
            ),
            (
                r#""transaction_id": 1.5, "customer_id": "b", "amount": 1, "timestamp": 1000000000000"#,
                "transaction_id",
            ),
            (
                r#""transaction_id": "a", "customer_id": true, "amount": 1, "timestamp": 1000000000000"#,
                "customer_id",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "terminal_id": [], "amount": 1, "timestamp": 1000000000000"#,
                "terminal_id",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "terminal_id": "", "amount": 1, "timestamp": 1000000000000"#,
                "terminal_id",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": -0.01, "timestamp": 1000000000000"#,
                "amount",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": 1000000000.01, "timestamp": 1000000000000"#,
                "amount",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": "NaN", "timestamp": 1000000000000"#,
                "amount",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": "12 EUR", "timestamp": 1000000000000"#,
                "amount",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": {}, "timestamp": 1000000000000"#,
                "amount",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": 1, "timestamp": "yesterday" "#,
                "timestamp",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": 1, "timestamp": 1.5e12"#,
                "timestamp",
            ),
            (
                r#""transaction_id": "a", "customer_id": "b", "amount": 1, "amount": 2, "timestamp": 1000000000000"#,
                "amount",
            ),
        ];
        for (body, field) in cases {
            let json = format!("{{{body}}}");
            let r = rejected(json.as_bytes());
            assert_eq!(r.reason, RejectReason::InvalidField, "{json}: {r}");
            assert!(r.message.contains(field), "{json}: {}", r.message);
        }
        let json = format!(
            r#"{{"transaction_id": "{long}", "customer_id": "b", "amount": 1, "timestamp": 1000000000000}}"#
        );
        assert_eq!(reason(&json), RejectReason::InvalidField);
        let json = format!(
            r#"{{"transaction_id": "a", "customer_id": "{long}", "amount": 1, "timestamp": 1000000000000}}"#
        );
        assert_eq!(reason(&json), RejectReason::InvalidField);
    }

    #[test]
    fn timestamp_out_of_range() {
        for ts in [
            "946684799999",
            "4102444800000",
            "\"1999-12-31T23:59:59.999Z\"",
            "\"2100-01-01T00:00:00Z\"",
            "-1",
        ] {
            let json = format!(
                r#"{{"transaction_id": "a", "customer_id": "b", "amount": 1, "timestamp": {ts}}}"#
            );
            let r = rejected(json.as_bytes());
            assert_eq!(r.reason, RejectReason::TimestampOutOfRange, "{ts}");
            assert!(r.message.contains("timestamp"));
        }
    }

    #[test]
    fn oversized() {
        let json = br#"{"transaction_id": "a", "customer_id": "b", "amount": 1, "timestamp": 1000000000000}"#;
        assert!(decode(None, json, json.len()).is_ok());
        let r = decode(None, json, json.len() - 1).unwrap_err();
        assert_eq!(r.reason, RejectReason::Oversized);
    }

    #[test]
    fn labels_decode_with_and_without_labelled_at() {
        let l = decode_label(
            br#"{"transaction_id":"t1","customer_id":"c","terminal_id":"T9","timestamp":1700000000000,"label":"fraud","labelled_at":"2023-11-21T22:13:20Z"}"#,
            MAX,
        )
        .unwrap();
        assert!(l.fraud);
        assert_eq!(l.terminal_id, "T9");
        assert_eq!(l.labelled_at.millis(), 1_700_604_800_000);
        let l = decode_label(
            br#"{"transaction_id":"t1","customer_id":"c","terminal_id":7,"timestamp":1700000000000,"label":"genuine"}"#,
            MAX,
        )
        .unwrap();
        assert!(!l.fraud);
        assert_eq!(l.labelled_at, l.timestamp);
    }

    #[test]
    fn bad_labels_are_rejected_naming_the_field() {
        let cases: [(&[u8], RejectReason, &str); 6] = [
            (br#"{"transaction_id":"t","customer_id":"c","timestamp":1700000000000,"label":"fraud"}"#, RejectReason::MissingField, "terminal_id"),
            (br#"{"transaction_id":"t","customer_id":"c","terminal_id":"T","timestamp":1700000000000}"#, RejectReason::MissingField, "label"),
            (br#"{"transaction_id":"t","customer_id":"c","terminal_id":"T","timestamp":1700000000000,"label":"maybe"}"#, RejectReason::InvalidField, "label"),
            (br#"{"transaction_id":"t","customer_id":"c","terminal_id":"T","timestamp":1700000000000,"label":"fraud","labelled_at":1600000000000}"#, RejectReason::InvalidField, "labelled_at"),
            (br#"{"transaction_id":"t","customer_id":"c","terminal_id":"T","timestamp":1700000000000,"label":"fraud","labelled_at":99}"#, RejectReason::InvalidField, "labelled_at"),
            (b"{not json", RejectReason::InvalidJson, ""),
        ];
        for (json, reason, field) in cases {
            let r = decode_label(json, MAX).unwrap_err();
            assert_eq!(
                r.reason,
                reason,
                "{}: {}",
                String::from_utf8_lossy(json),
                r.message
            );
            assert!(r.message.contains(field), "{}", r.message);
        }
    }
}
