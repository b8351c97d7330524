//! Every terminal's labelled transactions, from the labels topic, answering the delayed fraud
//! counts of the terminal features.
//!
//! A label counts for a transaction at time t when its transaction's timestamp lies in
//! (t − delay − len, t − delay] and it was known (`labelled_at`) by t: what a fraud team could
//! have known then, whatever order the labels arrive in. The service and the offline replay
//! therefore agree as long as a label arrives before the transactions it counts for are scored.

use std::sync::atomic::{AtomicI64, Ordering};

use compact_str::CompactString;
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

    /// Whether the label was known within `delay_ms` of its transaction. Such a label counts for
    /// every transaction whose window (ending `delay_ms` before it) holds it, since it was known
    /// by then: those windows need no look at when each label became known.
    fn prompt(&self, delay_ms: i64) -> bool {
        self.known_at - self.at <= delay_ms
    }
}

/// Counts of prompt labels, running: up to and including a label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    labelled: u32,
    fraud: u32,
}

/// The running counts before label `pos`.
fn counts_before(running: &[Counts], pos: usize) -> Counts {
    pos.checked_sub(1).map_or(Counts::default(), |p| running[p])
}

/// One terminal's labels. A window's prompt labels (see [`Labelled::prompt`]) are counted as a
/// difference of running counts, for a terminal with thousands of labels as for one with a few;
/// only the labels learned later than the window's delay are read one by one.
#[derive(Debug, Default)]
struct Held {
    /// Sorted by (transaction time, id hash).
    labels: Vec<Labelled>,
    /// Per delay of [`Terminals::delays`], the running counts of its prompt labels, one per label.
    running: Vec<Vec<Counts>>,
    /// Per delay, the labels not prompt for it, in the order of `labels`.
    late: Vec<Vec<Labelled>>,
}

impl Held {
    /// Brings the running counts and late labels up to date after `labels[from..]` changed.
    fn recount(&mut self, delays: &[i64], from: usize) {
        self.running.resize_with(delays.len(), Vec::new);
        self.late.resize_with(delays.len(), Vec::new);
        for ((running, late), &delay) in self.running.iter_mut().zip(&mut self.late).zip(delays) {
            let mut c = counts_before(running, from);
            // The labels before `from` that are not prompt stay listed.
            late.truncate(from - c.labelled as usize);
            running.truncate(from);
            for l in &self.labels[from..] {
                if l.prompt(delay) {
                    c.labelled += 1;
                    c.fraud += l.fraud as u32;
                } else {
                    late.push(*l);
                }
                running.push(c);
            }
        }
    }

    /// The window (lo, hi] for a transaction at `t`, whose delay is `delays[k]`.
    fn stats(&self, k: usize, lo: i64, hi: i64, t: i64) -> TerminalStats {
        let start = self.labels.partition_point(|l| l.at <= lo);
        let end = start + self.labels[start..].partition_point(|l| l.at <= hi);
        let running = &self.running[k];
        let (before, upto) = (counts_before(running, start), counts_before(running, end));
        let mut s = known_in(&self.late[k], lo, hi, t);
        s.labelled += upto.labelled - before.labelled;
        s.fraud += upto.fraud - before.fraud;
        let prompt = &running[start..end];
        if upto.fraud > before.fraud {
            let first = self.labels[start + prompt.partition_point(|c| c.fraud == before.fraud)].at;
            s.first_fraud_ms = Some(s.first_fraud_ms.map_or(first, |late| late.min(first)));
        }
        if upto.labelled > before.labelled {
            let last = start + prompt.partition_point(|c| c.labelled < upto.labelled);
            let at = self.labels[last].at;
            if s.last.is_none_or(|(late, _)| late <= at) {
                // Any fraud known by `t` at that instant, late or prompt, as `count` has it.
                let tied = |l: &&Labelled| l.at == at;
                let fraud = |l: &Labelled| l.fraud && l.known_at <= t;
                let earlier = self.labels[..last].iter().rev().take_while(tied).any(fraud);
                let later = self.labels[last..].iter().take_while(tied).any(fraud);
                s.last = Some((at, earlier || later));
            }
        }
        s
    }
}

/// What the window (lo, hi] of `labels` (sorted) shows a transaction at `t`, reading each label.
fn known_in(labels: &[Labelled], lo: i64, hi: i64, t: i64) -> TerminalStats {
    let start = labels.partition_point(|l| l.at <= lo);
    let mut s = TerminalStats::default();
    for l in labels[start..].iter().take_while(|l| l.at <= hi) {
        if l.known_at <= t {
            s.count(l.at, l.fraud);
        }
    }
    s
}

/// All terminals' labels: written by the labels reader, read by the pipeline's engine and lookups.
#[derive(Debug)]
pub struct Terminals {
    labels: DashMap<CompactString, Held, foldhash::fast::RandomState>,
    /// The delays of the windows asked for, in ms: each has running counts.
    delays: Vec<i64>,
    /// Transaction-id hashes tell re-deliveries apart; the state is rebuilt from the topic at
    /// every start, so a per-process seed does.
    id_seed: u64,
    /// Labels of transactions at or before the newest label's time minus this are dropped.
    span_ms: i64,
    newest: AtomicI64,
    held: AtomicI64,
}

impl Terminals {
    /// Terminals keeping labels `span_ms` behind the newest label (the longest delayed window's
    /// reach plus how far behind the newest transaction one may still be scored), counted for
    /// `windows`. Other windows are answered too, by reading every label in them.
    pub fn new(span_ms: i64, windows: &[DelayedWindow]) -> Terminals {
        use std::hash::BuildHasher;
        let mut delays: Vec<i64> = windows.iter().map(|w| w.delay.millis()).collect();
        delays.sort_unstable();
        delays.dedup();
        Terminals {
            labels: DashMap::with_hasher_and_shard_amount(Default::default(), 64),
            delays,
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
        let mut held = self.labels.entry(label.terminal_id.clone()).or_default();
        let pos = held.labels.partition_point(|l| l.key() < new.key());
        // A copy of a label held, known no earlier, changes nothing to count again.
        let mut changed = true;
        let admission = match held.labels.get_mut(pos) {
            Some(old) if old.key() == new.key() => {
                if old.fraud != new.fraud && new.known_at >= old.known_at {
                    *old = new;
                    LabelAdmission::Changed
                } else {
                    // The same outcome known earlier counts from the earlier time, whatever
                    // order the copies arrive in (as a replay sorted by labelled_at sees it).
                    if old.fraud == new.fraud && new.known_at < old.known_at {
                        old.known_at = new.known_at;
                    } else {
                        changed = false;
                    }
                    LabelAdmission::Duplicate
                }
            }
            _ => {
                held.labels.insert(pos, new);
                self.held.fetch_add(1, Ordering::Relaxed);
                LabelAdmission::Added
            }
        };
        // Labels arrive roughly in time order, so expired ones sit at the front, and the
        // recount after a new label is short.
        let expired = held.labels.partition_point(|l| l.at <= cut);
        if expired > 0 && expired * 8 >= held.labels.len() {
            held.labels.drain(..expired);
            self.held.fetch_sub(expired as i64, Ordering::Relaxed);
            held.recount(&self.delays, 0);
        } else if changed {
            held.recount(&self.delays, pos);
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
            out.push(
                match self.delays.iter().position(|&d| d == w.delay.millis()) {
                    Some(k) => held.stats(k, lo, hi, t),
                    None => known_in(&held.labels, lo, hi, t),
                },
            );
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
            let expired = held.labels.partition_point(|l| l.at <= cut);
            if expired > 0 {
                held.labels.drain(..expired);
                held.recount(&self.delays, 0);
                dropped += expired;
            }
            !held.labels.is_empty()
        });
        self.held.fetch_sub(dropped as i64, Ordering::Relaxed);
        dropped
    }

    /// A terminal's labels as (transaction time, fraud, labelled at), oldest first, for lookups.
    pub fn read_terminal(&self, terminal: &str) -> Option<Vec<(EventTime, bool, EventTime)>> {
        self.labels.get(terminal).map(|held| {
            held.labels
                .iter()
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
    use proptest::test_runner::TestCaseError;
    use std::collections::HashMap;

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

    /// Checks every window of `terminal` at `t` against a brute-force count over `reference`.
    fn check(
        terminals: &Terminals,
        windows: &[DelayedWindow],
        reference: &HashMap<(u8, u8), (i64, bool, i64)>,
        terminal: u8,
        t: i64,
    ) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        terminals.stats(
            &format!("T{terminal}"),
            EventTime::checked(t).unwrap(),
            windows,
            &mut out,
        );
        for (w, got) in windows.iter().zip(&out) {
            let (hi, lo) = (t - w.delay.millis(), t - w.reach_ms());
            let known: Vec<(i64, bool)> = reference
                .iter()
                .filter(|(&(term, _), &(at, _, known_at))| {
                    term == terminal && at > lo && at <= hi && known_at <= t
                })
                .map(|(_, &(at, fraud, _))| (at, fraud))
                .collect();
            prop_assert_eq!(got.labelled as usize, known.len(), "{:?} at {}", w, t);
            prop_assert_eq!(got.fraud as usize, known.iter().filter(|k| k.1).count());
            let first_fraud = known.iter().filter(|k| k.1).map(|k| k.0).min();
            prop_assert_eq!(got.first_fraud_ms, first_fraud);
            let last = known
                .iter()
                .map(|k| k.0)
                .max()
                .map(|last| (last, known.iter().any(|k| k.0 == last && k.1)));
            prop_assert_eq!(got.last, last, "{:?} at {}", w, t);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random label streams, out of order, re-delivered and relabelled, against a brute-force
        /// count over every label ever accepted (the latest outcome of each transaction), asked
        /// after every label: through the running counts of the delays the terminals were made
        /// for, and by reading every label for a delay they were not.
        #[test]
        fn stats_match_brute_force(
            labels in prop::collection::vec((0u8..3, 0u8..30, any::<bool>(), 0i64..48, 0i64..200), 1..200),
            queries in prop::collection::vec((0u8..3, 0i64..200), 1..40),
        ) {
            let windows = [
                DelayedWindow { len: hours(24), delay: hours(24) },
                DelayedWindow { len: hours(6), delay: hours(1) },
                DelayedWindow { len: hours(48), delay: hours(24) },
                DelayedWindow { len: hours(12), delay: hours(2) },
            ];
            let terminals = Terminals::new(i64::MAX / 4, &windows[..3]);
            assert_eq!(terminals.delays, [H, 24 * H]);
            // Per (terminal, tx): (at, fraud, known_at) of the label that stands.
            let mut reference: HashMap<(u8, u8), (i64, bool, i64)> = Default::default();
            for (terminal, tx, fraud, delay_h, t_h) in labels {
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
                check(&terminals, &windows, &reference, terminal, T0 + t_h * H)?;
            }
            for (terminal, t_h) in queries {
                check(&terminals, &windows, &reference, terminal, T0 + t_h * H)?;
            }
        }

        /// Labels arriving in time order, some much later than others, with the oldest dropped
        /// as the span moves on (by `add` and by `evict`): every window within the span still
        /// counts exactly what a brute force over the labels in it counts.
        #[test]
        fn stats_stay_exact_as_old_labels_are_dropped(
            labels in prop::collection::vec((0u8..2, any::<bool>(), 0i64..30, 0i64..6, any::<bool>()), 1..250),
        ) {
            let windows = [
                DelayedWindow { len: hours(6), delay: hours(4) },
                DelayedWindow { len: hours(3), delay: hours(1) },
            ];
            let span = 12 * H;
            let terminals = Terminals::new(span, &windows);
            let mut reference: HashMap<(u8, u8), (i64, bool, i64)> = Default::default();
            let mut newest = i64::MIN;
            for (i, (terminal, fraud, lag_h, back_h, evict)) in labels.into_iter().enumerate() {
                // Roughly in time order: up to 5 hours out of place.
                let at = T0 + i as i64 * H / 2 - back_h * H;
                newest = newest.max(at);
                let l = label(&format!("tx{i}"), &format!("T{terminal}"), at, fraud, at + lag_h * H);
                if terminals.add(&l) == LabelAdmission::Added {
                    reference.insert((terminal, i as u8), (at, fraud, at + lag_h * H));
                }
                if evict {
                    terminals.evict();
                }
                // Only labels after the cut are kept for sure; ask about windows after it.
                let t = newest + 4 * H;
                let cut = newest - span;
                reference.retain(|_, &mut (at, _, _)| at > cut);
                if windows.iter().all(|w| t - w.reach_ms() >= cut) {
                    check(&terminals, &windows, &reference, terminal, t)?;
                }
            }
        }
    }

    #[test]
    fn old_labels_are_dropped_beyond_the_span() {
        let terminals = Terminals::new(48 * H, &[]);
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
