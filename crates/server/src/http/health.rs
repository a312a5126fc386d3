//! `/healthz` (the process answers) and `/readyz` (the database answers and is where it was
//! opened, accounting is being written, and a key is usable).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// Always 200 while the process serves.
pub async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the database answers (and its file is still in place), the accounting writes
/// succeed, and at least one upstream key is usable; 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.storage.file_is_in_place() && state.storage.ping().await.is_ok();
    let accounting = state.accountant.health();
    let usable_keys = state
        .pool
        .keys()
        .iter()
        .filter(|key| key.is_usable())
        .count();
    let ready = database && accounting.failing_since_ms.is_none() && usable_keys > 0;
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
            "accounting": {
                "writing": accounting.failing_since_ms.is_none(),
                "failing_since_ms": accounting.failing_since_ms,
                "pending": accounting.pending,
                "dropped": accounting.dropped,
            },
            "usable_keys": usable_keys,
        })),
    )
}
