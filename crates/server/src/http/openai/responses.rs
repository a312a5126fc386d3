//! OpenAI's Responses API: `POST /v1/responses` (plain and streamed), `GET /v1/responses/{id}`,
//! `GET /v1/responses/{id}/input_items`, `DELETE /v1/responses/{id}` and
//! `POST /v1/responses/{id}/cancel`.
//!
//! A request is translated by `translate::openai::responses` (through the chat rules), sent with
//! the same failover and stream commit point as chat, and its answer turned into Responses output
//! by one state machine for both forms. With `store` (OpenAI's default) the response and its
//! input are kept (see `response_store`) for `previous_response_id`, `item_reference` and the
//! `GET` routes; they belong to the client key that made them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::Method;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use translate::openai::responses::request::{
    History, items_to_store, referenced_ids, translate_responses_request,
};
use translate::openai::responses::stream::{
    OutputOptions, ResponseStream, response_from_answer, visible,
};
use translate::openai::responses::types::{CreateResponse, Response as ResponseObject};

use crate::http::error::ApiError;
use crate::http::native::client_id;
use crate::http::openai::common::{
    open_metered_stream, read_metered_answer, read_sized_json, sse_response, unix_now,
    upstream_request,
};
use crate::service::accounting::RequestMeter;
use crate::service::relay::{StreamFault, UpstreamEvent};
use crate::service::response_store::{StoredResponse, new_id};
use crate::service::upstream::Outgoing;
use crate::state::{App, AppState};

/// Items `input_items` lists at most per page.
const MAX_PAGE: usize = 100;

/// Dispatches a Responses route.
pub async fn handle(
    state: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let rest = request.uri().path().trim_start_matches("/v1/").to_owned();
    let method = request.method().clone();
    let mut segments = rest.split('/').skip(1);
    let id = segments.next().map(str::to_owned);
    let tail = segments.next().map(str::to_owned);
    let more = segments.next().is_some();
    let owner = client_id(&request);
    let query = request.uri().query().unwrap_or("").to_owned();
    match (method, id.as_deref(), tail.as_deref(), more) {
        (Method::POST, None, None, false) => create(state, request, meter).await,
        (Method::GET, Some(id), None, false) => retrieve(state, id, owner, &query).await,
        (Method::DELETE, Some(id), None, false) => delete(state, id, owner).await,
        (Method::GET, Some(id), Some("input_items"), false) => {
            input_items(state, id, owner, &query).await
        }
        (Method::POST, Some(id), Some("cancel"), false) => cancel(state, id, owner).await,
        (method, _, _, _) => Err(ApiError::NotFound(format!(
            "{method} /v1/{rest} is not an OpenAI-compatible route of this gateway."
        ))),
    }
}

/// How long stored responses are kept: the request log's retention.
fn retention(app: &App) -> Duration {
    Duration::from_secs(u64::from(app.accountant.retention_days()) * 86_400)
}

fn now_ms() -> u64 {
    unix_now().saturating_mul(1000)
}

fn storage_error(error: store::StorageError) -> ApiError {
    ApiError::Internal(format!("stored responses: {error}"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Response with id '{id}' not found."))
}

/// The stored response `id` of `owner`, or OpenAI's 404.
async fn stored(app: &App, id: &str, owner: Option<i64>) -> Result<Arc<StoredResponse>, ApiError> {
    app.responses
        .get(id, owner, now_ms(), retention(app))
        .await
        .map_err(storage_error)?
        .ok_or_else(|| not_found(id))
}

/// Whether the query asks for `what` in `include` (`include=…` or `include[]=…`).
fn query_includes(query: &str, what: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes())
        .any(|(name, value)| (name == "include" || name == "include[]") && value == what)
}

/// `POST /v1/responses`.
async fn create(
    app: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let client = crate::http::auth::client(request.extensions());
    let owner = client.as_ref().map(|client| client.id);
    let (create, body_len): (CreateResponse, usize) = read_sized_json(request).await?;
    let (now, retention) = (now_ms(), retention(app));
    let mut history = History::default();
    if let Some(previous) = &create.previous_response_id {
        history.items = app
            .responses
            .conversation(previous, owner, now, retention)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::InvalidField {
                message: format!("Previous response with id '{previous}' not found."),
                param: Some("previous_response_id".to_owned()),
            })?;
    }
    for id in referenced_ids(&create) {
        if let Some(item) = app
            .responses
            .item(&id, owner, now, retention)
            .await
            .map_err(storage_error)?
        {
            history.by_id.insert(id, item);
        }
    }
    let mut translated = translate_responses_request(&create, &history, &*app.calls)?;
    crate::http::auth::ensure_model_allowed(client.as_deref(), &translated.model)?;
    if let Some(meter) = meter.as_mut() {
        meter.set_model(&translated.model);
    }
    let outgoing = upstream_request(
        app,
        client.map(|client| client.id),
        &mut translated,
        body_len,
    )?;
    let frame = ResponseObject::started(
        &create,
        new_id("resp"),
        translated.model.clone(),
        unix_now(),
    );
    let summary = create
        .reasoning
        .as_ref()
        .and_then(|reasoning| {
            reasoning
                .get("summary")
                .or_else(|| reasoning.get("generate_summary"))
        })
        .and_then(Value::as_str);
    let options = OutputOptions {
        summaries: summary.is_some_and(|summary| summary != "none"),
        signatures: create.includes("reasoning.encrypted_content"),
    };
    let keep = create.is_stored().then(|| Keep {
        owner,
        input_items: items_to_store(&create, &history, &mut new_id),
    });
    drop(create);
    if translated.stream {
        return stream(app, &outgoing, frame, options, keep, meter.take()).await;
    }
    let answer = read_metered_answer(app, &outgoing, &translated.model, meter).await?;
    if let (Some(meter), Some(usage)) = (meter.as_mut(), &answer.usage_metadata) {
        meter.set_usage(usage);
    }
    let (response, calls) = response_from_answer(frame, options, &answer, &mut new_id);
    app.calls.remember(calls);
    let shown = visible(&response, options.signatures);
    if let Some(keep) = keep {
        keep.save(app, response).await;
    }
    Ok(axum::Json(shown).into_response())
}

/// What to store of a response once it ends.
struct Keep {
    owner: Option<i64>,
    input_items: Vec<Value>,
}

impl Keep {
    async fn save(self, app: &App, response: ResponseObject) {
        let stored = StoredResponse::new(self.owner, now_ms(), response, self.input_items);
        app.responses.save(stored).await;
    }
}

/// A streamed response: OpenAI's events, each as `event: <type>` and `data: <json>`.
async fn stream(
    app: &AppState,
    outgoing: &Outgoing,
    frame: ResponseObject,
    options: OutputOptions,
    keep: Option<Keep>,
    meter: Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let (opened, mut meter) = open_metered_stream(app, outgoing, &frame.model, meter).await?;
    let upstream = crate::service::relay::upstream_events(opened, app.relay.stream_ends());
    let app = app.clone();
    let events = async_stream::stream! {
        let mut machine = ResponseStream::new(frame, options);
        futures_util::pin_mut!(upstream);
        while let Some(step) = upstream.next().await {
            let events = match step {
                UpstreamEvent::Data(data) => machine.on_data(&data, &mut new_id),
                UpstreamEvent::Finished => machine.finish(&mut new_id),
                UpstreamEvent::Fault(fault) => {
                    let code = match fault {
                        StreamFault::ShuttingDown => "gateway_shutting_down",
                        StreamFault::Oversized | StreamFault::Broken => "server_error",
                    };
                    machine.fail(code, &fault.message())
                }
            };
            for event in events {
                yield Ok::<Event, Infallible>(sse_event(&event));
            }
            app.calls.remember(machine.take_remembered());
            if let (Some(meter), Some(usage)) = (meter.as_mut(), machine.usage()) {
                meter.set_usage(usage);
            }
            if machine.is_ended() {
                break;
            }
        }
        // A client that went away stops this stream before here: what it never saw is not
        // stored, as at OpenAI (a response is stored once it ends).
        if let Some(keep) = keep {
            keep.save(&app, machine.response().clone()).await;
        }
    };
    Ok(sse_response(events))
}

/// One Responses event: its type as the SSE event name, the whole event as data.
fn sse_event(event: &Value) -> Event {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Event::default().event(kind).data(event.to_string())
}

/// `GET /v1/responses/{id}`.
async fn retrieve(
    app: &App,
    id: &str,
    owner: Option<i64>,
    query: &str,
) -> Result<Response, ApiError> {
    let stored = stored(app, id, owner).await?;
    let signatures = query_includes(query, "reasoning.encrypted_content");
    Ok(axum::Json(visible(&stored.response, signatures)).into_response())
}

/// `DELETE /v1/responses/{id}`.
async fn delete(app: &App, id: &str, owner: Option<i64>) -> Result<Response, ApiError> {
    let deleted = app
        .responses
        .delete(id, owner, now_ms(), retention(app))
        .await
        .map_err(storage_error)?;
    if !deleted {
        return Err(not_found(id));
    }
    app.announce_response_deleted(id);
    Ok(
        axum::Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
            .into_response(),
    )
}

/// `POST /v1/responses/{id}/cancel`: only background responses can be cancelled, and this
/// gateway makes none.
async fn cancel(app: &App, id: &str, owner: Option<i64>) -> Result<Response, ApiError> {
    stored(app, id, owner).await?;
    Err(ApiError::InvalidField {
        message: "Only responses created with 'background' can be cancelled.".to_owned(),
        param: None,
    })
}

/// `GET /v1/responses/{id}/input_items`: OpenAI's list page (`limit` 1–100, default 20;
/// `order` `desc` (default) or `asc`; `after` an item id).
async fn input_items(
    app: &App,
    id: &str,
    owner: Option<i64>,
    query: &str,
) -> Result<Response, ApiError> {
    let stored = stored(app, id, owner).await?;
    let mut limit = 20;
    let mut ascending = false;
    let mut after = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=MAX_PAGE).contains(limit))
                    .ok_or_else(|| ApiError::InvalidField {
                        message: format!("'limit' must be between 1 and {MAX_PAGE}."),
                        param: Some("limit".to_owned()),
                    })?;
            }
            "order" => {
                ascending = match value.as_ref() {
                    "asc" => true,
                    "desc" => false,
                    _ => {
                        return Err(ApiError::InvalidField {
                            message: "'order' must be 'asc' or 'desc'.".to_owned(),
                            param: Some("order".to_owned()),
                        });
                    }
                }
            }
            "after" => after = Some(value.into_owned()),
            _ => {}
        }
    }
    let mut items: Vec<&Value> = stored.input_items.iter().collect();
    if !ascending {
        items.reverse();
    }
    let start = match &after {
        Some(after) => items
            .iter()
            .position(|item| item.get("id").and_then(Value::as_str) == Some(after))
            .map_or(items.len(), |at| at + 1),
        None => 0,
    };
    let page: Vec<Value> = items
        .iter()
        .skip(start)
        .take(limit)
        .map(|item| (*item).clone())
        .collect();
    let has_more = start + page.len() < items.len();
    let id_of = |item: Option<&Value>| item.and_then(|item| item.get("id")).cloned();
    Ok(axum::Json(json!({
        "object": "list",
        "first_id": id_of(page.first()),
        "last_id": id_of(page.last()),
        "has_more": has_more,
        "data": page,
    }))
    .into_response())
}
