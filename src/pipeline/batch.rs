//! The batch being prepared for one inference call: prepared transactions, the input messages
//! behind them, and their verdicts once scored. No Kafka here.

use std::time::Instant;

use rdkafka::message::{Message, OwnedHeaders};

use crate::engine::Prepared;
use crate::model::ModelError;
use crate::scorer::{Scorer, Verdict};

/// The input message behind a prepared transaction.
#[derive(Debug)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    pub epoch: fraudscore_contract::Epoch,
    /// The input's headers, copied onto its output.
    pub headers: Option<OwnedHeaders>,
    pub consumed_at: Instant,
}

/// Prepared transactions waiting for one inference call, in consumption order.
#[derive(Default)]
pub struct Batch {
    prepared: Vec<Prepared>,
    sources: Vec<Source>,
    verdicts: Vec<Verdict>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            prepared: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            verdicts: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, prepared: Prepared, source: Source) {
        self.prepared.push(prepared);
        self.sources.push(source);
    }

    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }

    /// Drops the transactions of revoked partitions: their next owner scores them again from
    /// the committed offset, so producing them here would duplicate them. Returns how many.
    pub fn drop_partitions(&mut self, revoked: &[i32]) -> usize {
        let before = self.len();
        let mut keep = self.sources.iter().map(|s| !revoked.contains(&s.partition));
        self.prepared.retain(|_| keep.next().unwrap_or(true));
        self.sources.retain(|s| !revoked.contains(&s.partition));
        before - self.len()
    }

    /// Empties the batch, keeping its capacity.
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.sources.clear();
        self.verdicts.clear();
    }

    /// One inference call for the whole batch.
    pub fn score(&mut self, scorer: &mut Scorer) -> Result<(), ModelError> {
        scorer.score(&self.prepared, &mut self.verdicts)
    }

    /// Each transaction with its source and verdict, emptying the batch (capacity is kept).
    /// Call after [`score`](Self::score).
    pub fn drain(&mut self) -> impl Iterator<Item = (Prepared, Source, Verdict)> + '_ {
        let verdicts = std::mem::take(&mut self.verdicts);
        self.prepared
            .drain(..)
            .zip(self.sources.drain(..))
            .zip(verdicts)
            .map(|((p, s), v)| (p, s, v))
    }
}

/// Drops the polled messages of revoked partitions, for the reason
/// [`Batch::drop_partitions`] drops their transactions. Returns how many.
pub fn drop_polled<M: Message>(run: &mut Vec<(M, Instant)>, revoked: &[i32]) -> usize {
    let before = run.len();
    run.retain(|(msg, _)| !revoked.contains(&msg.partition()));
    before - run.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{CustomerId, Transaction};
    use crate::engine::Decision;
    use crate::features::FeatureSpec;
    use crate::time::EventTime;

    fn item(partition: i32, offset: i64) -> (Prepared, Source) {
        let spec = FeatureSpec::for_model::<&str>(&[]).unwrap();
        let at = EventTime::checked(1_795_000_000_000i64).unwrap();
        let prepared = Prepared {
            transaction: Transaction {
                transaction_id: format!("{partition}-{offset}").into(),
                customer_id: CustomerId::new("c"),
                terminal_id: None,
                amount: 1.0,
                timestamp: at,
            },
            features: spec.compute(1.0, at, &[Default::default(); 2], &[]),
            duplicate: false,
            id_hash: 0,
        };
        let source = Source {
            partition,
            offset,
            epoch: 0,
            headers: None,
            consumed_at: Instant::now(),
        };
        (prepared, source)
    }

    fn ids(batch: &mut Batch) -> Vec<String> {
        batch.verdicts = vec![
            Verdict {
                score: 0.0,
                decision: Decision::Approve,
                reasons: Vec::new(),
                shadow: None,
                rules: Vec::new(),
            };
            batch.len()
        ];
        batch
            .drain()
            .map(|(p, s, _)| {
                assert_eq!(
                    p.transaction.transaction_id,
                    format!("{}-{}", s.partition, s.offset)
                );
                p.transaction.transaction_id.into_string()
            })
            .collect()
    }

    #[test]
    fn revoked_partitions_leave_the_batch_and_the_rest_keep_their_order() {
        let mut batch = Batch::with_capacity(8);
        for (p, o) in [(0, 1), (1, 1), (0, 2), (2, 1), (1, 2), (0, 3)] {
            let (prepared, source) = item(p, o);
            batch.push(prepared, source);
        }
        assert_eq!(batch.drop_partitions(&[1, 3]), 2);
        assert_eq!(ids(&mut batch), ["0-1", "0-2", "2-1", "0-3"]);
        assert!(batch.is_empty());
        // Drained, the batch takes new items and pairs each with its own source.
        let (prepared, source) = item(5, 9);
        batch.push(prepared, source);
        assert_eq!(ids(&mut batch), ["5-9"]);
    }

    #[test]
    fn revoked_partitions_leave_the_polled_messages_and_the_rest_keep_their_order() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let mut run: Vec<(OwnedMessage, Instant)> =
            [(0, 1), (1, 1), (0, 2), (2, 1), (1, 2), (0, 3)]
                .into_iter()
                .map(|(p, o)| {
                    let msg = OwnedMessage::new(
                        None,
                        None,
                        "in".into(),
                        Timestamp::NotAvailable,
                        p,
                        o,
                        None,
                    );
                    (msg, Instant::now())
                })
                .collect();
        assert_eq!(drop_polled(&mut run, &[1, 3]), 2);
        let left: Vec<(i32, i64)> = run
            .iter()
            .map(|(m, _)| (m.partition(), m.offset()))
            .collect();
        assert_eq!(left, [(0, 1), (0, 2), (2, 1), (0, 3)]);
        assert_eq!(drop_polled(&mut run, &[]), 0);
        assert_eq!(run.len(), 4);
    }

    #[test]
    fn every_item_comes_back_with_its_own_verdict() {
        let mut batch = Batch::default();
        for o in 0..3 {
            let (prepared, source) = item(0, o);
            batch.push(prepared, source);
        }
        batch.verdicts = (0..3)
            .map(|i| Verdict {
                score: i as f32 / 10.0,
                decision: Decision::Approve,
                reasons: Vec::new(),
                shadow: None,
                rules: Vec::new(),
            })
            .collect();
        let got: Vec<(i64, f32)> = batch.drain().map(|(_, s, v)| (s.offset, v.score)).collect();
        assert_eq!(got, [(0, 0.0), (1, 0.1), (2, 0.2)]);
    }
}
