//! Encoding a scored transaction as the output wire format, and a rejection as a dead-letter record
//! (its value in a replay, its headers on Kafka).

use fraudscore_contract::headers;
use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;

use crate::decode::Rejection;
use crate::engine::Prepared;
use crate::features::{FeatureSpec, FeatureValue};
use crate::scorer::{Scorer, Verdict};
use crate::time::EventTime;

/// A JSON object written straight into a byte buffer, with no intermediate tree: once the
/// caller's buffer has grown to a record's size, encoding allocates nothing. Keys are the wire
/// format's own names and feature names, which are plain ASCII and need no escaping.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        debug_assert!(
            key.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            "{key} needs escaping"
        );
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// A string, number or boolean, as serde_json writes it (escaped; a non-finite number as null).
    fn value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        let out = self.key(key);
        // Writing plain values into a Vec cannot fail.
        let _ = serde_json::to_writer(out, value);
    }

    /// A name from the wire format's own vocabulary (a decision), which needs no escaping.
    fn name(&mut self, key: &str, name: &str) {
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.push(b'"');
    }

    fn time(&mut self, key: &str, at: EventTime) {
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(&at.rfc3339());
        out.push(b'"');
    }

    /// A nested object, written by `fill`.
    fn object(&mut self, key: &str, fill: impl FnOnce(&mut Object<'_>)) {
        let mut inner = Object::new(self.key(key));
        fill(&mut inner);
        inner.end();
    }

    /// An array, each item written by `fill` (an object with [`Object::new`], or a value).
    fn array<I: IntoIterator>(
        &mut self,
        key: &str,
        items: I,
        mut fill: impl FnMut(&mut Vec<u8>, I::Item),
    ) {
        let out = self.key(key);
        out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            fill(out, item);
        }
        out.push(b']');
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Writes the output value for one transaction into `out` (cleared first); without a verdict
/// (features-only replay) the score fields are left out, and the `shadow_*` fields unless
/// `shadow_inline` (no shadow topic).
pub fn scored(
    out: &mut Vec<u8>,
    spec: &FeatureSpec,
    prepared: &Prepared,
    verdict: Option<(&Verdict, &Scorer)>,
    shadow_inline: bool,
    scored_at: EventTime,
) {
    out.clear();
    let t = &prepared.transaction;
    let mut o = Object::new(out);
    o.value("transaction_id", t.transaction_id.as_str());
    o.value("customer_id", t.customer_id.as_str());
    if let Some(terminal) = &t.terminal_id {
        o.value("terminal_id", terminal.as_str());
    }
    o.value("amount", &t.amount);
    o.time("timestamp", t.timestamp);
    o.object("features", |f| {
        for (name, value) in spec.entries(&prepared.features) {
            match value {
                FeatureValue::Integer(v) => f.value(name, &v),
                FeatureValue::Real(v) => f.value(name, &v),
            }
        }
    });
    if let Some((v, scorer)) = verdict {
        o.value("score", &v.score);
        o.name("decision", v.decision.as_str());
        o.value("model_version", scorer.model().version());
        if !v.reasons.is_empty() {
            o.array("reasons", &v.reasons, |out, reason| {
                let mut r = Object::new(out);
                r.name("feature", spec.model_name(reason.column));
                r.value("value", &reason.value);
                r.value("contribution", &reason.contribution);
                r.end();
            });
        }
        if let Some(rules) = scorer.rules().filter(|_| !v.rules.is_empty()) {
            // Rule names are the rules file's: escaped.
            o.array("rules", &v.rules, |out, &i| {
                let _ = serde_json::to_writer(out, rules.name(i));
            });
        }
        if let (Some(shadow), Some(model), true) = (v.shadow, scorer.shadow(), shadow_inline) {
            o.value("shadow_score", &shadow.score);
            o.name("shadow_decision", shadow.decision.as_str());
            o.value("shadow_model_version", model.version());
        }
    }
    o.time("scored_at", scored_at);
    if prepared.duplicate {
        o.value("duplicate", &true);
    }
    o.end();
}

/// Writes a shadow topic's record into `out` (cleared first): the shadow's verdict beside the
/// model's, for one transaction. False, with nothing written, if no shadow scored it.
pub fn shadowed(
    out: &mut Vec<u8>,
    prepared: &Prepared,
    verdict: &Verdict,
    scorer: &Scorer,
    scored_at: EventTime,
) -> bool {
    out.clear();
    let (Some(shadow), Some(model)) = (verdict.shadow, scorer.shadow()) else {
        return false;
    };
    let t = &prepared.transaction;
    let mut o = Object::new(out);
    o.value("transaction_id", t.transaction_id.as_str());
    o.value("customer_id", t.customer_id.as_str());
    o.time("timestamp", t.timestamp);
    o.value("model_version", scorer.model().version());
    o.value("score", &verdict.score);
    // The decision the output carries (rules included), and the model's by its thresholds
    // alone, which the shadow's compares with.
    o.name("decision", verdict.decision.as_str());
    o.name("model_decision", shadow.model_decision.as_str());
    o.value("shadow_model_version", model.version());
    o.value("shadow_score", &shadow.score);
    o.name("shadow_decision", shadow.decision.as_str());
    o.time("scored_at", scored_at);
    o.end();
    true
}

/// A replay dead-letter line: `{"line", "reason", "error", "value"}`.
pub fn rejected_line(line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    rejected(None, line, rejection, value)
}

/// A replay dead-letter line for a bad label: `{"file": "labels", "line", ...}`.
pub fn rejected_label_line(line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    rejected(Some("labels"), line, rejection, value)
}

/// `file` says which input file, when a replay reads more than one.
fn rejected(file: Option<&'static str>, line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut o = Object::new(&mut out);
    if let Some(file) = file {
        o.name("file", file);
    }
    o.value("line", &line);
    o.name("reason", rejection.reason.code());
    o.value("error", rejection.message.as_str());
    o.value("value", String::from_utf8_lossy(value).as_ref());
    o.end();
    out
}

/// The headers of a dead-letter record: the input's own, then the reason, the error and where
/// the input came from.
pub fn dead_letter_headers(
    input: OwnedHeaders,
    reason: &str,
    error: &str,
    source_topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
        Header {
            key,
            value: Some(value),
        }
    }
    input
        .insert(header(headers::DLQ_REASON, reason))
        .insert(header(headers::DLQ_ERROR, error))
        .insert(header(headers::SOURCE_TOPIC, source_topic))
        .insert(header(headers::SOURCE_PARTITION, &partition.to_string()))
        .insert(header(headers::SOURCE_OFFSET, &offset.to_string()))
}
