//! Starting and stopping the whole service: model, pipeline thread and HTTP server.

use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{ThresholdError, Thresholds};
use crate::metrics::Metrics;
use crate::model::{Model, ModelError};
use crate::pipeline::{Pipeline, PipelineError};
use crate::reload::Files;
use crate::rules::Rules;
use crate::scorer::Scorer;
use crate::shared::{Common, Lanes, Served, Shared};
use crate::store::Store;
use crate::terminals::Terminals;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("decision thresholds (config model.*_threshold over the model's own): {0}")]
    Thresholds(#[from] ThresholdError),
    #[error("model.shadow or rules: {0}")]
    Served(#[from] crate::features::FeatureError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting threads: {0}")]
    Io(#[from] std::io::Error),
    #[error("state directory: {0}")]
    State(#[from] crate::snapshot::SnapshotError),
}

/// How a running service ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the pipeline thread panicked: {0}")]
    Panicked(String),
}

/// A running service instance.
pub struct Service {
    /// Set by `stop` (or on drop); read by the pipeline and evictor threads.
    stop: StopOnDrop,
    pipelines: Vec<JoinHandle<Result<(), PipelineError>>>,
    /// The labels reader, when the model takes terminal features; it ends with `stop`.
    labels: Option<JoinHandle<()>>,
    /// Loads and checks models on SIGHUP (and file changes); ends with `stop`.
    reloader: JoinHandle<()>,
    /// Receives when a pipeline thread ends, however it ends (a drop guard sends it).
    pipeline_ended: mpsc::UnboundedReceiver<()>,
    /// Set to true to stop every HTTP listener.
    http_stop: watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
    lanes: Arc<Lanes>,
    http_addr: SocketAddr,
    thresholds: Thresholds,
}

/// Dropped when a pipeline thread ends, by return or by panic.
struct EndGuard(mpsc::UnboundedSender<()>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Service {
    /// Loads the model, binds the HTTP listener, connects to Kafka and starts consuming.
    pub fn start(config: Config) -> Result<Service, StartError> {
        let threads = config.pipeline.threads;
        // One scorer per pipeline: an ONNX Runtime session is not shared between threads.
        let scorers = scorers(&config, threads)?;
        let thresholds = scorers[0].thresholds();
        let spec = scorers[0].spec().clone();
        // One id seed for every pipeline's store: a partition's snapshot is read back by
        // whichever pipeline takes it.
        let seed = if config.state.snapshots() {
            crate::snapshot::state_seed(&config.state.dir)?
        } else {
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        };
        let engine_config = config.engine.engine_config(true);
        let terminals = Arc::new(Terminals::new(
            engine_config.terminal_span_ms(&spec),
            spec.terminal_windows(),
        ));
        let common = Common {
            metrics: Metrics::new(),
            terminals: terminals.clone(),
            labels_loading: Arc::new(AtomicBool::new(false)),
            served: Served::new(spec.clone()),
            departure: crate::shared::Departure::new(threads),
        };
        let metrics = common.metrics.clone();
        let lanes: Vec<Arc<Shared>> = (0..threads)
            .map(|_| Shared::new(&common, Arc::new(Store::with_seed(seed))))
            .collect();
        let lanes = Lanes::new(lanes);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()?;
        let (http_stop, stopped) = watch::channel(false);
        let limits = config.http.limits();
        let ops = crate::http::ops_router(lanes.clone());
        let http_addr = listen(&runtime, config.http.listen, ops, limits, stopped.clone())?;
        info!(%http_addr, "HTTP listening: /metrics /healthz /readyz");
        if let Some(addr) = config.http.lookup_listen {
            let token = config.http.lookup_token.clone();
            let lookups = crate::http::lookup_router(lanes.clone(), token);
            let addr = listen(&runtime, addr, lookups, limits, stopped)?;
            info!(%addr, token = config.http.lookup_token.is_some(), "HTTP listening: /customers/{{id}}");
        }

        let brokers = config.kafka.brokers.clone();
        let span_ms = engine_config.retention(&spec).span_ms();
        let eviction_interval = config.engine.eviction_interval;
        let stop = Arc::new(AtomicBool::new(false));
        // Set if `start` fails half-way, so that the threads started by then end.
        let stop_on_drop = StopOnDrop(stop.clone());
        // Started with the clients made, so that a failed start leaves no thread behind.
        let labels = (!spec.terminal_windows().is_empty()).then(|| config.clone());
        let reload = crate::reload::ReloadOptions {
            path: config.model.path.clone(),
            intra_threads: config.model.intra_threads,
            watch: config.model.watch,
            limits: crate::reload::Limits::of(&spec),
            overrides: config.model.thresholds(),
            rules: config.rules.file.clone(),
        };
        let mut candidates_tx = Vec::with_capacity(threads);
        let mut pipelines = Vec::with_capacity(threads);
        for (lane, (scorer, shared)) in scorers.into_iter().zip(lanes.iter()).enumerate() {
            let (tx, candidates) = std::sync::mpsc::channel();
            candidates_tx.push(tx);
            let config = if threads > 1 {
                config.for_lane(lane)
            } else {
                config.clone()
            };
            pipelines.push(Pipeline::new(config, scorer, shared.clone(), candidates)?);
        }
        let labels = match labels {
            Some(config) => Some(crate::labels::spawn(
                &config,
                lanes.clone(),
                terminals,
                stop.clone(),
            )?),
            None => {
                info!("the model takes no terminal features: labels are not read");
                None
            }
        };
        info!(%brokers, pipelines = threads, "consuming");
        let (ended_tx, pipeline_ended) = mpsc::unbounded_channel();
        let mut handles = Vec::with_capacity(threads);
        for (lane, pipeline) in pipelines.into_iter().enumerate() {
            let (stop_flag, ended) = (stop.clone(), EndGuard(ended_tx.clone()));
            let name = if threads > 1 {
                format!("pipeline-{lane}")
            } else {
                "pipeline".into()
            };
            handles.push(std::thread::Builder::new().name(name).spawn(move || {
                let _ended = ended;
                pipeline.run(&stop_flag)
            })?);
        }
        let reload_requested = Arc::new(AtomicBool::new(false));
        let reloader = crate::reload::spawn(
            reload,
            reload_requested.clone(),
            metrics.clone(),
            stop.clone(),
            candidates_tx,
        )?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            // Installed before `start` returns: a SIGHUP from then on reloads, never terminates.
            let hup = {
                let _runtime = runtime.enter();
                signal(SignalKind::hangup())
            };
            match hup {
                Ok(mut hup) => {
                    let requested = reload_requested.clone();
                    runtime.spawn(async move {
                        while hup.recv().await.is_some() {
                            info!("SIGHUP: reloading the model");
                            requested.store(true, Ordering::Relaxed);
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "no SIGHUP handler: the model reloads only with model.watch")
                }
            }
        }
        let (evicting, evicted, stop_flag) = (
            lanes.clone(),
            metrics.customers_evicted.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("evictor".into())
            .spawn(move || {
                evict_until(&stop_flag, eviction_interval, || {
                    for store in evicting.stores() {
                        evicted.inc_by(store.evict_idle(span_ms) as u64);
                    }
                })
            })?;
        Ok(Service {
            stop: stop_on_drop,
            pipelines: handles,
            labels,
            reloader,
            pipeline_ended,
            http_stop,
            runtime,
            lanes,
            http_addr,
            thresholds,
        })
    }

    /// The decision thresholds in use (the config's over the model's).
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Every pipeline's state.
    pub fn lanes(&self) -> &Arc<Lanes> {
        &self.lanes
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A pipeline stopped on its own (an error or a panic).
    pub fn is_finished(&self) -> bool {
        self.pipelines.iter().any(|p| p.is_finished())
    }

    /// Runs until `shutdown` completes (a signal, a test's channel) or the pipeline ends on its
    /// own, then stops: the service's whole life for a binary, as mini-redis's `server::run`.
    pub fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let ended = &mut self.pipeline_ended;
        let why = self.runtime.block_on(async {
            tokio::select! {
                () = shutdown => "shutdown requested",
                _ = ended.recv() => "a pipeline ended on its own",
            }
        });
        info!(why, "shutting down");
        self.stop()
    }

    /// Stops consuming, finishes what is in flight, flushes, commits, and returns the pipelines'
    /// result (the first error, a panic before any other); a panic of a pipeline thread is an
    /// error too.
    pub fn stop(self) -> Result<(), ServiceError> {
        self.stop.0.store(true, Ordering::Relaxed);
        let results: Vec<_> = self.pipelines.into_iter().map(join).collect();
        let panicked = results
            .iter()
            .position(|r| matches!(r, Err(ServiceError::Panicked(_))));
        let first_error = panicked.or_else(|| results.iter().position(Result::is_err));
        let result = match first_error {
            Some(i) => results.into_iter().nth(i).unwrap_or(Ok(())),
            None => Ok(()),
        };
        // Its Kafka consumer is closed before the caller goes on (and, say, drops the cluster).
        if let Some(labels) = self.labels {
            let _ = labels.join();
        }
        let _ = self.reloader.join();
        let _ = self.http_stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

/// The model, its shadow and the rules of `config`, for each of `threads` pipelines. Each file
/// is read once, so that a file replaced during the start cannot give pipelines different models.
fn scorers(config: &Config, threads: usize) -> Result<Vec<Scorer>, StartError> {
    let m = &config.model;
    let files =
        Files::read::<StartError>(&m.path, m.shadow.as_deref(), config.rules.file.as_deref())?;
    (0..threads)
        .map(|lane| {
            scorer(
                config,
                files.model(m.intra_threads)?,
                files.shadow(m.intra_threads)?,
                files.rules()?,
                lane == 0,
            )
        })
        .collect()
}

/// One pipeline's scorer; logged for the first.
fn scorer(
    config: &Config,
    model: Model,
    shadow: Option<Model>,
    rules: Option<Rules>,
    log: bool,
) -> Result<Scorer, StartError> {
    let m = &config.model;
    let thresholds = Thresholds::resolve(model.thresholds(), m.thresholds())?;
    if log {
        info!(
            model = %m.path.display(),
            version = model.version(),
            features = ?model.spec().names(),
            review = thresholds.review,
            decline = thresholds.decline,
            from_model = ?model.thresholds(),
            "model loaded"
        );
    }
    let mut scorer = Scorer::new(model, thresholds).with_reasons(m.reason_policy());
    if let (Some(path), Some(shadow)) = (&m.shadow, shadow) {
        if log {
            info!(
                shadow = %path.display(),
                version = shadow.version(),
                features = ?shadow.spec().names(),
                "shadow model loaded: scored beside the model, never deciding"
            );
        }
        scorer = scorer.with_shadow(shadow)?;
    }
    if let (true, Some(rules)) = (log, &rules) {
        info!(file = %rules.path().display(), rules = ?rules.names().collect::<Vec<_>>(), "rules loaded");
    }
    Ok(scorer.with_rules(rules)?)
}

/// Binds `addr` and serves `router` on the runtime until `stop` turns true; returns the bound address.
fn listen(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    router: axum::Router,
    limits: crate::http::Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    runtime.spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        crate::http::serve(listener, router, limits, stopped).await;
    });
    Ok(bound)
}

/// Calls `evict` every `interval` until `stop` is set, off the pipeline thread so that a pass
/// over a million customers never stalls scoring.
fn evict_until(stop: &AtomicBool, interval: Duration, mut evict: impl FnMut()) {
    let tick = Duration::from_millis(100).min(interval);
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if Instant::now() >= next {
            evict();
            next = Instant::now() + interval;
        }
    }
}

/// Sets the stop flag when dropped: a service dropped without `stop` (a test that failed half-way)
/// must not leave its threads consuming.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The pipeline thread's result, with a panic turned into an error so the process exits non-zero.
fn join(handle: JoinHandle<Result<(), PipelineError>>) -> Result<(), ServiceError> {
    match handle.join() {
        Ok(result) => Ok(result?),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            error!(%message, "the pipeline thread panicked");
            Err(ServiceError::Panicked(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_pipeline_is_an_error_not_a_clean_stop() {
        let handle = std::thread::spawn(|| -> Result<(), PipelineError> { panic!("boom") });
        match join(handle) {
            Err(ServiceError::Panicked(message)) => assert_eq!(message, "boom"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        let handle = std::thread::spawn(|| -> Result<(), PipelineError> { Ok(()) });
        assert!(join(handle).is_ok());
    }
}
