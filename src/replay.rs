//! Offline replay: a file of input values through the same engine as the service, in file order,
//! with an optional file of fraud labels, each taking effect at its `labelled_at`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::decode::{self, Label};
use crate::engine::{
    Engine, EngineConfig, Prepared, ThresholdError, ThresholdOverrides, Thresholds,
};
use crate::explain::ReasonPolicy;
use crate::features::{FeatureError, FeatureSpec};
use crate::model::{Model, ModelError};
use crate::output;
use crate::rules::{Rules, RulesError};
use crate::scorer::{Scorer, Verdict};
use crate::store::Store;
use crate::terminals::Terminals;
use crate::time::EventTime;

/// Transactions of a customer at one instant are held in the order of their hashed ids, and
/// window sums add in that order: one seed for every replay makes its output, and the models
/// trained on it, the same bytes every run. (The service seeds at random, against crafted ids;
/// offline there is no adversary.)
const REPLAY_SEED: u64 = 0x5eed_f00d;
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
    #[error(
        "decision thresholds (--review-threshold, --decline-threshold over the model's own): {0}"
    )]
    Thresholds(#[from] ThresholdError),
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Rules(#[from] RulesError),
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
    /// Fraud labels, JSON lines as on the labels topic, in any order.
    pub labels: Option<PathBuf>,
    pub output: PathBuf,
    pub dlq: PathBuf,
    pub max_batch: usize,
    pub allowed_lateness: Duration,
    /// Unset: the model's own.
    pub thresholds: ThresholdOverrides,
    pub reasons: ReasonPolicy,
    /// A model scored beside `model`, as `model.shadow` in the service.
    pub shadow: Option<PathBuf>,
    /// Rules beside `model`, as `rules.file` in the service.
    pub rules: Option<PathBuf>,
}

/// Builds the engine (and scorer) the options ask for and replays the input file.
pub fn run(opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    if opts.max_batch == 0 {
        return Err(ReplayError::ZeroBatch);
    }
    let mut scorer = match &opts.model {
        Some(path) => {
            let model = Model::load(path, 1)?;
            let thresholds = Thresholds::resolve(model.thresholds(), opts.thresholds)?;
            let scorer = Scorer::new(model, thresholds).with_reasons(opts.reasons);
            let scorer = match &opts.shadow {
                Some(path) => scorer.with_shadow(Model::load(path, 1)?)?,
                None => scorer,
            };
            let rules = opts.rules.as_deref().map(Rules::load).transpose()?;
            Some(scorer.with_rules(rules)?)
        }
        None => None,
    };
    let spec = match &scorer {
        Some(s) => FeatureSpec::clone(s.spec()),
        None => FeatureSpec::for_model(&opts.features)?,
    };
    let config = EngineConfig {
        allowed_lateness: opts.allowed_lateness,
        ..EngineConfig::default()
    };
    let terminals = Arc::new(Terminals::new(
        config.terminal_span_ms(&spec),
        spec.terminal_windows(),
    ));
    let mut engine = Engine::new(spec, &config, Arc::new(Store::with_seed(REPLAY_SEED)))
        .with_terminals(terminals.clone());
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
    let mut dlq = BufWriter::new(create(&opts.dlq)?);
    let mut feed = match &opts.labels {
        Some(path) => Some(LabelFeed::read(
            BufReader::with_capacity(1 << 20, open(path)?),
            terminals,
            &mut dlq,
        )?),
        None => None,
    };
    let mut summary = replay(
        &mut engine,
        scorer.as_mut(),
        opts.max_batch,
        BufReader::with_capacity(1 << 20, open(&opts.input)?),
        BufWriter::with_capacity(1 << 20, create(&opts.output)?),
        &mut dlq,
        feed.as_mut(),
    )?;
    if let Some(feed) = &feed {
        summary.labels = feed.labels.len() as u64;
        summary.labels_rejected = feed.rejected;
    }
    Ok(summary)
}

/// The labels of a replay in `labelled_at` order, handed to the terminal state as the
/// transactions' time passes theirs: the offline stand-in for the labels topic.
#[derive(Debug)]
pub struct LabelFeed {
    labels: Vec<Label>,
    next: usize,
    rejected: u64,
    terminals: Arc<Terminals>,
}

impl LabelFeed {
    /// Reads every label line; bad ones go to `rejected` as dead-letter lines of the labels file.
    pub fn read(
        input: impl BufRead,
        terminals: Arc<Terminals>,
        mut rejected: impl Write,
    ) -> Result<LabelFeed, ReplayError> {
        let (mut labels, mut bad) = (Vec::new(), 0);
        let skew = EngineConfig::default().max_future_skew;
        for (i, line) in input.split(b'\n').enumerate() {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let label = decode::decode_label(&line, fraudscore_contract::DEFAULT_MAX_MESSAGE_BYTES)
                .and_then(|l| decode::label_in_time(&l, skew).map(|()| l));
            match label {
                Ok(label) => labels.push(label),
                Err(rejection) => {
                    bad += 1;
                    rejected.write_all(&output::rejected_label_line(
                        i as u64 + 1,
                        &rejection,
                        &line,
                    ))?;
                    rejected.write_all(b"\n")?;
                }
            }
        }
        let mut feed = LabelFeed::new(labels, terminals);
        feed.rejected = bad;
        Ok(feed)
    }

    /// A feed of these labels into `terminals`.
    pub fn new(mut labels: Vec<Label>, terminals: Arc<Terminals>) -> LabelFeed {
        // Stable: labels known at the same moment keep their file order, as on a topic.
        labels.sort_by_key(|l| l.labelled_at);
        LabelFeed {
            labels,
            next: 0,
            rejected: 0,
            terminals,
        }
    }

    /// Hands over every label known at or before `t`.
    pub fn until(&mut self, t: EventTime) {
        while let Some(label) = self.labels.get(self.next) {
            if label.labelled_at > t {
                break;
            }
            self.terminals.add(label);
            self.next += 1;
        }
    }

    fn is_done(&self) -> bool {
        self.next >= self.labels.len()
    }
}

/// Counts of one replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub scored: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub labels: u64,
    pub labels_rejected: u64,
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
    mut labels: Option<&mut LabelFeed>,
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
        if let Some(feed) = labels.as_deref_mut().filter(|f| !f.is_done()) {
            // The transaction's own time says which labels are known by now.
            if let Ok(t) = decode::decode(None, &line, usize::MAX) {
                feed.until(t.timestamp);
            }
        }
        match engine.prepare(0, summary.lines as i64, None, &line) {
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
    let scorer = match scorer {
        Some(scorer) => {
            scorer.score(batch, verdicts)?;
            Some(&*scorer)
        }
        None => None,
    };
    let mut encoded = Vec::new();
    for (i, p) in batch.iter().enumerate() {
        let verdict = scorer.and_then(|s| verdicts.get(i).map(|v| (v, s)));
        output::scored(&mut encoded, engine.spec(), p, verdict, true, now);
        encoded.push(b'\n');
        out.write_all(&encoded)?;
    }
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}
