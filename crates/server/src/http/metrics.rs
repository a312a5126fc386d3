//! `GET /metrics`: the recorder's text, with the pool's gauges refreshed first.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::gauge;

use crate::service::admin_auth::same_secret;
use crate::service::metrics::{MAX_MODEL_LABELS, install, model_label};
use crate::state::AppState;

/// At most this many project-and-model quota series.
const MAX_QUOTA_SERIES: usize = 500;

/// `GET /metrics`: Prometheus text.
pub async fn render(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // With METRICS_TOKEN the metrics need it, and may name Google projects; without, they are
    // public and name none (project names tell outsiders whose quota this is).
    let named_projects = match &state.config.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same_secret(
                given.trim().as_bytes(),
                secrecy::ExposeSecret::expose_secret(token).as_bytes(),
            ) {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "metrics need Authorization: Bearer <METRICS_TOKEN>\n",
                )
                    .into_response();
            }
            true
        }
        None => false,
    };
    let Some(handle) = install() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics are unavailable",
        )
            .into_response();
    };
    let now = state.pool.now_ms();
    let keys = state.pool.keys();
    let cooling: HashSet<String> = state.pool.cooldowns().into_iter().map(|c| c.0).collect();
    let usable = keys
        .iter()
        .filter(|k| k.is_available(now) && !cooling.contains(&**k.project()))
        .count();
    let cooling_keys = keys
        .iter()
        .filter(|k| k.is_usable() && cooling.contains(&**k.project()))
        .count();
    let out = keys
        .iter()
        .filter(|k| k.out_of_service_reason().is_some())
        .count();
    let disabled = keys
        .iter()
        .filter(|k| !k.is_usable() && k.out_of_service_reason().is_none())
        .count();
    gauge!("gateway_keys", "state" => "usable").set(usable as f64);
    gauge!("gateway_keys", "state" => "cooling").set(cooling_keys as f64);
    gauge!("gateway_keys", "state" => "out_of_service").set(out as f64);
    gauge!("gateway_keys", "state" => "disabled").set(disabled as f64);
    // Per model: how many projects can serve now, and how many cool for which reason.
    for overview in state
        .pool
        .model_overview()
        .into_iter()
        .take(MAX_MODEL_LABELS)
    {
        let model = model_label(&overview.model);
        gauge!("gateway_model_projects", "model" => model.clone(), "state" => "serving")
            .set(overview.serving as f64);
        gauge!("gateway_model_projects", "model" => model.clone(), "state" => "cooling_quota")
            .set(overview.cooling_quota as f64);
        gauge!("gateway_model_projects", "model" => model, "state" => "cooling_capacity")
            .set(overview.cooling_capacity as f64);
    }
    let (connections, streams) = state.upstream.lanes_in_use();
    gauge!("gateway_upstream_http2_connections").set(connections as f64);
    gauge!("gateway_upstream_http2_streams").set(streams as f64);
    // Named projects only (a key without a project is a project of its own: one series per key
    // would be unbounded), at most a few hundred series.
    for state in state
        .pool
        .project_states()
        .into_iter()
        .filter(|state| {
            named_projects && !state.project.starts_with('~') && !state.model.is_empty()
        })
        .take(MAX_QUOTA_SERIES)
    {
        let model = model_label(&state.model);
        if let Some(limit) = state.limits.rpm {
            gauge!("gateway_quota_remaining", "project" => state.project.clone(), "model" => model.clone(), "window" => "minute")
                .set(f64::from(limit.saturating_sub(state.minute_used)));
        }
        if let Some(limit) = state.limits.rpd {
            gauge!("gateway_quota_remaining", "project" => state.project, "model" => model, "window" => "day")
                .set(f64::from(limit.saturating_sub(state.day_used)));
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
