//! `POST /v1/completions`, OpenAI's legacy Completions API: each prompt is a chat request (see
//! `translate::openai::completions`) sent with the chat route's failover and commit point; the
//! answers, whole or streamed, are written as one `text_completion`. Several prompts are sent one
//! after the other, so that their choices stream in OpenAI's order.

use std::convert::Infallible;

use axum::extract::Request;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use translate::gemini::UsageMetadata;
use translate::openai::chat::request::{GeminiChatRequest, translate_chat_request};
use translate::openai::chat::response::{ResponseContext, chat_completion};
use translate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};
use translate::openai::completions::{CompletionChunks, CompletionRequest, plan};
use translate::openai::errors::OpenAiError;

use crate::http::error::ApiError;
use crate::http::openai::common::{
    new_call_id, open_metered_stream, open_stream, read_json, read_metered_answer, sse_response,
    stream_fault_error, unix_now, upstream_error, upstream_request,
};
use crate::service::accounting::RequestMeter;
use crate::service::relay::{Attempts, UpstreamEvent};
use crate::state::AppState;

/// One prompt's request, translated.
struct Prompt {
    translated: GeminiChatRequest,
    echo: Option<String>,
}

/// `cmpl-` and 24 random alphanumerics.
fn new_completion_id() -> String {
    new_call_id().replacen("call_", "cmpl-", 1)
}

/// Adds `more` to `total` (the usage of several prompts).
fn add_usage(total: &mut UsageMetadata, more: &UsageMetadata) {
    total.prompt_token_count += more.prompt_token_count;
    total.candidates_token_count += more.candidates_token_count;
    total.total_token_count += more.total_token_count;
    total.thoughts_token_count += more.thoughts_token_count;
    total.tool_use_prompt_token_count += more.tool_use_prompt_token_count;
    total.cached_content_token_count += more.cached_content_token_count;
}

/// `POST /v1/completions`.
pub async fn create(
    app: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let authenticated = crate::http::auth::client(request.extensions());
    let client = authenticated.as_ref().map(|client| client.id);
    let completion: CompletionRequest = read_json(request).await?;
    let mut prompts = Vec::new();
    for planned in plan(&completion)? {
        prompts.push(Prompt {
            translated: translate_chat_request(planned.chat, &*app.calls)?,
            echo: planned.echo,
        });
    }
    let per_prompt = completion.n.unwrap_or(1);
    drop(completion);
    let Some(first) = prompts.first() else {
        return Err(ApiError::Internal(
            "a completion without a prompt".to_owned(),
        ));
    };
    let model = first.translated.model.clone();
    crate::http::auth::ensure_model_allowed(authenticated.as_deref(), &model)?;
    if let Some(meter) = meter.as_mut() {
        meter.set_model(&model);
    }
    if first.translated.stream {
        return stream(app, client, prompts, model, per_prompt, meter.take()).await;
    }
    let id = new_completion_id();
    let mut answers = Vec::with_capacity(prompts.len());
    let mut usage = UsageMetadata::default();
    for mut prompt in prompts {
        let outgoing = upstream_request(app, client, &mut prompt.translated, 0)?;
        let answer = read_metered_answer(app, &outgoing, &model, meter).await?;
        if let Some(more) = &answer.usage_metadata {
            add_usage(&mut usage, more);
            if let Some(meter) = meter.as_mut() {
                meter.set_usage(&usage);
            }
        }
        let context = ResponseContext {
            model: model.clone(),
            created: unix_now(),
            logprobs: prompt.translated.logprobs,
        };
        let (chat, _) = chat_completion(&answer, &context, &mut new_call_id)?;
        answers.push((chat, prompt.echo));
    }
    let completion = translate::openai::completions::completion_from_chats(&id, &answers);
    Ok(axum::Json(completion).into_response())
}

/// A streamed completion: each prompt's stream in turn, then the usage chunk (when asked
/// for) and `[DONE]`. The first prompt's stream opens before the answer starts, so that its
/// failure is an HTTP error; a later prompt's failure is an error event.
async fn stream(
    app: &AppState,
    client: Option<i64>,
    mut prompts: Vec<Prompt>,
    model: String,
    per_prompt: u32,
    meter: Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let include_usage = prompts
        .first()
        .is_some_and(|prompt| prompt.translated.include_usage);
    let mut outgoing = Vec::with_capacity(prompts.len());
    for prompt in &mut prompts {
        outgoing.push(upstream_request(app, client, &mut prompt.translated, 0)?);
    }
    let (first, mut meter) = open_metered_stream(app, &outgoing[0], &model, meter).await?;
    let app = app.clone();
    let events = async_stream::stream! {
        let mut chunks = CompletionChunks::new(new_completion_id(), unix_now(), model.clone(), per_prompt);
        let mut spent = UsageMetadata::default();
        let mut opened = Some(first);
        for (index, (prompt, outgoing)) in prompts.into_iter().zip(&outgoing).enumerate() {
            let this = match opened.take() {
                Some(this) => this,
                None => {
                    let mut attempts = Attempts::default();
                    match open_stream(&app, outgoing, &mut attempts).await {
                        Ok(this) => this,
                        Err(failure) => {
                            let error = match upstream_error(failure, &model) {
                                ApiError::Upstream(error) => error,
                                other => OpenAiError::new(
                                    other.status().as_u16(),
                                    "server_error",
                                    None,
                                    other.to_string(),
                                ),
                            };
                            yield Ok::<Event, Infallible>(Event::default().data(error.body().to_string()));
                            return;
                        }
                    }
                }
            };
            chunks.start_prompt(u32::try_from(index).unwrap_or(u32::MAX), prompt.echo);
            let mut translator = StreamTranslator::new(StreamContext {
                model: model.clone(),
                created: unix_now(),
                include_usage: true,
            });
            let upstream = crate::service::relay::upstream_events(this, app.relay.stream_ends());
            futures_util::pin_mut!(upstream);
            while let Some(step) = upstream.next().await {
                let items = match step {
                    UpstreamEvent::Data(data) => translator.on_event(&data, &mut new_call_id),
                    UpstreamEvent::Finished => translator.finish(),
                    UpstreamEvent::Fault(fault) => vec![StreamItem::Error(stream_fault_error(fault))],
                };
                for item in &items {
                    match item {
                        StreamItem::Chunk(chunk) => {
                            if let Some(chunk) = chunks.convert(chunk) {
                                yield Ok(Event::default().data(chunk.to_string()));
                            }
                        }
                        StreamItem::Error(error) => {
                            yield Ok(Event::default().data(error.body().to_string()));
                            return;
                        }
                        // One `[DONE]`, after the last prompt.
                        StreamItem::Done => {}
                    }
                }
                if let (Some(meter), Some(usage)) = (meter.as_mut(), translator.usage()) {
                    let mut total = spent.clone();
                    add_usage(&mut total, usage);
                    meter.set_usage(&total);
                }
                if translator.is_ended() {
                    break;
                }
            }
            if let Some(usage) = translator.usage() {
                add_usage(&mut spent, usage);
            }
        }
        if include_usage && let Some(chunk) = chunks.usage_chunk() {
            yield Ok(Event::default().data(chunk.to_string()));
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Ok(sse_response(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_several_prompts_adds_up() {
        let mut total = UsageMetadata::default();
        let one = UsageMetadata {
            prompt_token_count: 2,
            candidates_token_count: 3,
            total_token_count: 5,
            ..UsageMetadata::default()
        };
        add_usage(&mut total, &one);
        add_usage(&mut total, &one);
        assert_eq!((total.prompt_token_count, total.total_token_count), (4, 10));
    }
}
