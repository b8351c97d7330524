//! The HTTP side: Prometheus metrics, health and readiness on one listener; point lookups of a
//! customer's windows on another, off unless configured.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::shared::Lanes;

#[derive(Clone)]
struct AppState {
    lanes: Arc<Lanes>,
    /// The bearer token the lookup listener requires, if any.
    token: Option<Arc<str>>,
}

/// What every listener bounds: open connections, and how long a client may take to send its
/// request headers (a slow or idle client cannot hold a connection for ever).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// The operations listener: `/metrics`, `/healthz`, `/readyz`. Safe to expose to the scraper.
pub fn ops_router(lanes: Arc<Lanes>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { lanes, token: None })
}

/// The lookup listener: `/customers/{id}` and `/terminals/{id}`, which show a customer's spend
/// and a terminal's fraud labels, so it is on a port of its own and, with a token configured,
/// answers only `Authorization: Bearer <token>`.
pub fn lookup_router(lanes: Arc<Lanes>, token: Option<String>) -> Router {
    Router::new()
        .route("/customers/{customer_id}", get(customer))
        .route("/terminals/{terminal_id}", get(terminal))
        .with_state(AppState {
            lanes,
            token: token.map(Arc::from),
        })
}

/// Serves until `shutdown` resolves. Past `max_connections` a new connection is closed at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait, rather than spin or stop serving.
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("HTTP connection closed: at max_connections");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(error = %e, "HTTP connection ended");
            }
        });
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.lanes.render_metrics(),
    )
        .into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let h = &s.lanes;
    let model = h.is_model_loaded();
    let assigned = h.has_partitions();
    let restoring = h.is_restoring();
    let labels_loading = h.is_labels_loading();
    let ready = h.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"ready": ready, "model_loaded": model, "partitions_assigned": assigned, "restoring": restoring, "labels_loading": labels_loading});
    (status, Json(body)).into_response()
}

/// The customer's windows as of its newest event, like a ksqlDB pull query on the aggregate table.
/// Read in place on a blocking thread: a hot customer's array is neither copied nor scanned on
/// the async runtime.
async fn customer(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    // The windows of the model in use, after a reload too.
    let spec = s.lanes.spec();
    let (lanes, served, key) = (s.lanes.clone(), spec.clone(), id.clone());
    let found = tokio::task::spawn_blocking(move || {
        // In the store of the pipeline holding the customer's partition.
        lanes.stores().find_map(|store| {
            store.read_customer(&key, |windows| {
                let newest = windows.newest()?;
                let mut stats = Vec::new();
                windows.stats(newest, served.windows(), &mut stats);
                Some((newest, windows.len(), stats))
            })
        })
    })
    .await
    .ok()
    .flatten()
    .flatten();
    let Some((newest, held, stats)) = found else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown customer {id:?}")})),
        )
            .into_response();
    };
    let mut features = Map::new();
    for (w, st) in spec.windows().iter().zip(&stats) {
        features.insert(format!("customer_tx_count_{w}"), json!(st.count));
        features.insert(format!("customer_sum_amount_{w}"), json!(st.sum));
        features.insert(format!("customer_avg_amount_{w}"), json!(st.mean()));
    }
    Json(json!({
        "customer_id": id,
        "as_of": newest.to_string(),
        "events_held": held,
        "features": Value::Object(features),
    }))
    .into_response()
}

/// The terminal's labelled transactions and its terminal features as of now, for the windows
/// the model uses.
async fn terminal(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = unauthorized(&s, &headers) {
        return refused;
    }
    let spec = s.lanes.spec();
    let (terminals, served, key) = (s.lanes.terminals().clone(), spec.clone(), id.clone());
    let now = crate::time::EventTime::now();
    let found = tokio::task::spawn_blocking(move || {
        let held = terminals.read_terminal(&key)?;
        let mut stats = Vec::new();
        terminals.stats(&key, now, served.terminal_windows(), &mut stats);
        Some((held, stats))
    })
    .await
    .ok()
    .flatten();
    let Some((held, stats)) = found else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no labels for terminal {id:?}")})),
        )
            .into_response();
    };
    let mut features = Map::new();
    for (w, st) in spec.terminal_windows().iter().zip(&stats) {
        let suffix = format!("{}_delay_{}", w.len, w.delay);
        features.insert(format!("terminal_tx_count_{suffix}"), json!(st.labelled));
        features.insert(format!("terminal_fraud_count_{suffix}"), json!(st.fraud));
        features.insert(format!("terminal_risk_{suffix}"), json!(st.risk()));
        features.insert(
            format!("terminal_fraud_age_{suffix}"),
            json!(st.fraud_age_days(now)),
        );
        features.insert(
            format!("terminal_last_label_fraud_{suffix}"),
            json!(st.last_fraud() as u8),
        );
    }
    let frauds = held.iter().filter(|(_, fraud, _)| *fraud).count();
    Json(json!({
        "terminal_id": id,
        "as_of": now.to_string(),
        "labels_held": held.len(),
        "frauds_held": frauds,
        "newest_labelled_transaction": held.last().map(|(at, _, _)| at.to_string()),
        "features": Value::Object(features),
    }))
    .into_response()
}

/// With a token configured, the answer for a request without it.
fn unauthorized(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = s.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response(),
    )
}

/// Compares in a time that does not depend on where the bytes differ, so the token cannot be
/// guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Instant;

    use crate::features::FeatureSpec;
    use crate::metrics::Metrics;
    use crate::shared::{Common, Served, Shared};
    use crate::store::Store;

    /// Serves `router` on a free port of a runtime of its own; the runtime lives with the guard.
    fn serve_on_port(router: Router, limits: Limits) -> (SocketAddr, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(serve(listener, router, limits, std::future::pending()));
        (addr, rt)
    }

    fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn shared() -> Arc<Lanes> {
        let common = Common {
            metrics: Metrics::new(),
            terminals: Arc::new(crate::terminals::Terminals::new(0, &[])),
            labels_loading: Default::default(),
            served: Served::new(Arc::new(FeatureSpec::for_model::<&str>(&[]).unwrap())),
            departure: crate::shared::Departure::new(1),
        };
        Lanes::new(vec![Shared::new(&common, Arc::new(Store::default()))])
    }

    const LIMITS: Limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(300),
    };

    #[test]
    fn lookups_are_not_on_the_metrics_listener_and_need_the_token() {
        let shared = shared();
        let (ops, _rt1) = serve_on_port(ops_router(shared.clone()), LIMITS);
        assert!(get(ops, "/customers/c-1", None).starts_with("HTTP/1.1 404"));
        assert!(get(ops, "/healthz", None).starts_with("HTTP/1.1 200"));
        let router = lookup_router(shared, Some("s3cret".into()));
        let (lookup, _rt2) = serve_on_port(router, LIMITS);
        assert!(get(lookup, "/customers/c-1", None).starts_with("HTTP/1.1 401"));
        assert!(get(lookup, "/customers/c-1", Some("s3cre")).starts_with("HTTP/1.1 401"));
        // The right token: the customer is unknown, which is the honest answer.
        let answer = get(lookup, "/customers/c-1", Some("s3cret"));
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("unknown customer"), "{answer}");
    }

    #[test]
    fn a_silent_client_is_cut_off_and_connections_are_capped() {
        let shared = shared();
        let (addr, _rt) = serve_on_port(ops_router(shared), LIMITS);
        // Two clients that connect and send nothing hold both connections...
        let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        // ...so a third is closed at once, without an answer.
        let mut third = TcpStream::connect(addr).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = third.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "over the cap, the connection is closed");
        // The silent ones are closed after the header-read timeout, and then there is room.
        let started = Instant::now();
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read(&mut buf);
        }
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(4), "cut off after {waited:?}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(get(addr, "/healthz", None).starts_with("HTTP/1.1 200"));
    }
}
