//! The OpenAI-compatible routes under `/v1`: chat completions (plain and streamed), models and
//! embeddings. Requests are translated by the `translate` crate, sent with failover, and the
//! answers translated back; errors come in OpenAI's shape with the status its SDKs expect.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use translate::gemini::GenerateContentResponse;
use translate::openai::chat::request::translate_chat_request;
use translate::openai::chat::response::{ResponseContext, chat_completion};
use translate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};
use translate::openai::chat::types::ChatCompletionRequest;
use translate::openai::embeddings::{EmbeddingsPlan, EmbeddingsRequest};
use translate::openai::errors::{OpenAiError, from_upstream};

use crate::accounting::RequestMeter;
use crate::error::{ApiError, Dialect};
use crate::native::{ANSWER_LIMIT, REQUEST_BODY_LIMIT, client_id, read_body, read_limited};
use crate::relay::{
    AnswerKind, Attempts, OpenedStream, StreamFault, UpstreamEvent, UpstreamFailure,
};
use crate::state::{App, AppState};
use crate::upstream::Outgoing;

/// Comment lines sent while a thinking model is silent, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether a path below `/v1/` is an OpenAI route. `models` and `models/{id}` are shared with
/// Gemini: a request authenticated the Gemini way (`x-goog-api-key` or `?key=`) is native. A
/// path outside the Gemini API from an OpenAI-style client is OpenAI's too, so that its 404
/// comes in the client's dialect.
pub fn is_openai_path(rest: &str, gemini_auth: bool) -> bool {
    match rest {
        "chat/completions" | "embeddings" | "completions" => true,
        _ if crate::responses::is_responses_path(rest) => true,
        "models" => !gemini_auth,
        _ => match rest.strip_prefix("models/") {
            Some(id) => !gemini_auth && !id.contains([':', '/']),
            None => {
                !gemini_auth
                    && matches!(
                        translate::gemini::native::NativePath::parse(rest),
                        Err(translate::gemini::native::PathError::UnknownCollection(_))
                    )
            }
        },
    }
}

/// Dispatches an OpenAI route.
pub async fn handle(state: AppState, request: Request) -> Response {
    let rest = request.uri().path().trim_start_matches("/v1/").to_owned();
    let method = request.method().clone();
    let route = match rest.as_str() {
        "chat/completions" => "/v1/chat/completions",
        "completions" => "/v1/completions",
        "embeddings" => "/v1/embeddings",
        _ if crate::responses::is_responses_path(&rest) => "/v1/responses",
        _ => "/v1/models",
    };
    let mut meter = Some(RequestMeter::start(&state, route, client_id(&request)));
    let result = match (method, rest.as_str()) {
        (Method::POST, "chat/completions") => {
            create_chat_completion(&state, request, &mut meter).await
        }
        (Method::POST, "completions") => {
            crate::completions::create(&state, request, &mut meter).await
        }
        (Method::POST, "embeddings") => create_embeddings(&state, request, &mut meter).await,
        (_, path) if crate::responses::is_responses_path(path) => {
            crate::responses::handle(&state, request, &mut meter).await
        }
        (Method::GET, "models") => list_models(&state).await,
        (Method::GET, path) if path.starts_with("models/") => {
            retrieve_model(&state, &path["models/".len()..]).await
        }
        (method, path) => Err(ApiError::NotFound(format!(
            "{method} /v1/{path} is not an OpenAI-compatible route of this gateway."
        ))),
    };
    let response = result.unwrap_or_else(|error| error.into_response_for(Dialect::OpenAi));
    // Not moved into a stream: the request ends here.
    if let Some(mut meter) = meter {
        meter.set_status(response.status().as_u16());
    }
    response
}

/// Reads a JSON body into `T`; a malformed or mistyped body is a 400 naming the field.
pub(crate) async fn read_json<T: DeserializeOwned>(request: Request) -> Result<T, ApiError> {
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
    Ok(value)
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
            crate::error::whole_seconds(retry_after),
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

async fn create_chat_completion(
    app: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let extensions = request.extensions().clone();
    let chat: ChatCompletionRequest = read_json(request).await?;
    let mut translated = translate_chat_request(&chat, &*app.calls)?;
    // A request may carry a hundred megabytes of inline media: each copy is freed as soon as
    // the next exists (the OpenAI request once translated, the Gemini one once serialised), so
    // at most two are held at any time.
    drop(chat);
    crate::auth::ensure_model_allowed(&extensions, &translated.model)?;
    if let Some(meter) = meter.as_mut() {
        meter.set_model(&translated.model);
    }
    // Cached contents and uploaded files can only be used through their own project's keys, and
    // only by the client key that created them (checked before anything goes upstream).
    let project = crate::ownership::project_for(
        app,
        crate::ownership::client_of(&extensions),
        &translated.body.referenced_resources(),
    )?;
    let gemini_body = std::mem::take(&mut translated.body);
    let body =
        serde_json::to_vec(&gemini_body).map_err(|error| ApiError::Internal(error.to_string()))?;
    drop(gemini_body);
    let outgoing = Outgoing {
        method: Method::POST,
        path_and_query: translated.upstream_path(),
        headers: json_headers(),
        body: Bytes::from(body),
        streaming: translated.stream,
        model: Some(translated.model.clone()),
        project,
    };
    if translated.stream {
        let context = StreamContext {
            model: translated.model,
            created: unix_now(),
            include_usage: translated.include_usage,
        };
        return stream_chat_completion(app, &outgoing, context, meter.take()).await;
    }
    let mut attempts = Attempts::default();
    let whole = send_for_whole_answer(app, &outgoing, &mut attempts).await;
    if let Some(meter) = meter.as_mut() {
        meter.set_attempts(&attempts);
    }
    let whole = whole.map_err(|failure| upstream_error(failure, &translated.model))?;
    if let Some(meter) = meter.as_mut() {
        meter.set_key(&whole.key);
    }
    let answer: GenerateContentResponse = serde_json::from_slice(&whole.body)
        .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string()))?;
    if let (Some(meter), Some(usage)) = (meter.as_mut(), &answer.usage_metadata) {
        meter.set_usage(usage);
    }
    let context = ResponseContext {
        model: translated.model,
        created: unix_now(),
        logprobs: translated.logprobs,
    };
    let (completion, calls) = chat_completion(&answer, &context, &mut new_call_id)?;
    app.calls.remember(calls);
    Ok(axum::Json(completion).into_response())
}

/// Sends a content request with failover and reads its answer whole: one cut short,
/// malformed or empty is retried on another key (see `relay`).
pub(crate) async fn send_for_whole_answer(
    app: &App,
    outgoing: &Outgoing,
    attempts: &mut Attempts,
) -> Result<crate::relay::WholeAnswer, UpstreamFailure> {
    let committed = app.send_with_failover_after(outgoing, attempts).await?;
    app.read_whole_answer(
        outgoing,
        committed,
        attempts,
        AnswerKind::Content,
        ANSWER_LIMIT,
    )
    .await
}

/// Sends a streamed request and reads it up to its first event (the commit point, see `relay`).
pub(crate) async fn open_stream(
    app: &App,
    outgoing: &Outgoing,
    attempts: &mut Attempts,
) -> Result<OpenedStream, UpstreamFailure> {
    let committed = app.send_with_failover_after(outgoing, attempts).await?;
    app.open_first_event(outgoing, committed, attempts).await
}

async fn stream_chat_completion(
    app: &App,
    outgoing: &Outgoing,
    context: StreamContext,
    meter: Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let mut attempts = Attempts::default();
    let opened = open_stream(app, outgoing, &mut attempts).await;
    let mut meter = meter.map(|mut meter| {
        meter.set_attempts(&attempts);
        meter
    });
    let opened = match opened {
        Ok(opened) => opened,
        Err(failure) => {
            let error = upstream_error(failure, &context.model);
            if let Some(meter) = meter.as_mut() {
                meter.set_status(error.status().as_u16());
            }
            return Err(error);
        }
    };
    let mut meter = meter.map(|mut meter| {
        meter.set_key(&opened.key);
        meter.set_streamed();
        meter.set_status(200);
        meter
    });
    let upstream = crate::relay::upstream_events(opened, app.stream_ends());
    let calls = Arc::clone(&app.calls);
    let events = async_stream::stream! {
        let mut translator = StreamTranslator::new(context);
        futures_util::pin_mut!(upstream);
        while let Some(step) = upstream.next().await {
            let items = match step {
                UpstreamEvent::Data(data) => translator.on_event(&data, &mut new_call_id),
                UpstreamEvent::Finished => translator.finish(),
                UpstreamEvent::Fault(fault) => vec![StreamItem::Error(stream_fault_error(fault))],
            };
            for item in &items {
                yield Ok::<Event, Infallible>(sse_event(item));
            }
            calls.remember(translator.take_emitted_calls());
            if let (Some(meter), Some(usage)) = (meter.as_mut(), translator.usage()) {
                meter.set_usage(usage);
            }
            if translator.is_ended() || items.iter().any(|item| matches!(item, StreamItem::Error(_))) {
                break;
            }
        }
    };
    Ok(sse_response(events))
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

/// Sends a GET for `path_and_query` with failover and returns the JSON answer.
async fn get_json(app: &App, path_and_query: String, model: &str) -> Result<Value, ApiError> {
    let outgoing = Outgoing {
        method: Method::GET,
        path_and_query,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        streaming: false,
        model: None,
        project: None,
    };
    let committed = app
        .send_with_failover(&outgoing)
        .await
        .map_err(|failure| upstream_error(failure, model))?;
    let body = read_limited(committed.response, ANSWER_LIMIT).await?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string()))
}

/// `GET /v1/models`: every page of the upstream list, chat and embedding models only.
async fn list_models(app: &App) -> Result<Response, ApiError> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    // Bounded: a misbehaving upstream cannot keep the gateway paging forever.
    for _ in 0..50 {
        let mut path = "v1beta/models?pageSize=1000".to_owned();
        if let Some(token) = &token {
            path.push_str("&pageToken=");
            path.push_str(
                &url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
            );
        }
        let page = get_json(app, path, "").await?;
        token = page
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        pages.push(page);
        if token.is_none() {
            break;
        }
    }
    Ok(axum::Json(translate::openai::models::openai_model_list(&pages)).into_response())
}

/// `GET /v1/models/{id}`.
async fn retrieve_model(app: &App, id: &str) -> Result<Response, ApiError> {
    let model = translate::common::model::normalize_model(id)?;
    let entry = get_json(app, format!("v1beta/models/{model}"), &model).await?;
    let object = translate::openai::models::openai_model(&entry).unwrap_or_else(
        || serde_json::json!({"id": model, "object": "model", "created": 0, "owned_by": "google"}),
    );
    Ok(axum::Json(object).into_response())
}

/// `POST /v1/embeddings`: one `embedContent`, or `batchEmbedContents` in slices of 100.
async fn create_embeddings(
    app: &App,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let extensions = request.extensions().clone();
    let embeddings: EmbeddingsRequest = read_json(request).await?;
    let plan = translate::openai::embeddings::plan(&embeddings)?;
    crate::auth::ensure_model_allowed(&extensions, &plan.model)?;
    if let Some(meter) = meter.as_mut() {
        meter.set_model(&plan.model);
    }
    let mut vectors = Vec::with_capacity(plan.inputs.len());
    for (path, body) in plan.upstream_calls() {
        let body =
            serde_json::to_vec(&body).map_err(|error| ApiError::Internal(error.to_string()))?;
        let outgoing = Outgoing {
            method: Method::POST,
            path_and_query: path,
            headers: json_headers(),
            body: Bytes::from(body),
            streaming: false,
            model: Some(plan.model.clone()),
            project: None,
        };
        let committed = app
            .send_with_failover(&outgoing)
            .await
            .map_err(|failure| upstream_error(failure, &plan.model))?;
        if let Some(meter) = meter.as_mut() {
            meter.set_key(&committed.key);
        }
        let answer = read_limited(committed.response, ANSWER_LIMIT).await?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string()))?;
        vectors.extend(EmbeddingsPlan::vectors_of(&answer)?);
    }
    if vectors.len() != plan.inputs.len() {
        return Err(ApiError::UpstreamInvalidResponse(format!(
            "{} vectors for {} inputs",
            vectors.len(),
            plan.inputs.len()
        )));
    }
    Ok(axum::Json(plan.response(vectors)).into_response())
}
