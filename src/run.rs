//! Starting and stopping the whole service: model, pipeline thread and HTTP server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tracing::{error, info};

use crate::config::Config;
use crate::engine::Scorer;
use crate::metrics::Metrics;
use crate::model::{Model, ModelError};
use crate::service::{Pipeline, ServiceError, Shared};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting threads: {0}")]
    Io(#[from] std::io::Error),
}

/// A running service instance.
pub struct Service {
    stop: Arc<AtomicBool>,
    pipeline: JoinHandle<Result<(), ServiceError>>,
    http_stop: oneshot::Sender<()>,
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    http_addr: SocketAddr,
}

impl Service {
    /// Loads the model, binds the HTTP listener, connects to Kafka and starts consuming.
    pub fn start(config: Config) -> Result<Service, StartError> {
        let model = Model::load(&config.model.path, config.model.intra_threads)?;
        info!(
            model = %config.model.path.display(),
            version = model.version(),
            features = ?model.spec().names(),
            "model loaded"
        );
        let spec = Arc::new(model.spec().clone());
        let scorer = Scorer::new(model, config.model.thresholds());
        let shared = Shared::new(Metrics::new(), Arc::new(Store::default()));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()?;
        let addr = config.http.listen;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| StartError::Listen { addr, source })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;
        let (http_stop, stopped) = oneshot::channel::<()>();
        let router = crate::http::router(shared.clone(), spec);
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = crate::http::serve(listener, router, shutdown).await {
                error!(error = %e, "HTTP server failed");
            }
        });
        info!(%http_addr, "HTTP listening: /metrics /healthz /readyz /customers/{{id}}");

        let brokers = config.kafka.brokers.clone();
        let pipeline = Pipeline::new(config, scorer, shared.clone())?;
        info!(%brokers, "consuming");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let pipeline = std::thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || pipeline.run(&stop_flag))?;
        Ok(Service {
            stop,
            pipeline,
            http_stop,
            runtime,
            shared,
            http_addr,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The runtime serving HTTP; callers may wait on signals in it.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// The pipeline stopped on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.pipeline.is_finished()
    }

    /// Stops consuming, finishes what is in flight, flushes, commits, and returns the pipeline's result.
    pub fn stop(self) -> Result<(), ServiceError> {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.pipeline.join().unwrap_or_else(|_| {
            error!("pipeline thread panicked");
            Ok(())
        });
        let _ = self.http_stop.send(());
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        result
    }
}
