//! Matches each output message back to the input that caused it, and tallies what came back.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::traffic::parse_transaction_id;
use fraudscore_contract::RejectReason;

/// Fingerprint of a value. 64 bits of SipHash plus the length: keeping the bytes themselves
/// would hold every oversized message in memory for the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Digest(u64, usize);

impl Digest {
    fn of(value: &[u8]) -> Self {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        Digest(hasher.finish(), value.len())
    }
}

/// What the sender promised: which messages were bad, why, and their exact bytes. Written by
/// the sender before each bad message goes out, read by the receiver.
#[derive(Debug, Default)]
pub struct Expected {
    reasons: HashMap<u64, RejectReason>,
    by_value: HashMap<Digest, u64>,
}

impl Expected {
    pub fn add_bad(&mut self, seq: u64, reason: RejectReason, value: &[u8]) {
        self.reasons.insert(seq, reason);
        self.by_value.insert(Digest::of(value), seq);
    }

    pub fn reason_of(&self, seq: u64) -> Option<RejectReason> {
        self.reasons.get(&seq).copied()
    }

    pub fn seq_of_value(&self, value: &[u8]) -> Option<u64> {
        self.by_value.get(&Digest::of(value)).copied()
    }

    pub fn bad_seqs(&self) -> impl Iterator<Item = (u64, RejectReason)> + '_ {
        self.reasons.iter().map(|(&seq, &reason)| (seq, reason))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Scored,
    DeadLetter,
}

/// The parts of an output message that matching looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output<'a> {
    pub value: Option<&'a [u8]>,
    /// `loadgen.seq`, only when `loadgen.run` names this run.
    pub header_seq: Option<u64>,
    /// `fraudscore.dlq.reason`.
    pub dlq_reason: Option<&'a str>,
    /// `loadgen.label`: the simulator's fraud scenario of the input.
    pub label: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first output for input `seq`.
    First(u64),
    Duplicate(u64),
    Unexpected,
}

/// Tallies of a run's outputs, all part of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// First outputs on the scored topic (for the pass-through: every input).
    pub scored: u64,
    /// First outputs on the dead-letter topic.
    pub dead_lettered: u64,
    /// Outputs for an input that already had one (on either topic).
    pub duplicates: u64,
    /// Outputs that match no input of this run.
    pub unexpected: u64,
    /// Matched only through the `loadgen.seq` header: the transaction id or the bytes changed.
    pub matched_by_header: u64,
    /// Dead-lettered bad messages whose reason header is not the one intended.
    pub dlq_reason_mismatches: u64,
    /// Good messages that were dead-lettered.
    pub good_dead_lettered: u64,
    /// Bad messages that came out on the scored topic (expected from the pass-through only).
    pub bad_scored: u64,
    /// The same, by the reason they should have been rejected for.
    pub bad_scored_by_reason: BTreeMap<RejectReason, u64>,
    /// Dead-letter outputs by their reason header ("none" when absent).
    pub dlq_by_reason: BTreeMap<String, u64>,
    /// Scored outputs by the input's fraud scenario, then the service's decision.
    pub decisions: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Deserialize)]
struct ScoredView<'a> {
    #[serde(borrow, default)]
    transaction_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
}

/// Receiver-side state: which inputs have produced an output so far.
#[derive(Debug)]
pub struct Matcher {
    run_id: String,
    total: u64,
    received: Vec<u64>,
    unique: u64,
    pub counts: Counts,
}

impl Matcher {
    /// For a run of `total` messages numbered from 0.
    pub fn new(run_id: &str, total: u64) -> Self {
        Matcher {
            run_id: run_id.to_owned(),
            total,
            received: vec![0; total.div_ceil(64) as usize],
            unique: 0,
            counts: Counts::default(),
        }
    }

    /// Inputs that have produced at least one output.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    pub fn has_received(&self, seq: u64) -> bool {
        seq < self.total && self.received[(seq / 64) as usize] & (1 << (seq % 64)) != 0
    }

    /// Sequence numbers of inputs without an output, in order.
    pub fn missing(&self, sent: u64) -> impl Iterator<Item = u64> + '_ {
        (0..sent.min(self.total)).filter(|&seq| !self.has_received(seq))
    }

    /// Scored outputs are matched by transaction id, then (a pass-through copying a bad
    /// message) by bytes; dead letters by bytes; either falls back to the `loadgen.seq`
    /// header.
    pub fn on_output(&mut self, topic: Topic, output: &Output<'_>, expected: &Expected) -> Verdict {
        let value = output.value.unwrap_or_default();
        let mut decision = None;
        let mut seq = None;
        if topic == Topic::Scored {
            if let Ok(view) = serde_json::from_slice::<ScoredView<'_>>(value) {
                seq = view
                    .transaction_id
                    .as_deref()
                    .and_then(|id| parse_transaction_id(&self.run_id, id));
                decision = view.decision;
            }
        }
        if seq.is_none() {
            seq = expected.seq_of_value(value);
        }
        if seq.is_none() {
            seq = output.header_seq;
            if seq.is_some() {
                self.counts.matched_by_header += 1;
            }
        }
        let Some(seq) = seq.filter(|&s| s < self.total) else {
            self.counts.unexpected += 1;
            return Verdict::Unexpected;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.received[word] & bit != 0 {
            self.counts.duplicates += 1;
            return Verdict::Duplicate(seq);
        }
        self.received[word] |= bit;
        self.unique += 1;

        let intended = expected.reason_of(seq);
        match topic {
            Topic::Scored => {
                self.counts.scored += 1;
                if let Some(reason) = intended {
                    self.counts.bad_scored += 1;
                    *self.counts.bad_scored_by_reason.entry(reason).or_default() += 1;
                }
                if let Some(decision) = decision {
                    let label = match output.label {
                        Some(0) => "genuine".to_owned(),
                        Some(n) => format!("fraud_scenario_{n}"),
                        None => "unlabelled".to_owned(),
                    };
                    *self
                        .counts
                        .decisions
                        .entry(label)
                        .or_default()
                        .entry(decision.into_owned())
                        .or_default() += 1;
                }
            }
            Topic::DeadLetter => {
                self.counts.dead_lettered += 1;
                let got = output.dlq_reason.unwrap_or("none");
                *self.counts.dlq_by_reason.entry(got.to_owned()).or_default() += 1;
                match intended {
                    Some(reason) if reason.code() != got => self.counts.dlq_reason_mismatches += 1,
                    Some(_) => {}
                    None => self.counts.good_dead_lettered += 1,
                }
            }
        }
        Verdict::First(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "abc";

    fn scored(value: &[u8]) -> Output<'_> {
        Output {
            value: Some(value),
            label: Some(0),
            ..Output::default()
        }
    }

    #[test]
    fn scored_outputs_match_by_transaction_id_once() {
        let expected = Expected::default();
        let mut matcher = Matcher::new(RUN, 10);
        let out = br#"{"transaction_id":"lg-abc-3","score":0.1,"decision":"approve"}"#;
        assert_eq!(
            matcher.on_output(Topic::Scored, &scored(out), &expected),
            Verdict::First(3)
        );
        assert_eq!(
            matcher.on_output(Topic::Scored, &scored(out), &expected),
            Verdict::Duplicate(3)
        );
        let other_run = br#"{"transaction_id":"lg-xyz-3"}"#;
        assert_eq!(
            matcher.on_output(Topic::Scored, &scored(other_run), &expected),
            Verdict::Unexpected
        );
        let beyond = br#"{"transaction_id":"lg-abc-10"}"#;
        assert_eq!(
            matcher.on_output(Topic::Scored, &scored(beyond), &expected),
            Verdict::Unexpected
        );
        assert_eq!(matcher.unique(), 1);
        assert_eq!(matcher.counts.scored, 1);
        assert_eq!(matcher.counts.duplicates, 1);
        assert_eq!(matcher.counts.unexpected, 2);
        assert_eq!(matcher.counts.decisions["genuine"]["approve"], 1);
        assert_eq!(matcher.missing(5).collect::<Vec<_>>(), [0, 1, 2, 4]);
    }

    #[test]
    fn dead_letters_match_by_bytes_and_check_the_reason() {
        let mut expected = Expected::default();
        expected.add_bad(4, RejectReason::InvalidJson, b"lg-abc-4 not json");
        expected.add_bad(5, RejectReason::Oversized, b"lg-abc-5 big");
        let mut matcher = Matcher::new(RUN, 10);
        let right = Output {
            value: Some(b"lg-abc-4 not json"),
            dlq_reason: Some("invalid_json"),
            ..Output::default()
        };
        assert_eq!(
            matcher.on_output(Topic::DeadLetter, &right, &expected),
            Verdict::First(4)
        );
        let wrong = Output {
            value: Some(b"lg-abc-5 big"),
            dlq_reason: Some("invalid_field"),
            ..Output::default()
        };
        assert_eq!(
            matcher.on_output(Topic::DeadLetter, &wrong, &expected),
            Verdict::First(5)
        );
        assert_eq!(matcher.counts.dlq_reason_mismatches, 1);
        assert_eq!(matcher.counts.dlq_by_reason["invalid_json"], 1);
        assert_eq!(matcher.counts.dlq_by_reason["invalid_field"], 1);

        // A good message dead-lettered is found through its header.
        let good = Output {
            value: Some(br#"{"transaction_id":"lg-abc-6"}"#),
            header_seq: Some(6),
            dlq_reason: Some("too_late"),
            ..Output::default()
        };
        assert_eq!(
            matcher.on_output(Topic::DeadLetter, &good, &expected),
            Verdict::First(6)
        );
        assert_eq!(matcher.counts.good_dead_lettered, 1);
        assert_eq!(matcher.counts.matched_by_header, 1);
        assert_eq!(matcher.counts.dead_lettered, 3);

        // Altered bytes and no header: nothing to match.
        let altered = Output {
            value: Some(b"lg-abc-4 not json!"),
            ..Output::default()
        };
        assert_eq!(
            matcher.on_output(Topic::DeadLetter, &altered, &expected),
            Verdict::Unexpected
        );
    }

    #[test]
    fn a_pass_through_copy_of_a_bad_message_counts_as_scored() {
        let mut expected = Expected::default();
        expected.add_bad(2, RejectReason::InvalidJson, b"\xff\xfelg-abc-2");
        expected.add_bad(
            7,
            RejectReason::InvalidField,
            br#"{"transaction_id":"lg-abc-7","amount":-1}"#,
        );
        let mut matcher = Matcher::new(RUN, 10);
        assert_eq!(
            matcher.on_output(Topic::Scored, &scored(b"\xff\xfelg-abc-2"), &expected),
            Verdict::First(2)
        );
        assert_eq!(
            matcher.on_output(
                Topic::Scored,
                &scored(br#"{"transaction_id":"lg-abc-7","amount":-1}"#),
                &expected
            ),
            Verdict::First(7)
        );
        assert_eq!(matcher.counts.bad_scored, 2);
        assert_eq!(
            matcher.counts.bad_scored_by_reason[&RejectReason::InvalidJson],
            1
        );
        assert_eq!(matcher.counts.scored, 2);
        assert!(matcher.has_received(2) && matcher.has_received(7) && !matcher.has_received(3));
        let bad: Vec<(u64, RejectReason)> = {
            let mut v: Vec<_> = expected.bad_seqs().collect();
            v.sort();
            v
        };
        assert_eq!(
            bad,
            [
                (2, RejectReason::InvalidJson),
                (7, RejectReason::InvalidField)
            ]
        );
    }
}
