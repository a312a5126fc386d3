//! Prometheus metrics at `/metrics`. Labels stay low-cardinality: the route template (never the
//! raw path), a status class, an upstream key's id (never the key), and a model id only when it
//! looks like a Google model and is among the first 64 seen (others are `other`), so a client
//! sending random model names cannot grow the series without bound.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static MODELS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
const MAX_MODEL_LABELS: usize = 64;
/// At most this many project-and-model quota series.
const MAX_QUOTA_SERIES: usize = 500;

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Installs the process-wide recorder once (later calls reuse it) and starts its upkeep.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut ticker = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        ticker.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "gateway_requests_total",
        "Requests answered, by route template and status class."
    );
    metrics::describe_histogram!(
        "gateway_request_duration_seconds",
        "Time from request to the end of the answer."
    );
    metrics::describe_histogram!(
        "gateway_time_to_first_byte_seconds",
        "Time from request to the first byte of a streamed answer."
    );
    metrics::describe_counter!(
        "gateway_upstream_attempts_total",
        "Upstream calls, by outcome."
    );
    metrics::describe_histogram!(
        "gateway_upstream_response_seconds",
        "Time from an upstream call to its response head."
    );
    metrics::describe_counter!(
        "gateway_retries_total",
        "Upstream calls made on another key after a failure."
    );
    metrics::describe_counter!(
        "gateway_tokens_total",
        "Tokens reported by the upstream, by model and kind."
    );
    metrics::describe_counter!(
        "gateway_key_requests_total",
        "Requests served, by upstream key id."
    );
    metrics::describe_gauge!("gateway_keys", "Upstream keys by state.");
    metrics::describe_gauge!(
        "gateway_upstream_http2_connections",
        "HTTP/2 connections to the upstream carrying requests now."
    );
    metrics::describe_gauge!(
        "gateway_upstream_http2_streams",
        "Requests open on HTTP/2 connections to the upstream."
    );
    metrics::describe_gauge!(
        "gateway_quota_remaining",
        "Requests left per project and model, this minute and today."
    );
}

/// A model id as a label: itself when it looks like a Google model and there is room, else
/// `other`.
pub fn model_label(model: &str) -> String {
    let known_family = [
        "gemini-",
        "gemma-",
        "text-embedding-",
        "embedding-",
        "imagen-",
        "veo-",
        "learnlm-",
    ]
    .iter()
    .any(|prefix| model.starts_with(prefix));
    if !known_family || model.len() > 64 {
        return "other".to_owned();
    }
    let seen = MODELS.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut seen) = seen.lock() else {
        return "other".to_owned();
    };
    if seen.contains(model) || (seen.len() < MAX_MODEL_LABELS && seen.insert(model.to_owned())) {
        model.to_owned()
    } else {
        "other".to_owned()
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A request record dropped because the accounting could not keep up or write.
pub fn record_accounting_dropped() {
    counter!("gateway_accounting_dropped_total").increment(1);
}

/// A client connection refused because `MAX_CONNECTIONS` were open.
pub fn record_refused_connection() {
    counter!("gateway_connections_refused_total").increment(1);
}

/// Records a finished request.
pub fn record_request(
    route: &'static str,
    status: u16,
    duration: Duration,
    first_byte: Option<Duration>,
) {
    counter!("gateway_requests_total", "route" => route, "status_class" => status_class(status))
        .increment(1);
    histogram!("gateway_request_duration_seconds", "route" => route).record(duration.as_secs_f64());
    if let Some(first_byte) = first_byte {
        histogram!("gateway_time_to_first_byte_seconds", "route" => route)
            .record(first_byte.as_secs_f64());
    }
}

/// Records the tokens of a request.
pub fn record_tokens(
    model: &str,
    key_id: Option<i64>,
    prompt: u64,
    completion: u64,
    thoughts: u64,
) {
    let model = model_label(model);
    counter!("gateway_tokens_total", "model" => model.clone(), "kind" => "prompt")
        .increment(prompt);
    counter!("gateway_tokens_total", "model" => model.clone(), "kind" => "completion")
        .increment(completion);
    counter!("gateway_tokens_total", "model" => model, "kind" => "thoughts").increment(thoughts);
    if let Some(id) = key_id {
        counter!("gateway_key_requests_total", "key_id" => id.to_string()).increment(1);
    }
}

/// Records one upstream call: `success`, `rate_limited`, `key_invalid`, `server_error`,
/// `connection` or `request_error`.
pub fn record_attempt(outcome: &'static str, response_time: Option<Duration>, retry: bool) {
    counter!("gateway_upstream_attempts_total", "outcome" => outcome).increment(1);
    if let Some(time) = response_time {
        histogram!("gateway_upstream_response_seconds").record(time.as_secs_f64());
    }
    if retry {
        counter!("gateway_retries_total").increment(1);
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

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
            if !same_secret(given.trim(), secrecy::ExposeSecret::expose_secret(token)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        assert_eq!(model_label("gpt-4o"), "other");
        assert_eq!(model_label("gemini-2.5-flash"), "gemini-2.5-flash");
        for i in 0..200 {
            let label = model_label(&format!("gemini-fake-{i}"));
            assert!(label == "other" || label.starts_with("gemini-fake-"));
        }
        let seen = MODELS.get().unwrap().lock().unwrap().len();
        assert!(seen <= MAX_MODEL_LABELS);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
    }
}
