//! Which input offsets may be committed: only those below the oldest message whose output is not yet acknowledged.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct PartitionOffsets {
    /// Consumed, with how many of its outputs are not yet acknowledged.
    in_flight: BTreeMap<i64, u32>,
    /// One past the highest offset consumed.
    next: i64,
    /// The last position handed out for commit.
    committed: Option<i64>,
}

impl PartitionOffsets {
    fn position(&self) -> i64 {
        self.in_flight
            .first_key_value()
            .map_or(self.next, |(&offset, _)| offset)
    }
}

/// Which holding of a partition a message was consumed in: a partition revoked and assigned again
/// is a new one, and an acknowledgement of an output from an earlier one counts for nothing.
pub type Epoch = u64;

/// Per-partition bookkeeping of consumed and acknowledged offsets.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionOffsets>,
    /// Per partition, how many times it was forgotten: kept across [`forget`](Self::forget).
    epochs: HashMap<i32, Epoch>,
}

impl OffsetTracker {
    /// A message was consumed; its output is on the way. Its acknowledgement must name the
    /// epoch returned.
    pub fn consumed(&mut self, partition: i32, offset: i64) -> Epoch {
        let p = self.partitions.entry(partition).or_default();
        p.in_flight.insert(offset, 1);
        p.next = p.next.max(offset + 1);
        self.epoch(partition)
    }

    fn epoch(&self, partition: i32) -> Epoch {
        self.epochs.get(&partition).copied().unwrap_or_default()
    }

    /// One more output of this consumed message is on the way: it is committed only once every
    /// one is acknowledged.
    pub fn also(&mut self, partition: i32, offset: i64) {
        if let Some(pending) = self
            .partitions
            .get_mut(&partition)
            .and_then(|p| p.in_flight.get_mut(&offset))
        {
            *pending += 1;
        }
    }

    /// The broker acknowledged one output of this message, consumed in `epoch`.
    pub fn acknowledged(&mut self, partition: i32, offset: i64, epoch: Epoch) {
        if epoch != self.epoch(partition) {
            return;
        }
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        if let Some(pending) = p.in_flight.get_mut(&offset) {
            *pending -= 1;
            if *pending == 0 {
                p.in_flight.remove(&offset);
            }
        }
    }

    /// Positions (next offset to read) that moved since the last call: safe to commit.
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.partitions {
            let pos = p.position();
            if pos > 0 && p.committed != Some(pos) {
                p.committed = Some(pos);
                out.push((partition, pos));
            }
        }
        out.sort_unstable();
        out
    }

    /// Positions of these partitions, committed or not, for a final commit before they go.
    pub fn positions(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p).map(|o| (*p, o.position())))
            .filter(|(_, pos)| *pos > 0)
            .collect()
    }

    /// One past the highest offset consumed, for these partitions: what the state reflects.
    pub fn consumed_positions(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        partitions
            .iter()
            .filter_map(|p| self.partitions.get(p).map(|o| (*p, o.next)))
            .collect()
    }

    /// Consumption of `partition` resumes at `offset` (its state was restored up to there).
    pub fn resume_at(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.next = p.next.max(offset);
    }

    /// Every partition's position, moved or not: committing these again makes up for earlier
    /// commits whose failure nobody reported.
    pub fn all_positions(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter_mut()
            .map(|(&partition, p)| {
                p.committed = Some(p.position());
                (partition, p.position())
            })
            .filter(|&(_, pos)| pos > 0)
            .collect();
        out.sort_unstable();
        out
    }

    /// A commit of these partitions failed: hand their positions out again on the next call
    /// to [`to_commit`](Self::to_commit), even if they have not moved.
    pub fn commit_failed(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(o) = self.partitions.get_mut(p) {
                o.committed = None;
            }
        }
    }

    /// This message was consumed here in `epoch` and its outputs are not all acknowledged yet
    /// (false once its partition is forgotten).
    pub fn is_in_flight(&self, partition: i32, offset: i64, epoch: Epoch) -> bool {
        epoch == self.epoch(partition)
            && self
                .partitions
                .get(&partition)
                .is_some_and(|p| p.in_flight.contains_key(&offset))
    }

    /// The partition was revoked: nothing of it may be committed by this instance any more, and
    /// what is still acknowledged of it counts for nothing.
    pub fn forget(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
            *self.epochs.entry(*p).or_default() += 1;
        }
    }

    /// Outputs not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.in_flight.values())
            .map(|&n| n as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commit_stops_below_the_oldest_unacknowledged() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.consumed(0, o);
        }
        t.consumed(1, 3);
        assert_eq!(t.to_commit(), [(0, 10), (1, 3)]);
        t.acknowledged(0, 11, 0);
        t.acknowledged(0, 12, 0);
        assert_eq!(t.to_commit(), []);
        t.acknowledged(0, 10, 0);
        assert_eq!(t.to_commit(), [(0, 13)]);
        t.acknowledged(0, 13, 0);
        t.acknowledged(0, 14, 0);
        t.acknowledged(1, 3, 0);
        assert_eq!(t.to_commit(), [(0, 15), (1, 4)]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.consumed_positions(&[0, 1, 9]), [(0, 15), (1, 4)]);
        // Re-offered whether or not they moved.
        assert_eq!(t.all_positions(), [(0, 15), (1, 4)]);
        assert_eq!(t.to_commit(), []);
        t.resume_at(5, 40);
        assert_eq!(t.consumed_positions(&[5]), [(5, 40)]);
        assert_eq!(t.to_commit(), [(5, 40)]);
        // A failed commit is handed out again, though the position did not move.
        t.commit_failed(&[1]);
        assert_eq!(t.to_commit(), [(1, 4)]);
        assert_eq!(t.to_commit(), []);
        // An acknowledgement for a partition never seen is ignored.
        t.acknowledged(7, 1, 0);
        assert_eq!(t.to_commit(), []);
        t.forget(&[0]);
        assert_eq!(t.positions(&[0, 1]), [(1, 4)]);
    }

    #[test]
    fn a_message_with_two_outputs_waits_for_both() {
        let mut t = OffsetTracker::default();
        t.consumed(0, 0);
        t.also(0, 0);
        t.consumed(0, 1);
        assert_eq!(t.in_flight(), 3);
        t.acknowledged(0, 0, 0);
        t.acknowledged(0, 1, 0);
        assert!(t.is_in_flight(0, 0, 0));
        assert_eq!(t.to_commit(), []);
        t.acknowledged(0, 0, 0);
        assert_eq!(t.to_commit(), [(0, 2)]);
        assert_eq!(t.in_flight(), 0);
        // Too many acknowledgements (a re-delivered callback) never go below none.
        t.acknowledged(0, 0, 0);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn an_acknowledgement_from_before_a_revocation_counts_for_nothing() {
        let mut t = OffsetTracker::default();
        let before = t.consumed(0, 5);
        t.also(0, 5);
        // Revoked while both outputs were queued, and handed straight back: offset 5 is read again.
        t.forget(&[0]);
        let now = t.consumed(0, 5);
        t.also(0, 5);
        assert_ne!(before, now);
        // The first round's outputs are acknowledged late: they stand for nothing now.
        t.acknowledged(0, 5, before);
        t.acknowledged(0, 5, before);
        assert!(!t.is_in_flight(0, 5, before));
        assert!(t.is_in_flight(0, 5, now));
        assert_eq!(t.to_commit(), [(0, 5)]);
        t.acknowledged(0, 5, now);
        assert_eq!(t.to_commit(), []);
        t.acknowledged(0, 5, now);
        assert_eq!(t.to_commit(), [(0, 6)]);
    }

    proptest! {
        /// Whatever order acknowledgements come in, a committed position never passes an
        /// unacknowledged offset, and once all are acknowledged it reaches the end.
        #[test]
        fn never_commits_past_an_unacknowledged_offset(order in Just((0..50i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = OffsetTracker::default();
            for o in 0..50 {
                t.consumed(2, o);
            }
            let mut acked = std::collections::BTreeSet::new();
            for o in order {
                t.acknowledged(2, o, 0);
                acked.insert(o);
                for (_, pos) in t.to_commit() {
                    prop_assert!((0..pos).all(|x| acked.contains(&x)));
                }
            }
            prop_assert_eq!(t.positions(&[2]), vec![(2, 50)]);
        }
    }
}
