//! `/healthz` (the process answers) and `/readyz` (the database answers and a key is usable).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// Always 200 while the process serves.
pub async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers and at least one upstream key is usable, 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.storage.ping().await.is_ok();
    let usable_keys = state
        .pool
        .keys()
        .iter()
        .filter(|key| key.is_usable())
        .count();
    let ready = database && usable_keys > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "database": database,
            "usable_keys": usable_keys,
        })),
    )
}
