//! Offline replay: a file of input values through the same engine as the service, in file order.

use std::io::{self, BufRead, Write};

use crate::engine::{Engine, Prepared, Scorer, Verdict};
use crate::model::ModelError;
use crate::output;
use crate::time::EventTime;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Counts of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub scored: u64,
    pub rejected: u64,
    pub duplicates: u64,
}

/// Replays `input` line by line; scores in batches of `max_batch` when a scorer is given,
/// otherwise writes the features alone (the training path).
pub fn replay(
    engine: &mut Engine,
    mut scorer: Option<&mut Scorer>,
    max_batch: usize,
    input: impl BufRead,
    mut scored: impl Write,
    mut rejected: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut batch: Vec<Prepared> = Vec::with_capacity(max_batch);
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(max_batch);
    for line in input.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        summary.lines += 1;
        match engine.prepare(0, None, &line) {
            Ok(prepared) => {
                summary.duplicates += prepared.duplicate as u64;
                batch.push(prepared);
            }
            Err(rejection) => {
                summary.rejected += 1;
                rejected.write_all(&output::rejected_line(summary.lines, &rejection, &line))?;
                rejected.write_all(b"\n")?;
            }
        }
        if batch.len() >= max_batch.max(1) {
            summary.scored += flush(
                engine,
                scorer.as_deref_mut(),
                &mut batch,
                &mut verdicts,
                &mut scored,
            )?;
        }
    }
    summary.scored += flush(engine, scorer, &mut batch, &mut verdicts, &mut scored)?;
    scored.flush()?;
    rejected.flush()?;
    Ok(summary)
}

fn flush(
    engine: &Engine,
    scorer: Option<&mut Scorer>,
    batch: &mut Vec<Prepared>,
    verdicts: &mut Vec<Verdict>,
    out: &mut impl Write,
) -> Result<u64, ReplayError> {
    let now = EventTime::now();
    match scorer {
        Some(scorer) => {
            scorer.score(batch, verdicts)?;
            let version = scorer.model().version();
            for (p, v) in batch.iter().zip(verdicts.iter()) {
                out.write_all(&output::scored(engine.spec(), p, Some((*v, version)), now))?;
                out.write_all(b"\n")?;
            }
        }
        None => {
            for p in batch.iter() {
                out.write_all(&output::scored(engine.spec(), p, None, now))?;
                out.write_all(b"\n")?;
            }
        }
    }
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}
