//! The HTTP side: Prometheus metrics, health and readiness, and point lookups of a customer's windows.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::features::FeatureSpec;
use crate::shared::Shared;

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    spec: Arc<FeatureSpec>,
}

pub fn router(shared: Arc<Shared>, spec: Arc<FeatureSpec>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/customers/{customer_id}", get(customer))
        .with_state(AppState { shared, spec })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.shared.render_metrics(),
    )
        .into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let h = &s.shared.health;
    let model = h.is_model_loaded();
    let assigned = h.has_partitions();
    let status = if model && assigned {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({"ready": model && assigned, "model_loaded": model, "partitions_assigned": assigned});
    (status, Json(body)).into_response()
}

/// The customer's windows as of its newest event, like a ksqlDB pull query on the aggregate table.
async fn customer(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(windows) = s.shared.store.customer(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown customer {id:?}")})),
        )
            .into_response();
    };
    let Some(newest) = windows.newest() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no events for customer {id:?}")})),
        )
            .into_response();
    };
    let mut stats = Vec::new();
    windows.stats(newest, s.spec.windows(), &mut stats);
    let mut features = Map::new();
    for (w, st) in s.spec.windows().iter().zip(&stats) {
        features.insert(format!("customer_tx_count_{w}"), json!(st.count));
        features.insert(format!("customer_sum_amount_{w}"), json!(st.sum));
        features.insert(format!("customer_avg_amount_{w}"), json!(st.mean()));
    }
    Json(json!({
        "customer_id": id,
        "as_of": newest.to_string(),
        "events_held": windows.len(),
        "features": Value::Object(features),
    }))
    .into_response()
}
