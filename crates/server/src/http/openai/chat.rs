//! `POST /v1/chat/completions`, whole and streamed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use translate::openai::chat::request::translate_chat_request;
use translate::openai::chat::response::{ResponseContext, chat_completion};
use translate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};
use translate::openai::chat::types::ChatCompletionRequest;

use super::common::*;
use crate::http::error::ApiError;
use crate::service::accounting::RequestMeter;
use crate::service::relay::UpstreamEvent;
use crate::service::upstream::Outgoing;
use crate::state::{App, AppState};

pub(crate) async fn create_chat_completion(
    app: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let client = crate::http::auth::client(request.extensions());
    let (chat, body_len): (ChatCompletionRequest, usize) = read_sized_json(request).await?;
    // A request may carry a hundred megabytes of inline media: the translation moves its text
    // and media out of the OpenAI request instead of copying them, and the Gemini body is freed
    // once serialised, so at most two copies of those bytes exist at any time and one is held
    // while the upstream answers.
    let mut translated = translate_chat_request(chat, &*app.calls)?;
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
    if translated.stream {
        let context = StreamContext {
            model: translated.model,
            created: unix_now(),
            include_usage: translated.include_usage,
        };
        return stream_chat_completion(app, &outgoing, context, meter.take()).await;
    }
    let answer = read_metered_answer(app, &outgoing, &translated.model, meter).await?;
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

pub(crate) async fn stream_chat_completion(
    app: &App,
    outgoing: &Outgoing,
    context: StreamContext,
    meter: Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let (opened, mut meter) = open_metered_stream(app, outgoing, &context.model, meter).await?;
    let upstream = crate::service::relay::upstream_events(opened, app.relay.stream_ends());
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
