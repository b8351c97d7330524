//! Encoding a scored transaction as the output wire format, and a rejection as a dead-letter record
//! (its value in a replay, its headers on Kafka).

use fraudscore_contract::headers;
use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;

use crate::decode::Rejection;
use crate::engine::{Decision, Prepared};
use crate::explain::Reason;
use crate::features::{FeatureSpec, NamedFeatures};
use crate::scorer::{Scorer, Verdict};
use crate::time::EventTime;

#[derive(Serialize)]
struct Scored<'a> {
    transaction_id: &'a str,
    customer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminal_id: Option<&'a str>,
    amount: f64,
    timestamp: String,
    features: NamedFeatures<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<NamedReasons<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_model_version: Option<&'a str>,
    scored_at: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// `[{"feature", "value", "contribution"}, ...]`, the model's column names spelled out.
struct NamedReasons<'a> {
    spec: &'a FeatureSpec,
    reasons: &'a [Reason],
}

impl Serialize for NamedReasons<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Named<'a> {
            feature: &'a str,
            value: f32,
            contribution: f32,
        }
        s.collect_seq(self.reasons.iter().map(|r| Named {
            feature: self.spec.model_name(r.column),
            value: r.value,
            contribution: r.contribution,
        }))
    }
}

/// The output value for one transaction; without a verdict (features-only replay) the score
/// fields are left out, and the `shadow_*` fields unless `shadow_inline` (no shadow topic).
pub fn scored(
    spec: &FeatureSpec,
    prepared: &Prepared,
    verdict: Option<(&Verdict, &Scorer)>,
    shadow_inline: bool,
    scored_at: EventTime,
) -> Vec<u8> {
    let t = &prepared.transaction;
    let shadow = verdict
        .and_then(|(v, _)| v.shadow)
        .filter(|_| shadow_inline);
    let record = Scored {
        transaction_id: &t.transaction_id,
        customer_id: t.customer_id.as_str(),
        terminal_id: t.terminal_id.as_deref(),
        amount: t.amount,
        timestamp: t.timestamp.to_string(),
        features: spec.named(&prepared.features),
        score: verdict.map(|(v, _)| v.score),
        decision: verdict.map(|(v, _)| v.decision),
        model_version: verdict.map(|(_, scorer)| scorer.model().version()),
        reasons: verdict
            .filter(|(v, _)| !v.reasons.is_empty())
            .map(|(v, _)| NamedReasons {
                spec,
                reasons: &v.reasons,
            }),
        rules: match verdict {
            Some((v, scorer)) => scorer
                .rules()
                .map(|r| v.rules.iter().map(|&i| r.name(i)).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        },
        shadow_score: shadow.map(|s| s.score),
        shadow_decision: shadow.map(|s| s.decision),
        shadow_model_version: shadow
            .and(verdict.and_then(|(_, scorer)| scorer.shadow()))
            .map(|m| m.version()),
        scored_at: scored_at.to_string(),
        duplicate: prepared.duplicate,
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// A shadow topic's record: the shadow's verdict beside the model's, for one transaction.
#[derive(Serialize)]
struct Shadowed<'a> {
    transaction_id: &'a str,
    customer_id: &'a str,
    timestamp: String,
    model_version: &'a str,
    score: f32,
    /// The decision the output carries (rules included).
    decision: Decision,
    /// The model's decision by its thresholds alone, which the shadow's compares with.
    model_decision: Decision,
    shadow_model_version: &'a str,
    shadow_score: f32,
    shadow_decision: Decision,
    scored_at: String,
}

/// The shadow topic's value for one transaction, if a shadow scored it.
pub fn shadowed(
    prepared: &Prepared,
    verdict: &Verdict,
    scorer: &Scorer,
    scored_at: EventTime,
) -> Option<Vec<u8>> {
    let (shadow, model) = (verdict.shadow?, scorer.shadow()?);
    let t = &prepared.transaction;
    let record = Shadowed {
        transaction_id: &t.transaction_id,
        customer_id: t.customer_id.as_str(),
        timestamp: t.timestamp.to_string(),
        model_version: scorer.model().version(),
        score: verdict.score,
        decision: verdict.decision,
        model_decision: shadow.model_decision,
        shadow_model_version: model.version(),
        shadow_score: shadow.score,
        shadow_decision: shadow.decision,
        scored_at: scored_at.to_string(),
    };
    serde_json::to_vec(&record).ok()
}

#[derive(Serialize)]
struct Rejected<'a> {
    /// Which input file, when a replay reads more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'static str>,
    line: u64,
    reason: &'static str,
    error: &'a str,
    value: &'a str,
}

/// A replay dead-letter line: `{"line", "reason", "error", "value"}`.
pub fn rejected_line(line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    rejected(None, line, rejection, value)
}

/// A replay dead-letter line for a bad label: `{"file": "labels", "line", ...}`.
pub fn rejected_label_line(line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    rejected(Some("labels"), line, rejection, value)
}

fn rejected(file: Option<&'static str>, line: u64, rejection: &Rejection, value: &[u8]) -> Vec<u8> {
    let value = String::from_utf8_lossy(value);
    let record = Rejected {
        file,
        line,
        reason: rejection.reason.code(),
        error: &rejection.message,
        value: &value,
    };
    serde_json::to_vec(&record).unwrap_or_default()
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
