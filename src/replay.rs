//! Offline replay: a file of input values through the same engine as the service, in file order.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, EngineConfig, Prepared, Scorer, Thresholds, Verdict};
use crate::features::{FeatureError, FeatureSpec};
use crate::model::{Model, ModelError};
use crate::output;
use crate::store::Store;
use crate::time::EventTime;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error("--max-batch must be at least 1")]
    ZeroBatch,
}

/// What to replay, with what, and where to write: the `fraudscore replay` command line.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Score with this model; without one, compute `features` alone.
    pub model: Option<PathBuf>,
    pub features: Vec<String>,
    pub input: PathBuf,
    pub output: PathBuf,
    pub dlq: PathBuf,
    pub max_batch: usize,
    pub allowed_lateness: Duration,
    pub thresholds: Thresholds,
}

/// Builds the engine (and scorer) the options ask for and replays the input file.
pub fn run(opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    if opts.max_batch == 0 {
        return Err(ReplayError::ZeroBatch);
    }
    let mut scorer = match &opts.model {
        Some(path) => Some(Scorer::new(Model::load(path, 1)?, opts.thresholds)),
        None => None,
    };
    let spec = match &scorer {
        Some(s) => s.model().spec().clone(),
        None => FeatureSpec::for_model(&opts.features)?,
    };
    let config = EngineConfig {
        allowed_lateness: opts.allowed_lateness,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(spec, &config, Arc::new(Store::default()));
    let open = |p: &Path| {
        File::open(p).map_err(|source| ReplayError::File {
            what: "opening",
            path: p.to_path_buf(),
            source,
        })
    };
    let create = |p: &Path| {
        File::create(p).map_err(|source| ReplayError::File {
            what: "creating",
            path: p.to_path_buf(),
            source,
        })
    };
    replay(
        &mut engine,
        scorer.as_mut(),
        opts.max_batch,
        BufReader::with_capacity(1 << 20, open(&opts.input)?),
        BufWriter::with_capacity(1 << 20, create(&opts.output)?),
        BufWriter::new(create(&opts.dlq)?),
    )
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
