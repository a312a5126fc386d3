//! The benchmark mode: pre-serialised answers, no bookkeeping, no lock, so that the stand-in
//! costs far less per request than what is measured in front of it. Any key works, except
//! `fail_key`, which always answers a quota 429 with a zero `RetryInfo` delay (a failover every
//! time). `POST /__mock/outage?mode=overloaded` makes every generate call answer 503 until
//! `?mode=off` (the brown-out scenario); `GET /__mock/calls` counts generate calls.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Knobs of the benchmark mode.
#[derive(Debug, Clone)]
pub struct FastConfig {
    /// Events in a streamed answer.
    pub stream_events: usize,
    /// Pause between streamed events.
    pub stream_interval: Duration,
    /// Characters of text in each event (and in the non-streamed answer).
    pub event_text_bytes: usize,
    /// Pause before every answer.
    pub response_delay: Duration,
    /// A key that always answers 429.
    pub fail_key: Option<String>,
    /// Whether each streamed event's text starts with the moment it was sent (see [`STAMP`]).
    pub stamp_events: bool,
}

/// With `stamp_events`, each event's text starts with this marker and the microseconds since the
/// Unix epoch at which the mock wrote it, in 16 digits: a client on the same machine subtracts
/// it from the moment the event arrived, through a proxy or straight.
pub const STAMP: &str = "@@t=";

/// Digits of a stamp.
pub const STAMP_DIGITS: usize = 16;

#[derive(Clone)]
struct Prepared {
    config: FastConfig,
    answer: Bytes,
    events: Vec<Bytes>,
    quota_error: Bytes,
    overloaded: Bytes,
    models: Bytes,
    control: Arc<Control>,
}

/// What a benchmark may change or read while the mock runs.
#[derive(Default)]
struct Control {
    /// Every generate call answers 503 UNAVAILABLE.
    overloaded: AtomicBool,
    /// Generate calls received.
    calls: AtomicU64,
}

fn event(text: &str, last: bool, candidates: usize) -> serde_json::Value {
    let mut candidate = json!({"content": {"parts": [{"text": text}], "role": "model"}});
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": candidates, "totalTokenCount": 8 + candidates},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "bench-response"
    })
}

/// The benchmark-mode router.
pub fn router(config: FastConfig) -> Router {
    let mut text: String = "lorem ipsum ".repeat(config.event_text_bytes / 12 + 1)
        [..config.event_text_bytes]
        .to_owned();
    if config.stamp_events {
        text.insert_str(0, &format!("{STAMP}{} ", "0".repeat(STAMP_DIGITS)));
    }
    let events = (0..config.stream_events.max(1))
        .map(|i| {
            let last = i + 1 == config.stream_events.max(1);
            Bytes::from(format!("data: {}\r\n\r\n", event(&text, last, i + 1)))
        })
        .collect();
    let prepared = Prepared {
        answer: Bytes::from(serde_json::to_vec_pretty(&event(&text, true, 1)).unwrap_or_default()),
        events,
        quota_error: Bytes::from(
            json!({"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": {"model": "gemini-2.5-flash"}}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}})
            .to_string(),
        ),
        overloaded: Bytes::from(
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
                .to_string(),
        ),
        control: Arc::default(),
        models: Bytes::from(
            json!({"models": [{"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent"]}]}).to_string(),
        ),
        config,
    };
    Router::new().fallback(answer).with_state(prepared)
}

async fn answer(State(prepared): State<Prepared>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(response) = control(&prepared.control, &path, request.uri().query()) {
        return response;
    }
    // The key in the header, or in `?key=` (both reach Gemini; some gateways use the query).
    let key = request
        .headers()
        .get("x-goog-api-key")
        .cloned()
        .or_else(|| {
            request
                .uri()
                .query()
                .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("key=")))
                .and_then(|key| axum::http::HeaderValue::from_str(key).ok())
        });
    // Drain the body, as a real server would.
    let _ = axum::body::to_bytes(request.into_body(), 256 * 1024 * 1024).await;
    if key.is_none() {
        return (StatusCode::FORBIDDEN, "no key").into_response();
    }
    if let (Some(fail), Some(key)) = (&prepared.config.fail_key, &key)
        && key.as_bytes() == fail.as_bytes()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "application/json")],
            prepared.quota_error.clone(),
        )
            .into_response();
    }
    if !prepared.config.response_delay.is_zero() {
        tokio::time::sleep(prepared.config.response_delay).await;
    }
    if path.contains("GenerateContent") || path.ends_with(":generateContent") {
        prepared.control.calls.fetch_add(1, Ordering::Relaxed);
        if prepared.control.overloaded.load(Ordering::Relaxed) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                prepared.overloaded.clone(),
            )
                .into_response();
        }
    }
    if path.ends_with(":streamGenerateContent") {
        let interval = prepared.config.stream_interval;
        let stamp = prepared.config.stamp_events;
        let events = prepared.events.clone();
        let body = futures_util::stream::unfold(
            (events.into_iter(), true),
            move |(mut events, first)| async move {
                let mut event = events.next()?;
                if !first && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                if stamp {
                    event = stamped(&event);
                }
                Some((Ok::<_, Infallible>(event), (events, false)))
            },
        );
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(body),
        )
            .into_response();
    }
    if path.ends_with(":generateContent") {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            prepared.answer.clone(),
        )
            .into_response();
    }
    if path.ends_with("/models") {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            prepared.models.clone(),
        )
            .into_response();
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The control routes: `POST /__mock/outage?mode=overloaded|off`, `GET /__mock/calls`.
fn control(control: &Control, path: &str, query: Option<&str>) -> Option<Response> {
    match path {
        "/__mock/outage" => {
            let on = query.is_some_and(|query| query.contains("mode=overloaded"));
            control.overloaded.store(on, Ordering::Relaxed);
            Some((StatusCode::OK, if on { "overloaded" } else { "off" }).into_response())
        }
        "/__mock/calls" => Some(
            (
                StatusCode::OK,
                control.calls.load(Ordering::Relaxed).to_string(),
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// `event` with the current time written over its stamp's zeros.
fn stamped(event: &Bytes) -> Bytes {
    let mut bytes = event.to_vec();
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    let digits = format!("{micros:0width$}", width = STAMP_DIGITS);
    if let Some(at) = bytes
        .windows(STAMP.len())
        .position(|window| window == STAMP.as_bytes())
        .map(|at| at + STAMP.len())
        && let Some(slot) = bytes.get_mut(at..at + STAMP_DIGITS)
    {
        slot.copy_from_slice(&digits.as_bytes()[..STAMP_DIGITS]);
    }
    Bytes::from(bytes)
}
