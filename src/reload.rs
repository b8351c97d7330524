//! Model and rules reloads: a thread that loads and checks the model file and the rules file when asked (SIGHUP, or a change of either with `model.watch`), for the pipeline to swap in between two batches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::engine::{ThresholdOverrides, Thresholds};
use crate::features::FeatureSpec;
use crate::metrics::Metrics;
use crate::model::{Model, ModelError};
use crate::rules::{Rules, RulesError};
use crate::time::WindowLen;

/// How often the model file is looked at with `model.watch`, and a SIGHUP noticed.
const LOOK_EVERY: Duration = Duration::from_millis(200);
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A model that passed every check, with the thresholds it is to decide with, and the rules
/// (re-read with it) that go beside it.
#[derive(Debug)]
pub struct Candidate {
    pub model: Model,
    pub thresholds: Thresholds,
    pub rules: Option<Rules>,
    /// Pipelines still to swap this reload in: the last one counts the reload as done.
    pub swaps_left: Arc<AtomicUsize>,
}

/// What the running state can serve exactly: set at start, since the window state keeps events
/// (and the labels) only as far back as the first model's longest windows need.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub longest_window: WindowLen,
    /// The farthest a terminal window reaches back (window + delay); None when labels are not read.
    pub terminal_reach_ms: Option<i64>,
}

impl Limits {
    pub fn of(spec: &FeatureSpec) -> Limits {
        Limits {
            longest_window: spec.longest_window(),
            terminal_reach_ms: spec.terminal_reach_ms(),
        }
    }
}

/// Why a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Load(#[from] crate::model::ModelError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Feature(#[from] crate::features::FeatureError),
    #[error("it needs a {needs} window, but the state holds events only for windows up to {holds} (the longest the running model, shadow and rules had at start): restart with the new model or rules to rebuild the state")]
    LongerWindow { needs: WindowLen, holds: WindowLen },
    #[error("it takes terminal features, but what ran at start took none, so labels are not read: restart with the new model or rules")]
    NoLabels,
    #[error("its terminal windows reach {needs_ms} ms back, the labels held only {holds_ms} ms: restart with the new model")]
    LongerTerminalWindow { needs_ms: i64, holds_ms: i64 },
    #[error("it scored a probe row {row:?} as {score}, not a probability in [0, 1]")]
    BadScore { row: f32, score: f32 },
    #[error("decision thresholds: {0}")]
    Thresholds(#[from] crate::engine::ThresholdError),
}

/// Loads `path` (and the rules file, when there is one) and checks they can replace the running
/// ones with exact features: the engine computes all their features (a model and rules load only
/// then), within the state's reach, and the model scores probe rows as probabilities.
pub fn check(
    path: &Path,
    intra_threads: usize,
    limits: &Limits,
    overrides: ThresholdOverrides,
    rules: Option<&Path>,
) -> Result<Candidate, Refusal> {
    Files::read::<Refusal>(path, None, rules)?.candidate(intra_threads, limits, overrides)
}

/// [`check`], with `copies` candidates (one per pipeline) all made from one reading of each file,
/// so that a file changed meanwhile cannot give two pipelines different models or rules.
pub fn check_copies(
    path: &Path,
    intra_threads: usize,
    limits: &Limits,
    overrides: ThresholdOverrides,
    rules: Option<&Path>,
    copies: usize,
) -> Result<Vec<Candidate>, Refusal> {
    let files: Files = Files::read::<Refusal>(path, None, rules)?;
    (0..copies)
        .map(|_| files.candidate(intra_threads, limits, overrides))
        .collect()
}

/// The model, shadow and rules files, each read once: every pipeline's copy is made from the
/// same bytes, so a file replaced meanwhile cannot give two pipelines different models or rules.
pub struct Files<'a> {
    model: (&'a Path, Vec<u8>),
    shadow: Option<(&'a Path, Vec<u8>)>,
    rules: Option<(&'a Path, String)>,
}

impl<'a> Files<'a> {
    pub fn read<E: From<ModelError> + From<RulesError>>(
        model: &'a Path,
        shadow: Option<&'a Path>,
        rules: Option<&'a Path>,
    ) -> Result<Files<'a>, E> {
        Ok(Files {
            model: (model, Model::read(model)?),
            shadow: shadow
                .map(|p| Model::read(p).map(|bytes| (p, bytes)))
                .transpose()?,
            rules: rules
                .map(|p| Rules::read(p).map(|text| (p, text)))
                .transpose()?,
        })
    }

    pub fn model(&self, intra_threads: usize) -> Result<Model, ModelError> {
        Model::from_bytes(self.model.0, &self.model.1, intra_threads)
    }

    pub fn shadow(&self, intra_threads: usize) -> Result<Option<Model>, ModelError> {
        self.shadow
            .as_ref()
            .map(|(p, bytes)| Model::from_bytes(p, bytes, intra_threads))
            .transpose()
    }

    pub fn rules(&self) -> Result<Option<Rules>, RulesError> {
        self.rules
            .as_ref()
            .map(|(p, text)| Rules::parse(p, text))
            .transpose()
    }

    /// A model and rules made from the files, checked.
    fn candidate(
        &self,
        intra_threads: usize,
        limits: &Limits,
        overrides: ThresholdOverrides,
    ) -> Result<Candidate, Refusal> {
        checked(self.model(intra_threads)?, self.rules()?, limits, overrides)
    }
}

/// The checks of [`check`] on a loaded model and rules.
fn checked(
    mut model: Model,
    rules: Option<Rules>,
    limits: &Limits,
    overrides: ThresholdOverrides,
) -> Result<Candidate, Refusal> {
    let served = crate::scorer::served(&model, None, rules.as_ref())?;
    let spec = &served;
    if spec.longest_window() > limits.longest_window {
        return Err(Refusal::LongerWindow {
            needs: spec.longest_window(),
            holds: limits.longest_window,
        });
    }
    if let Some(needs_ms) = spec.terminal_reach_ms() {
        match limits.terminal_reach_ms {
            None => return Err(Refusal::NoLabels),
            Some(holds_ms) if needs_ms > holds_ms => {
                return Err(Refusal::LongerTerminalWindow { needs_ms, holds_ms })
            }
            Some(_) => {}
        }
    }
    let width = model.spec().model_width();
    let mut scores = Vec::new();
    for probe in [0.0f32, 1.0, 100.0] {
        model.score(&vec![probe; width], &mut scores)?;
        if let Some(&score) = scores.iter().find(|s| !(0.0..=1.0).contains(*s)) {
            return Err(Refusal::BadScore { row: probe, score });
        }
    }
    let thresholds = Thresholds::resolve(model.thresholds(), overrides)?;
    Ok(Candidate {
        model,
        thresholds,
        rules,
        swaps_left: Arc::new(AtomicUsize::new(1)),
    })
}

pub struct ReloadOptions {
    pub path: PathBuf,
    pub intra_threads: usize,
    /// Also reload when the file changes (modification time or size).
    pub watch: bool,
    pub limits: Limits,
    pub overrides: ThresholdOverrides,
    /// The rules file (`rules.file`), re-read and checked with the model.
    pub rules: Option<PathBuf>,
}

/// Watches for reload requests (`requested`, set on SIGHUP) until `stop`; checked models are sent
/// to `candidates`, one loaded for each pipeline.
pub fn spawn(
    opts: ReloadOptions,
    requested: Arc<AtomicBool>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    candidates: Vec<Sender<Candidate>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || watch(&opts, &requested, &metrics, &stop, &candidates))
}

fn watch(
    opts: &ReloadOptions,
    requested: &AtomicBool,
    metrics: &Metrics,
    stop: &AtomicBool,
    tx: &[Sender<Candidate>],
) {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let stamps = || (stamp(&opts.path), opts.rules.as_deref().map(stamp));
    let mut seen = stamps();
    let mut since_look = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(LOOK_EVERY);
        since_look += LOOK_EVERY;
        let mut why = requested.swap(false, Ordering::Relaxed).then_some("SIGHUP");
        if opts.watch && since_look >= WATCH_EVERY {
            since_look = Duration::ZERO;
            let now = stamps();
            if now.0.is_some() && now != seen {
                seen = now;
                why = why.or(Some("the model or rules file changed"));
            }
        }
        let Some(why) = why else { continue };
        // What is loaded now is seen: a SIGHUP after replacing the file must not make the
        // watcher load it a second time.
        seen = stamps();
        let path = opts.path.display().to_string();
        let rules = opts.rules.as_deref();
        // Each pipeline gets its own copy (a session per thread), checked like the first.
        let checked: Result<Vec<Candidate>, Refusal> = tx
            .iter()
            .map(|_| {
                check(
                    &opts.path,
                    opts.intra_threads,
                    &opts.limits,
                    opts.overrides,
                    rules,
                )
            })
            .collect();
        match checked {
            Ok(candidates) => {
                let version = candidates.first().map(|c| c.model.version().to_string());
                info!(%path, why, ?version, "new model checked; swapping it in between two batches");
                let swaps_left = Arc::new(AtomicUsize::new(candidates.len()));
                for (mut candidate, tx) in candidates.into_iter().zip(tx) {
                    candidate.swaps_left = swaps_left.clone();
                    if tx.send(candidate).is_err() {
                        return;
                    }
                }
            }
            Err(refusal) => {
                warn!(%path, why, error = %refusal, "model or rules refused; the running ones stay");
                metrics.model_reloads.with_label_values(&["refused"]).inc();
            }
        }
    }
}
