//! One pipeline's share of the benchmark population: its engine, warmed with history, and the
//! end-to-end step (decode, windows, features, ONNX score, output encoding) the benches time.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fraudscore::engine::{Engine, EngineConfig, Prepared};
use fraudscore::features::FeatureSpec;
use fraudscore::model::Model;
use fraudscore::output;
use fraudscore::scorer::{Scorer, Verdict};
use fraudscore::store::Store;
use fraudscore::time::EventTime;

use super::population::{Stream, CUSTOMERS, PER_CUSTOMER_PER_WEEK};

pub fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fraud.onnx");
    Model::load(&path, 1).expect("models/fraud.onnx (run scripts/setup.sh)")
}

/// One pipeline's engine, fed its share of the population: the customers whose id hashes to
/// `lane` of `lanes` (all of them for one lane), from a stream of its own.
pub struct Lane {
    pub engine: Engine,
    stream: Stream,
    lane: u64,
    lanes: u64,
    /// The output being encoded, kept between transactions as the service keeps it.
    encoded: Vec<u8>,
    /// A run's messages, key and value back to back, and where each one's key, value and
    /// end begin.
    run: Vec<u8>,
    run_spans: Vec<(usize, usize, usize)>,
}

impl Lane {
    /// With `BENCH_WARM_DAYS` (default 7) of its share of the history already in its windows.
    pub fn warmed(spec: FeatureSpec, lane: u64, lanes: u64) -> Lane {
        let days: u64 = std::env::var("BENCH_WARM_DAYS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(7);
        let events = days * CUSTOMERS * PER_CUSTOMER_PER_WEEK / 7;
        let engine = Engine::new(spec, &EngineConfig::default(), Arc::new(Store::default()));
        let mut l = Lane {
            engine,
            stream: Stream::new(7, 1 << 24),
            lane,
            lanes,
            encoded: Vec::new(),
            run: Vec::new(),
            run_spans: Vec::new(),
        };
        let started = Instant::now();
        for _ in 0..events {
            let (key, value) = l.stream.next_message();
            if owns(l.lane, l.lanes, key) {
                let _ = black_box(l.engine.prepare(0, 0, Some(key), value));
            }
        }
        eprintln!(
            "lane {lane}/{lanes}: warmed {days} days ({events} events of the population) in {:.1?}: {} customers, {} events held",
            started.elapsed(),
            l.engine.store().customers(),
            l.engine.store().window_events()
        );
        l
    }

    /// The next transaction of this lane's share, prepared (None if the engine rejects it).
    #[allow(dead_code)] // the engine bench's, not the pipelines bench's
    pub fn prepare(&mut self) -> Option<Prepared> {
        loop {
            let (key, value) = self.stream.next_message();
            if owns(self.lane, self.lanes, key) {
                return self.engine.prepare(0, 0, Some(key), value).ok();
            }
        }
    }

    /// Fills `prepared` up to `n` transactions, taken in runs as the pipeline takes what one
    /// fetch hands over: the run's customers prefetched, then each message prepared.
    pub fn prepare_run(&mut self, n: usize, prepared: &mut Vec<Prepared>) {
        while prepared.len() < n {
            self.run.clear();
            self.run_spans.clear();
            while self.run_spans.len() < n - prepared.len() {
                let (key, value) = self.stream.next_message();
                if owns(self.lane, self.lanes, key) {
                    let start = self.run.len();
                    self.run.extend_from_slice(key);
                    self.run.extend_from_slice(value);
                    self.run_spans
                        .push((start, start + key.len(), self.run.len()));
                }
            }
            let run = &self.run;
            self.engine.prefetch(
                self.run_spans
                    .iter()
                    .map(|&(start, key_end, _)| Some(&run[start..key_end])),
            );
            for &(start, key_end, end) in &self.run_spans {
                let (key, value) = (&self.run[start..key_end], &self.run[key_end..end]);
                if let Ok(p) = self.engine.prepare(0, 0, Some(key), value) {
                    prepared.push(p);
                }
            }
        }
    }

    /// Decode, windows, features, ONNX score and output encoding for `batch` transactions;
    /// returns the outputs' bytes.
    pub fn end_to_end(
        &mut self,
        scorer: &mut Scorer,
        batch: usize,
        prepared: &mut Vec<Prepared>,
        verdicts: &mut Vec<Verdict>,
    ) -> usize {
        prepared.clear();
        self.prepare_run(batch, prepared);
        scorer.score(prepared, verdicts).expect("inference");
        let now = EventTime::now();
        let mut bytes = 0;
        for (p, v) in prepared.iter().zip(verdicts.iter()) {
            output::scored(
                &mut self.encoded,
                self.engine.spec(),
                p,
                Some((v, &*scorer)),
                true,
                now,
            );
            bytes += self.encoded.len();
        }
        bytes
    }
}

/// The shipped model with its own thresholds: they set how many transactions are flagged, and
/// so explained.
pub fn scorer() -> Scorer {
    let shipped = model();
    let thresholds = shipped.thresholds().unwrap_or_default();
    Scorer::new(shipped, thresholds)
}

/// Whether the customer keyed `key` is in lane `lane` of `lanes`.
fn owns(lane: u64, lanes: u64, key: &[u8]) -> bool {
    lanes == 1 || xxhash_rust::xxh3::xxh3_64(key) % lanes == lane
}
