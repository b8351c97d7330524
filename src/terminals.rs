//! Every terminal's labelled transactions, from the labels topic, answering the delayed fraud
//! counts of the terminal features.
//!
//! A label counts for a transaction at time t when its transaction's timestamp lies in
//! (t − delay − len, t − delay] and it was known (`labelled_at`) by t: what a fraud team could
//! have known then, whatever order the labels arrive in. The service and the offline replay
//! therefore agree as long as a label arrives before the transactions it counts for are scored.

use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

use crate::decode::Label;
use crate::time::{EventTime, WindowLen};

/// A window over a terminal's labelled transactions, ending `delay` before the scored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelayedWindow {
    pub len: WindowLen,
    pub delay: WindowLen,
}

impl DelayedWindow {
    /// How far back from a scored transaction the window reaches.
    pub fn reach_ms(self) -> i64 {
        self.len.millis() + self.delay.millis()
    }
}

/// What one delayed window of a terminal's known labels shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminalStats {
    pub labelled: u32,
    pub fraud: u32,
    /// Transaction time of the earliest fraud: when the compromise the labels show began.
    pub first_fraud_ms: Option<i64>,
    /// Transaction time of the latest labelled transaction, and whether it was a fraud (of
    /// several at that same instant: any, so that the order of ties, which differs between
    /// processes, cannot change it).
    pub last: Option<(i64, bool)>,
}

impl TerminalStats {
    /// The share of frauds among the labelled transactions; 0 when none.
    pub fn risk(self) -> f64 {
        if self.labelled == 0 {
            0.0
        } else {
            self.fraud as f64 / self.labelled as f64
        }
    }

    /// Days from the earliest fraud to `at`; 0 when none.
    pub fn fraud_age_days(self, at: EventTime) -> f64 {
        self.first_fraud_ms
            .map_or(0.0, |first| (at.millis() - first) as f64 / 86_400_000.0)
    }

    /// Counts one known label; labels come in transaction-time order.
    fn count(&mut self, at: i64, fraud: bool) {
        self.labelled += 1;
        self.fraud += fraud as u32;
        if fraud && self.first_fraud_ms.is_none() {
            self.first_fraud_ms = Some(at);
        }
        self.last = match self.last {
            Some((last, tied)) if last == at => Some((at, tied || fraud)),
            _ => Some((at, fraud)),
        };
    }

    /// Whether the latest labelled transaction was a fraud; false when none.
    pub fn last_fraud(self) -> bool {
        self.last.is_some_and(|(_, fraud)| fraud)
    }
}

/// What became of a label offered to [`Terminals::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelAdmission {
    Added,
    /// The same transaction's label, already held: counted once.
    Duplicate,
    /// The same transaction labelled again, known later and with the other outcome: replaced.
    Changed,
    /// Older than any window of a transaction still scored can reach: not kept.
    TooOld,
}

/// One labelled transaction.
#[derive(Debug, Clone, Copy)]
struct Labelled {
    at: i64,
    id: u64,
    known_at: i64,
    fraud: bool,
}

impl Labelled {
    fn key(&self) -> (i64, u64) {
        (self.at, self.id)
    }
}

/// All terminals' labels: written by the labels reader, read by the pipeline's engine and lookups.
#[derive(Debug)]
pub struct Terminals {
    /// Per terminal, its labels sorted by (transaction time, id hash).
    labels: DashMap<Box<str>, Vec<Labelled>, foldhash::fast::RandomState>,
    /// Transaction-id hashes tell re-deliveries apart; the state is rebuilt from the topic at
    /// every start, so a per-process seed does.
    id_seed: u64,
    /// Labels of transactions at or before the newest label's time minus this are dropped.
    span_ms: i64,
    newest: AtomicI64,
    held: AtomicI64,
}

impl Terminals {
    /// Terminals keeping labels `span_ms` behind the newest label: the longest delayed window's
    /// reach plus how far behind the newest transaction one may still be scored.
    pub fn new(span_ms: i64) -> Terminals {
        use std::hash::BuildHasher;
        Terminals {
            labels: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
            id_seed: std::collections::hash_map::RandomState::new().hash_one(0x7e4a_u64),
            span_ms,
            newest: AtomicI64::new(i64::MIN),
            held: AtomicI64::new(0),
        }
    }

    /// Adds a label, or says why it changed nothing.
    pub fn add(&self, label: &Label) -> LabelAdmission {
        let at = label.timestamp.millis();
        let newest = self.newest.fetch_max(at, Ordering::Relaxed).max(at);
        let cut = newest.saturating_sub(self.span_ms);
        if at <= cut {
            return LabelAdmission::TooOld;
        }
        let new = Labelled {
            at,
            id: xxhash_rust::xxh3::xxh3_64_with_seed(label.transaction_id.as_bytes(), self.id_seed),
            known_at: label.labelled_at.millis(),
            fraud: label.fraud,
        };
        let mut held = self
            .labels
            .entry(label.terminal_id.as_str().into())
            .or_default();
        let pos = held.partition_point(|l| l.key() < new.key());
        let admission = match held.get_mut(pos) {
            Some(old) if old.key() == new.key() => {
                if old.fraud != new.fraud && new.known_at >= old.known_at {
                    *old = new;
                    LabelAdmission::Changed
                } else {
                    // The same outcome known earlier counts from the earlier time, whatever
                    // order the copies arrive in (as a replay sorted by labelled_at sees it).
                    if old.fraud == new.fraud {
                        old.known_at = old.known_at.min(new.known_at);
                    }
                    LabelAdmission::Duplicate
                }
            }
            _ => {
                held.insert(pos, new);
                self.held.fetch_add(1, Ordering::Relaxed);
                LabelAdmission::Added
            }
        };
        // Labels arrive roughly in time order, so expired ones sit at the front.
        let expired = held.partition_point(|l| l.at <= cut);
        if expired > 0 && expired * 8 >= held.len() {
            held.drain(..expired);
            self.held.fetch_sub(expired as i64, Ordering::Relaxed);
        }
        admission
    }

    /// Counts for each window (as ordered in `windows`) of the terminal's labels, for a
    /// transaction at `at`: labels of transactions in (at − delay − len, at − delay], known by `at`.
    pub fn stats(
        &self,
        terminal: &str,
        at: EventTime,
        windows: &[DelayedWindow],
        out: &mut Vec<TerminalStats>,
    ) {
        out.clear();
        let Some(held) = self.labels.get(terminal) else {
            out.resize(windows.len(), TerminalStats::default());
            return;
        };
        let t = at.millis();
        for w in windows {
            let hi = t - w.delay.millis();
            let lo = hi - w.len.millis();
            let start = held.partition_point(|l| l.at <= lo);
            let mut s = TerminalStats::default();
            for l in held[start..].iter().take_while(|l| l.at <= hi) {
                if l.known_at <= t {
                    s.count(l.at, l.fraud);
                }
            }
            out.push(s);
        }
    }

    /// Drops the labels no window can reach any more, for terminals that got none lately.
    pub fn evict(&self) -> usize {
        let cut = self
            .newest
            .load(Ordering::Relaxed)
            .saturating_sub(self.span_ms);
        let mut dropped = 0;
        self.labels.retain(|_, held| {
            let expired = held.partition_point(|l| l.at <= cut);
            held.drain(..expired);
            dropped += expired;
            !held.is_empty()
        });
        self.held.fetch_sub(dropped as i64, Ordering::Relaxed);
        dropped
    }

    /// A terminal's labels as (transaction time, fraud, labelled at), oldest first, for lookups.
    pub fn read_terminal(&self, terminal: &str) -> Option<Vec<(EventTime, bool, EventTime)>> {
        self.labels.get(terminal).map(|held| {
            held.iter()
                .filter_map(|l| {
                    Some((
                        EventTime::checked(l.at)?,
                        l.fraud,
                        EventTime::checked(l.known_at)?,
                    ))
                })
                .collect()
        })
    }

    pub fn terminals(&self) -> usize {
        self.labels.len()
    }

    pub fn labels_held(&self) -> i64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::CustomerId;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;
    const H: i64 = 3_600_000;

    fn label(id: &str, terminal: &str, at: i64, fraud: bool, known_at: i64) -> Label {
        Label {
            transaction_id: id.into(),
            customer_id: CustomerId::new("c"),
            terminal_id: terminal.into(),
            timestamp: EventTime::checked(at).unwrap(),
            fraud,
            labelled_at: EventTime::checked(known_at).unwrap(),
        }
    }

    fn hours(h: i64) -> WindowLen {
        WindowLen::parse(&format!("{h}h")).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random label streams, out of order, re-delivered and relabelled, against a brute-force
        /// count over every label ever accepted (the latest outcome of each transaction).
        #[test]
        fn stats_match_brute_force(
            labels in prop::collection::vec((0u8..3, 0u8..30, any::<bool>(), 0i64..48), 1..200),
            queries in prop::collection::vec((0u8..3, 0i64..200), 1..40),
        ) {
            let windows = [
                DelayedWindow { len: hours(24), delay: hours(24) },
                DelayedWindow { len: hours(6), delay: hours(1) },
            ];
            let terminals = Terminals::new(i64::MAX / 4);
            // Per (terminal, tx): (at, fraud, known_at) of the label that stands.
            let mut reference: std::collections::HashMap<(u8, u8), (i64, bool, i64)> = Default::default();
            for (terminal, tx, fraud, delay_h) in labels {
                // A transaction keeps its time, shared with one other (ties decide the latest
                // label); its labels may differ in outcome and known time.
                let at = T0 + (tx / 2) as i64 * 3 * H;
                let known_at = at + delay_h * H;
                let l = label(&format!("tx{tx}"), &format!("T{terminal}"), at, fraud, known_at);
                let admission = terminals.add(&l);
                match reference.get(&(terminal, tx)).copied() {
                    None => {
                        prop_assert_eq!(admission, LabelAdmission::Added);
                        reference.insert((terminal, tx), (at, fraud, known_at));
                    }
                    Some((_, old_fraud, old_known)) => {
                        if old_fraud != fraud && known_at >= old_known {
                            prop_assert_eq!(admission, LabelAdmission::Changed);
                            reference.insert((terminal, tx), (at, fraud, known_at));
                        } else {
                            prop_assert_eq!(admission, LabelAdmission::Duplicate);
                            if old_fraud == fraud {
                                reference.insert((terminal, tx), (at, fraud, old_known.min(known_at)));
                            }
                        }
                    }
                }
            }
            let mut out = Vec::new();
            for (terminal, t_h) in queries {
                let t = T0 + t_h * H;
                terminals.stats(&format!("T{terminal}"), EventTime::checked(t).unwrap(), &windows, &mut out);
                for (w, got) in windows.iter().zip(&out) {
                    let (hi, lo) = (t - w.delay.millis(), t - w.reach_ms());
                    let known: Vec<(i64, bool)> = reference
                        .iter()
                        .filter(|(&(term, _), &(at, _, known_at))| term == terminal && at > lo && at <= hi && known_at <= t)
                        .map(|(_, &(at, fraud, _))| (at, fraud))
                        .collect();
                    prop_assert_eq!(got.labelled as usize, known.len());
                    prop_assert_eq!(got.fraud as usize, known.iter().filter(|k| k.1).count());
                    let first_fraud = known.iter().filter(|k| k.1).map(|k| k.0).min();
                    prop_assert_eq!(got.first_fraud_ms, first_fraud);
                    let last = known
                        .iter()
                        .map(|k| k.0)
                        .max()
                        .map(|last| (last, known.iter().any(|k| k.0 == last && k.1)));
                    prop_assert_eq!(got.last, last);
                }
            }
        }
    }

    #[test]
    fn old_labels_are_dropped_beyond_the_span() {
        let terminals = Terminals::new(48 * H);
        assert_eq!(
            terminals.add(&label("a", "T", T0, true, T0)),
            LabelAdmission::Added
        );
        assert_eq!(
            terminals.add(&label("b", "T", T0 + 100 * H, false, T0 + 100 * H)),
            LabelAdmission::Added
        );
        assert_eq!(
            terminals.add(&label("c", "T", T0 + 10 * H, true, T0 + 100 * H)),
            LabelAdmission::TooOld
        );
        terminals.evict();
        assert_eq!(terminals.labels_held(), 1);
        assert_eq!(terminals.read_terminal("T").unwrap().len(), 1);
    }
}
