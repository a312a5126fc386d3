//! The mock's request handling: routing, quotas, injected failures and the generate calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::{Value, json};

use crate::answer::{Answer, compose};
use crate::config::{Fault, Outage};
use crate::http::{Caller, Incoming, authenticate, google_error, json_response};
use crate::models::{find_model, get_model, list_models, model_not_found};
use crate::resources::{
    check_references, create_cached_content, delete_cached_content, delete_file,
    get_cached_content, get_file, list_cached_contents, list_files,
};
use crate::state::{MockState, RecordedRequest};
use crate::tokens::{batch_embed_contents, count_tokens, embed_content};
use crate::upload;

/// Largest request body the mock reads (the real API takes 100 MB inline).
const BODY_LIMIT: usize = 256 * 1024 * 1024;

pub(crate) fn router(state: Arc<MockState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return google_error(
                413,
                "Request payload size exceeds the limit.",
                "INVALID_ARGUMENT",
                Vec::new(),
            );
        }
    };
    let query: Vec<(String, String)> = parts.uri.query().map(url_pairs).unwrap_or_default();
    let incoming = Incoming {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers.clone(),
        body,
    };
    if incoming.path == "/__mock/requests" {
        return inspection(&state);
    }
    if incoming.path == "/__mock/outage" {
        return set_outage(&state, incoming.query("mode").unwrap_or("off"));
    }
    let response = route(&state, &incoming).await;
    if state.config.record_requests {
        let recorded = RecordedRequest {
            method: parts.method.to_string(),
            version: format!("{:?}", parts.version),
            path: incoming.path.clone(),
            query: parts.uri.query().map(str::to_owned),
            api_key: incoming.header("x-goog-api-key").map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            status: response.status().as_u16(),
            body: serde_json::from_slice(&incoming.body).ok(),
        };
        state.ledger().requests.push(recorded);
    }
    response
}

/// `POST /__mock/outage?mode=…`: `capacity_429`, `overloaded`, `empty`, `retry_info:<delay>`
/// (a quota 429 whose `RetryInfo` says `<delay>` verbatim) or `off`, for tests that run the
/// binary.
fn set_outage(state: &MockState, mode: &str) -> Response {
    let outage = match mode {
        "off" => None,
        "capacity_429" => Some(Outage::Capacity429),
        "overloaded" => Some(Outage::Overloaded),
        "empty" => Some(Outage::EmptyAnswers),
        other => match other.strip_prefix("retry_info:") {
            Some(delay) => Some(Outage::QuotaRetryInfo(delay.to_owned())),
            None => return (StatusCode::BAD_REQUEST, "unknown outage mode").into_response(),
        },
    };
    *state
        .outage
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = outage;
    (StatusCode::OK, mode.to_owned()).into_response()
}

/// `GET /__mock/requests`: what the mock recorded, as JSON, for tests that run the binary.
fn inspection(state: &MockState) -> Response {
    let requests: Vec<Value> = state
        .ledger()
        .requests
        .iter()
        .map(|r| {
            json!({
                "method": r.method, "path": r.path, "query": r.query,
                "api_key": r.api_key, "status": r.status, "body": r.body,
            })
        })
        .collect();
    json_response(&Value::Array(requests))
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        index += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(state: &Arc<MockState>, incoming: &Incoming) -> Response {
    if let Some(rest) = incoming
        .path
        .strip_prefix("/upload/v1beta/files")
        .or_else(|| incoming.path.strip_prefix("/upload/v1/files"))
        && rest.is_empty()
    {
        return upload::handle(state, incoming);
    }
    let Some(rest) = incoming
        .path
        .strip_prefix("/v1beta/")
        .or_else(|| incoming.path.strip_prefix("/v1/"))
    else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let project = match authenticate(state, incoming.api_key()) {
        Ok(project) => project,
        Err(response) => return response,
    };
    let key = incoming.api_key().unwrap_or_default().to_owned();
    match injected(state, &incoming.path, &key) {
        Some(Injected::Answer(response)) => return response,
        Some(Injected::Hang) => {
            // Never answer: the caller's timeout has to end this.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        None => {}
    }
    if !state.config.response_delay.is_zero() {
        tokio::time::sleep(state.config.response_delay).await;
    }
    let caller = Caller { key, project };
    let (collection, tail) = rest.split_once('/').unwrap_or((rest, ""));
    match (&incoming.method, collection, tail) {
        (&Method::GET, "models", "") => list_models(state, incoming),
        (&Method::GET, "models", model) => get_model(model),
        (&Method::POST, "models", call) => model_call(state, incoming, &caller, call),
        (&Method::POST, "cachedContents", "") => create_cached_content(state, incoming, &caller),
        (&Method::GET, "cachedContents", "") => list_cached_contents(state, &caller),
        (&Method::GET, "cachedContents", id) => get_cached_content(state, &caller, id),
        (&Method::DELETE, "cachedContents", id) if !id.is_empty() => {
            delete_cached_content(state, &caller, id)
        }
        (&Method::GET, "files", "") => list_files(state, &caller),
        (&Method::GET, "files", id) => get_file(state, &caller, id),
        (&Method::DELETE, "files", id) => delete_file(state, &caller, id),
        _ => google_error(
            404,
            &format!("Method not found: {} {}", incoming.method, incoming.path),
            "NOT_FOUND",
            Vec::new(),
        ),
    }
}

/// What an injection makes of a request.
enum Injected {
    /// This answer.
    Answer(Response),
    /// No answer at all.
    Hang,
}

fn injected(state: &MockState, path: &str, key: &str) -> Option<Injected> {
    let mut ledger = state.ledger();
    let position = ledger.injections.iter().position(|injection| {
        injection.times > 0
            && injection
                .path_contains
                .as_deref()
                .is_none_or(|part| path.contains(part))
            && injection.key.as_deref().is_none_or(|k| k == key)
    })?;
    let injection = &mut ledger.injections[position];
    injection.times -= 1;
    if let Some(fault) = injection.fault {
        return Some(faulty_answer(fault).map_or(Injected::Hang, Injected::Answer));
    }
    if !injection.sse_events.is_empty() {
        let body: String = injection
            .sse_events
            .iter()
            .map(|event| format!("data: {event}\r\n\r\n"))
            .collect();
        return Some(Injected::Answer(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/event-stream")],
                body,
            )
                .into_response(),
        ));
    }
    let status =
        StatusCode::from_u16(injection.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = injection.body.to_string();
    Some(Injected::Answer(
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            body,
        )
            .into_response(),
    ))
}

/// A first event of a normal stream, for the faults that start like one.
const FIRST_EVENT: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}], \"role\": \"model\"}}]}\r\n\r\n";
/// A whole normal stream: one text event and a last one with the finish reason and usage.
const WHOLE_STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello\"}], \"role\": \"model\"}}]}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there\"}], \"role\": \"model\"}, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 3, \"candidatesTokenCount\": 2, \"totalTokenCount\": 5}}\r\n\r\n";

fn sse(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

/// The answer of a fault; `None` for no answer at all.
fn faulty_answer(fault: Fault) -> Option<Response> {
    use futures_util::StreamExt;
    let silence = || tokio::time::sleep(Duration::from_secs(3600));
    let response = match fault {
        Fault::HangBeforeHeaders => return None,
        Fault::HangMidStream => sse(Body::from_stream(
            stream::once(async { Ok::<_, std::io::Error>(Bytes::from(FIRST_EVENT)) }).chain(
                stream::once(async move {
                    silence().await;
                    Ok(Bytes::new())
                }),
            ),
        )),
        Fault::Reset => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            Body::from_stream(
                stream::once(async { Ok(Bytes::from_static(b"{\"candidates\": [")) }).chain(
                    stream::once(async {
                        Err(std::io::Error::other("connection reset by the mock"))
                    }),
                ),
            ),
        )
            .into_response(),
        Fault::MalformedJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel",
        )
            .into_response(),
        Fault::TruncatedSse => sse(Body::from(format!(
            "{FIRST_EVENT}data: {{\"candidates\": [{{\"con"
        ))),
        Fault::HugeEvent => {
            let start = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"";
            let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
            sse(Body::from_stream(
                stream::iter([Bytes::from(FIRST_EVENT), Bytes::from(start)])
                    .chain(stream::iter(std::iter::repeat_n(chunk, 80)))
                    .map(Ok::<_, std::io::Error>),
            ))
        }
        Fault::SlowDrip => sse(Body::from_stream(
            stream::iter(
                WHOLE_STREAM
                    .as_bytes()
                    .chunks(16)
                    .map(Bytes::copy_from_slice),
            )
            .then(|chunk| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(chunk)
            }),
        )),
    };
    Some(response)
}

fn model_call(
    state: &Arc<MockState>,
    incoming: &Incoming,
    caller: &Caller,
    call: &str,
) -> Response {
    let Some((model, action)) = call.split_once(':') else {
        return google_error(404, "Method not found.", "NOT_FOUND", Vec::new());
    };
    if find_model(model).is_none() {
        return model_not_found(model, action);
    }
    let body = match incoming.json() {
        Ok(body) => body,
        Err(response) => return response,
    };
    if matches!(
        action,
        "generateContent" | "streamGenerateContent" | "countTokens"
    ) && let Some(response) = unknown_field(&body)
    {
        return response;
    }
    if let Err(response) = check_references(state, caller, &body) {
        return response;
    }
    if matches!(action, "generateContent" | "streamGenerateContent")
        && let Some(response) =
            outage_answer(state, model, action, incoming.query("alt") == Some("sse"))
    {
        return response;
    }
    if let Err(response) = take_quota(state, &caller.project, model) {
        return response;
    }
    let generate = |stream: bool| match compose(model, &body) {
        Ok(answer) => {
            let (prompt, candidates, thoughts) = answer.totals();
            let mut ledger = state.ledger();
            let served = ledger.usage_by_key.entry(caller.key.clone()).or_default();
            served.prompt += prompt;
            served.candidates += candidates;
            served.thoughts += thoughts;
            drop(ledger);
            if stream {
                stream_response(state, model, &answer, incoming.query("alt") == Some("sse"))
            } else {
                json_response(&answer.body(model, &response_id()))
            }
        }
        Err(response) => response,
    };
    let response = match action {
        "generateContent" => generate(false),
        "streamGenerateContent" => generate(true),
        "countTokens" => count_tokens(&body),
        "embedContent" => embed_content(&body),
        "batchEmbedContents" => batch_embed_contents(&body),
        other => {
            return google_error(
                404,
                &format!("Method not found: {other}"),
                "NOT_FOUND",
                Vec::new(),
            );
        }
    };
    if response.status().is_success() {
        *state
            .ledger()
            .served_by_key
            .entry(caller.key.clone())
            .or_default() += 1;
    }
    response
}

/// Fields of a `GenerateContentRequest` (both spellings, as Google's JSON parser accepts).
const REQUEST_FIELDS: [&str; 15] = [
    "contents",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "systemInstruction",
    "system_instruction",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
    "model",
    "labels",
    "generateContentRequest",
];

/// Google's answer to a field it does not know: a 400 that quotes the field's name, as the
/// real API does (which is how client text gets into upstream error messages).
fn unknown_field(body: &Value) -> Option<Response> {
    let name = body
        .as_object()?
        .keys()
        .find(|name| !REQUEST_FIELDS.contains(&name.as_str()))?;
    let message =
        format!("Invalid JSON payload received. Unknown name \"{name}\": Cannot find field.");
    Some(google_error(
        400,
        &message,
        "INVALID_ARGUMENT",
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"description": message}]
        })],
    ))
}

/// The answer of the outage in force, if any.
fn outage_answer(state: &MockState, model: &str, action: &str, sse: bool) -> Option<Response> {
    let outage = state
        .outage
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()?;
    Some(match outage {
        Outage::Capacity429 => google_error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            "RESOURCE_EXHAUSTED",
            Vec::new(),
        ),
        Outage::Overloaded => google_error(
            503,
            "The model is overloaded. Please try again later.",
            "UNAVAILABLE",
            Vec::new(),
        ),
        Outage::QuotaRetryInfo(delay) => quota_error_with_delay(
            model,
            10,
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            &delay,
        ),
        Outage::EmptyAnswers => {
            let empty = json!({
                "candidates": [{"content": {"role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
                "modelVersion": model,
                "responseId": response_id(),
            });
            if action == "streamGenerateContent" {
                let body = if sse {
                    format!("data: {empty}\r\n\r\n")
                } else {
                    format!("[{empty}]")
                };
                let content_type = if sse {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
            } else {
                json_response(&empty)
            }
        }
    })
}

/// Counts a call against the project's per-minute and per-day limits for the model.
fn take_quota(state: &MockState, project: &str, model: &str) -> Result<(), Response> {
    let now = Instant::now();
    let slot = (project.to_owned(), model.to_owned());
    let mut ledger = state.ledger();
    if let Some(limit) = state.config.rpd_limit {
        let used = ledger.day_counts.get(&slot).copied().unwrap_or(0);
        if used >= limit {
            return Err(quota_error(
                model,
                limit,
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                Duration::from_secs(3600),
            ));
        }
    }
    if let Some(limit) = state.config.rpm_limit {
        let window = ledger.minute_windows.entry(slot.clone()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            let oldest = window.front().copied().unwrap_or(now);
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(oldest));
            return Err(quota_error(
                model,
                limit,
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                wait,
            ));
        }
        window.push_back(now);
    }
    *ledger.day_counts.entry(slot).or_default() += 1;
    Ok(())
}

fn quota_error(model: &str, limit: u32, quota_id: &str, retry: Duration) -> Response {
    let seconds = retry.as_secs_f64().ceil().max(1.0) as u64;
    quota_error_with_delay(model, limit, quota_id, &format!("{seconds}s"))
}

/// A quota 429 as Google sends it, with `delay` as the `RetryInfo.retryDelay` text verbatim.
fn quota_error_with_delay(model: &str, limit: u32, quota_id: &str, delay: &str) -> Response {
    google_error(
        429,
        &format!(
            "You exceeded your current quota, please check your plan and billing details. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: {limit}, model: {model}\nPlease retry in {delay}."
        ),
        "RESOURCE_EXHAUSTED",
        vec![
            json!({
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": limit.to_string()
                }]
            }),
            json!({
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
            }),
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}),
        ],
    )
}

/// Counts a stream as cancelled when it is dropped before its last event.
struct StreamGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.state.streams.completed
        } else {
            &self.state.streams.cancelled
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn response_id() -> String {
    format!("mock-{:016x}", rand::random::<u64>())
}

fn stream_response(state: &Arc<MockState>, model: &str, answer: &Answer, sse: bool) -> Response {
    let payloads: Vec<String> = answer
        .events(model, &response_id(), state.config.stream_events)
        .iter()
        .map(Value::to_string)
        .collect();
    let shared = Arc::clone(state);
    shared
        .streams
        .started
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let gate = shared
        .stream_gate
        .lock()
        .map(|gate| gate.clone())
        .unwrap_or_default();
    let interval = shared.config.stream_interval;
    let guard = StreamGuard {
        state: shared,
        finished: false,
    };
    let total = payloads.len();
    let body_stream = stream::unfold(
        (payloads.into_iter().enumerate(), guard),
        move |(mut payloads, mut guard)| {
            let gate = gate.clone();
            async move {
                let (index, payload) = payloads.next()?;
                if index > 0 {
                    if let Some(gate) = &gate
                        && let Ok(permit) = gate.acquire().await
                    {
                        permit.forget();
                    }
                    if !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                }
                // Live Gemini frames SSE events with CRLF.
                let frame = if sse {
                    format!("data: {payload}\r\n\r\n")
                } else {
                    let open = if index == 0 { "[" } else { "" };
                    let close = if index + 1 == total { "]" } else { ",\r\n" };
                    format!("{open}{payload}{close}")
                };
                if index + 1 == total {
                    guard.finished = true;
                }
                Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(frame)),
                    (payloads, guard),
                ))
            }
        },
    );
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json; charset=UTF-8"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body_stream),
    )
        .into_response()
}
