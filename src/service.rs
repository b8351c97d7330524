//! Starting and stopping the whole service: model, pipeline thread and HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{ThresholdError, Thresholds};
use crate::metrics::Metrics;
use crate::model::{Model, ModelError};
use crate::pipeline::{Pipeline, PipelineError};
use crate::rules::Rules;
use crate::scorer::Scorer;
use crate::shared::Shared;
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
    pipeline: JoinHandle<Result<(), PipelineError>>,
    /// The labels reader, when the model takes terminal features; it ends with `stop`.
    labels: Option<JoinHandle<()>>,
    /// Loads and checks models on SIGHUP (and file changes); ends with `stop`.
    reloader: JoinHandle<()>,
    /// Resolves when the pipeline thread ends, however it ends (a drop guard sends it).
    pipeline_ended: oneshot::Receiver<()>,
    /// Set to true to stop every HTTP listener.
    http_stop: watch::Sender<bool>,
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    thresholds: Thresholds,
}

/// Dropped when the pipeline thread ends, by return or by panic.
struct EndGuard(Option<oneshot::Sender<()>>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Service {
    /// Loads the model, binds the HTTP listener, connects to Kafka and starts consuming.
    pub fn start(config: Config) -> Result<Service, StartError> {
        let model = Model::load(&config.model.path, config.model.intra_threads)?;
        let thresholds = Thresholds::resolve(model.thresholds(), config.model.thresholds())?;
        info!(
            model = %config.model.path.display(),
            version = model.version(),
            features = ?model.spec().names(),
            review = thresholds.review,
            decline = thresholds.decline,
            from_model = ?model.thresholds(),
            "model loaded"
        );
        let scorer = Scorer::new(model, thresholds).with_reasons(config.model.reason_policy());
        let scorer = match &config.model.shadow {
            Some(path) => {
                let shadow = Model::load(path, config.model.intra_threads)?;
                info!(
                    shadow = %path.display(),
                    version = shadow.version(),
                    features = ?shadow.spec().names(),
                    "shadow model loaded: scored beside the model, never deciding"
                );
                scorer.with_shadow(shadow)?
            }
            None => scorer,
        };
        let rules = match &config.rules.file {
            Some(path) => {
                let rules = Rules::load(path)?;
                info!(file = %path.display(), rules = ?rules.names().collect::<Vec<_>>(), "rules loaded");
                Some(rules)
            }
            None => None,
        };
        let scorer = scorer.with_rules(rules)?;
        let spec = scorer.spec().clone();
        let store = if config.state.snapshots() {
            Store::with_seed(crate::snapshot::state_seed(&config.state.dir)?)
        } else {
            Store::default()
        };
        let engine_config = config.engine.engine_config(true);
        let terminals = Arc::new(Terminals::new(engine_config.terminal_span_ms(&spec)));
        let shared = Shared::new(Metrics::new(), Arc::new(store), terminals.clone());

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()?;
        let (http_stop, stopped) = watch::channel(false);
        let limits = config.http.limits();
        let ops = crate::http::ops_router(shared.clone(), spec.clone());
        let http_addr = listen(&runtime, config.http.listen, ops, limits, stopped.clone())?;
        info!(%http_addr, "HTTP listening: /metrics /healthz /readyz");
        if let Some(addr) = config.http.lookup_listen {
            let token = config.http.lookup_token.clone();
            let lookups = crate::http::lookup_router(shared.clone(), spec.clone(), token);
            let addr = listen(&runtime, addr, lookups, limits, stopped)?;
            info!(%addr, token = config.http.lookup_token.is_some(), "HTTP listening: /customers/{{id}}");
        }

        let brokers = config.kafka.brokers.clone();
        let span_ms = engine_config.retention(&spec).span_ms();
        let eviction_interval = config.engine.eviction_interval;
        let stop = Arc::new(AtomicBool::new(false));
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
        let (candidates_tx, candidates) = std::sync::mpsc::channel();
        let pipeline = Pipeline::new(config, scorer, shared.clone(), candidates)?;
        let labels = match labels {
            Some(config) => Some(crate::labels::spawn(
                &config,
                shared.clone(),
                terminals,
                stop.clone(),
            )?),
            None => {
                info!("the model takes no terminal features: labels are not read");
                None
            }
        };
        info!(%brokers, "consuming");
        let stop_flag = stop.clone();
        let (ended_tx, pipeline_ended) = oneshot::channel();
        let pipeline = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                let _ended = EndGuard(Some(ended_tx));
                pipeline.run(&stop_flag)
            })?;
        let reload_requested = Arc::new(AtomicBool::new(false));
        let reloader = crate::reload::spawn(
            reload,
            reload_requested.clone(),
            shared.metrics.clone(),
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
        let (store, evicted, stop_flag) = (
            shared.store.clone(),
            shared.metrics.customers_evicted.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("evictor".into())
            .spawn(move || {
                evict_until(&stop_flag, eviction_interval, || {
                    evicted.inc_by(store.evict_idle(span_ms) as u64)
                })
            })?;
        Ok(Service {
            stop: StopOnDrop(stop),
            pipeline,
            labels,
            reloader,
            pipeline_ended,
            http_stop,
            runtime,
            shared,
            http_addr,
            thresholds,
        })
    }

    /// The decision thresholds in use (the config's over the model's).
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The pipeline stopped on its own (an error or a panic).
    pub fn is_finished(&self) -> bool {
        self.pipeline.is_finished()
    }

    /// Runs until `shutdown` completes (a signal, a test's channel) or the pipeline ends on its
    /// own, then stops: the service's whole life for a binary, as mini-redis's `server::run`.
    pub fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let ended = &mut self.pipeline_ended;
        let why = self.runtime.block_on(async {
            tokio::select! {
                () = shutdown => "shutdown requested",
                _ = ended => "the pipeline ended on its own",
            }
        });
        info!(why, "shutting down");
        self.stop()
    }

    /// Stops consuming, finishes what is in flight, flushes, commits, and returns the pipeline's
    /// result; a panic of the pipeline thread is an error too.
    pub fn stop(self) -> Result<(), ServiceError> {
        self.stop.0.store(true, Ordering::Relaxed);
        let result = join(self.pipeline);
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
