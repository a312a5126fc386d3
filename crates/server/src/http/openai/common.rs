//! What the OpenAI routes share: reading a JSON body, sending with failover, opening a
//! stream, server-sent events, and the error a failed upstream call becomes.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use translate::gemini::GenerateContentResponse;
use translate::openai::chat::request::GeminiChatRequest;
use translate::openai::chat::stream::StreamItem;
use translate::openai::errors::{OpenAiError, from_upstream};

use crate::http::error::ApiError;
use crate::http::native::{ANSWER_LIMIT, REQUEST_BODY_LIMIT, read_body};
use crate::service::accounting::RequestMeter;
use crate::service::relay::{AnswerKind, Attempts, OpenedStream, StreamFault};
use crate::service::upstream::Outgoing;
use crate::service::upstream::UpstreamFailure;
use crate::state::App;

/// A request body from which on the upstream body's buffer is sized from it (see
/// [`upstream_request`]).
const LARGE_BODY: usize = 64 * 1024;

/// Comment lines sent while a thinking model is silent, so proxies keep the stream open.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Reads a JSON body into `T`; a malformed or mistyped body is a 400 naming the field.
pub(crate) async fn read_json<T: DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    read_sized_json(request).await.map(|(value, _)| value)
}

/// [`read_json`], and the length of the body it was read from (the body itself is freed).
pub(crate) async fn read_sized_json<T: DeserializeOwned>(
    request: Request,
) -> Result<(T, usize), ApiError> {
    let body = read_body(request.into_body(), REQUEST_BODY_LIMIT).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::InvalidField {
                message: format!("The request body is not valid JSON: {inner}."),
                param: None,
            }
        } else {
            ApiError::InvalidField {
                message: format!("Invalid value for '{path}': {inner}."),
                param: (path != ".").then_some(path),
            }
        }
    })?;
    // Nothing may follow the JSON value.
    deserializer.end().map_err(|error| ApiError::InvalidField {
        message: format!("The request body is not valid JSON: {error}."),
        param: None,
    })?;
    Ok((value, body.len()))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `call_` and 24 random alphanumerics: the id of a tool call the upstream gave none.
pub(crate) fn new_call_id() -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("call_{suffix}")
}

pub(crate) fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// The client's error for a failed upstream call about `model`.
pub(crate) fn upstream_error(failure: UpstreamFailure, model: &str) -> ApiError {
    match failure {
        UpstreamFailure::Answered { status, body, .. } => {
            ApiError::Upstream(from_upstream(status.as_u16(), &body, model))
        }
        UpstreamFailure::Exhausted {
            retry_after,
            daily,
            last_answer,
        } => ApiError::Upstream(translate::openai::errors::pool_exhausted(
            crate::http::error::whole_seconds(retry_after),
            daily,
            model,
            last_answer.as_deref(),
        )),
        UpstreamFailure::Capacity {
            retry_after,
            status,
        } => ApiError::Capacity {
            model: (!model.is_empty()).then(|| model.to_owned()),
            status,
            retry_after,
        },
        UpstreamFailure::Empty => ApiError::EmptyAnswer,
        UpstreamFailure::Malformed => {
            ApiError::UpstreamInvalidResponse("cut short or malformed".to_owned())
        }
        UpstreamFailure::NoUsableKey(message) => ApiError::NoUsableKey(message),
        UpstreamFailure::Unreachable => ApiError::UpstreamUnreachable,
        UpstreamFailure::Timeout => ApiError::UpstreamTimeout,
    }
}

/// Sends a content request with failover and reads its answer whole: one cut short,
/// malformed or empty is retried on another key (see `relay`).
pub(crate) async fn send_for_whole_answer(
    app: &App,
    outgoing: &Outgoing,
    attempts: &mut Attempts,
) -> Result<crate::service::relay::WholeAnswer, UpstreamFailure> {
    let committed = app
        .relay
        .send_with_failover_after(outgoing, attempts)
        .await?;
    app.relay
        .read_whole_answer(
            outgoing,
            committed,
            attempts,
            AnswerKind::ContentToTranslate,
            ANSWER_LIMIT,
        )
        .await
}

/// The upstream request for a translated chat-shaped request (chat, Responses, a completion's
/// prompt). Files and cached contents it names can only be used through their own project's
/// keys, and only by the client key that created them: checked here, before anything goes
/// upstream. The Gemini body is serialised once and the translated one freed at once (a request
/// may carry a hundred megabytes of inline media).
///
/// `size_hint` is the client's body length, when known: the Gemini body is about as long, so
/// its buffer is made that large at once instead of growing by doubling, where each step copies
/// it and the last may leave it with twice the room it needs.
pub(crate) fn upstream_request(
    app: &App,
    client: Option<i64>,
    translated: &mut GeminiChatRequest,
    size_hint: usize,
) -> Result<Outgoing, ApiError> {
    let project = app
        .owners
        .project_for(client, &translated.body.referenced_resources())?;
    let mut body = Vec::new();
    // Only worth it for a large body. The Gemini body is rarely longer than the client's (its
    // field names are about as long, data URL headers go, and serde_json writes non-ASCII text
    // unescaped); a small margin, so that the buffer also fits where the client's body was
    // freed. An allocation refused only means the buffer grows as it goes.
    if size_hint >= LARGE_BODY {
        let _ = body.try_reserve_exact(size_hint.saturating_add(4096));
    }
    serde_json::to_writer(&mut body, &std::mem::take(&mut translated.body))
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(Outgoing {
        method: Method::POST,
        path_and_query: translated.upstream_path(),
        headers: json_headers(),
        body: Bytes::from(body),
        streaming: translated.stream,
        model: Some(translated.model.clone()),
        project,
    })
}

/// Sends `outgoing` for a whole answer (see [`send_for_whole_answer`]) and meters it: the
/// upstream calls it took and the key that served. A failure becomes the client's error about
/// `model`; an answer that is not Gemini's JSON, a 502. Every non-streamed chat-shaped OpenAI
/// route starts here.
pub(crate) async fn read_metered_answer(
    app: &App,
    outgoing: &Outgoing,
    model: &str,
    meter: &mut Option<RequestMeter>,
) -> Result<GenerateContentResponse, ApiError> {
    let mut attempts = Attempts::default();
    let whole = send_for_whole_answer(app, outgoing, &mut attempts).await;
    if let Some(meter) = meter.as_mut() {
        meter.set_attempts(&attempts);
    }
    let whole = whole.map_err(|failure| upstream_error(failure, model))?;
    if let Some(meter) = meter.as_mut() {
        meter.set_key(&whole.key);
    }
    match whole.content {
        Some(answer) => Ok(answer),
        // Parsed again only to say why it is not of the translation's shape.
        None => serde_json::from_slice(&whole.body)
            .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string())),
    }
}

/// Opens a stream for `outgoing` (see [`open_stream`]) and meters it: the upstream calls it
/// took, then either the client's error for a failure (its status recorded) or the key that
/// serves, marked streamed with status 200. Every streamed OpenAI route starts here.
pub(crate) async fn open_metered_stream(
    app: &App,
    outgoing: &Outgoing,
    model: &str,
    meter: Option<RequestMeter>,
) -> Result<(OpenedStream, Option<RequestMeter>), ApiError> {
    let mut attempts = Attempts::default();
    let opened = open_stream(app, outgoing, &mut attempts).await;
    let mut meter = meter.map(|mut meter| {
        meter.set_attempts(&attempts);
        meter
    });
    match opened {
        Ok(opened) => {
            let meter = meter.map(|mut meter| {
                meter.set_key(&opened.key);
                meter.set_streamed();
                meter.set_status(200);
                meter
            });
            Ok((opened, meter))
        }
        Err(failure) => {
            let error = upstream_error(failure, model);
            if let Some(meter) = meter.as_mut() {
                meter.set_status(error.status().as_u16());
            }
            Err(error)
        }
    }
}

/// Sends a streamed request and reads it up to its first event (the commit point, see `relay`).
pub(crate) async fn open_stream(
    app: &App,
    outgoing: &Outgoing,
    attempts: &mut Attempts,
) -> Result<OpenedStream, UpstreamFailure> {
    let committed = app
        .relay
        .send_with_failover_after(outgoing, attempts)
        .await?;
    app.relay
        .open_first_event(outgoing, committed, attempts)
        .await
}

/// A downstream event stream: comment lines while the model is silent, no caching, and no
/// buffering by nginx.
pub(crate) fn sse_response<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The error event ending a stream that cannot go on.
pub(crate) fn stream_fault_error(fault: StreamFault) -> OpenAiError {
    match fault {
        StreamFault::ShuttingDown => OpenAiError::new(
            503,
            "server_error",
            Some("gateway_shutting_down"),
            fault.message(),
        ),
        StreamFault::Oversized | StreamFault::Broken => {
            OpenAiError::upstream_stream(&fault.message())
        }
    }
}

/// One downstream SSE event: a chunk, an error payload, or `[DONE]`.
pub(crate) fn sse_event(item: &StreamItem) -> Event {
    let data = match item {
        StreamItem::Chunk(chunk) => serde_json::to_string(chunk).unwrap_or_default(),
        StreamItem::Error(error) => error.body().to_string(),
        StreamItem::Done => "[DONE]".to_owned(),
    };
    Event::default().data(data)
}
