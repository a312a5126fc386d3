//! Gemini `GenerateContentResponse` → OpenAI `chat.completion` (translation.md §5).

use serde_json::{Value, json};

use crate::common::signatures::RememberedCall;
use crate::error::TranslateError;
use crate::gemini::{
    Candidate, FinishReason as GeminiFinish, GenerateContentResponse, Part, UsageMetadata,
};
use crate::openai::chat::types::{
    AssistantMessage, ChatCompletion, Choice, CompletionTokensDetails, FinishReason, FunctionOut,
    PromptTokensDetails, ToolCallOut, Usage,
};

/// What the response needs from the request.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// The normalised requested model (echoed instead of `modelVersion`, so cost trackers see
    /// what the client sent).
    pub model: String,
    /// Unix seconds, taken by the gateway.
    pub created: u64,
    /// Whether the client asked for log probabilities.
    pub logprobs: bool,
}

/// A tool call returned to the client, with what must be remembered to accept it back.
pub type EmittedCall = (String, RememberedCall);

/// Maps a Gemini finish reason. Every Gemini value has its own arm: a wildcard once let
/// RECITATION turn into a tool call in another gateway.
pub fn map_finish_reason(reason: Option<GeminiFinish>, saw_function_call: bool) -> FinishReason {
    let stop = if saw_function_call {
        FinishReason::ToolCalls
    } else {
        FinishReason::Stop
    };
    match reason {
        Some(GeminiFinish::Stop) => stop,
        Some(GeminiFinish::MaxTokens) => FinishReason::Length,
        Some(
            GeminiFinish::Safety
            | GeminiFinish::Recitation
            | GeminiFinish::Blocklist
            | GeminiFinish::ProhibitedContent
            | GeminiFinish::Spii
            | GeminiFinish::Language
            | GeminiFinish::ImageSafety
            | GeminiFinish::ImageProhibitedContent
            | GeminiFinish::ImageRecitation
            | GeminiFinish::ImageOther
            | GeminiFinish::NoImage
            | GeminiFinish::Other,
        ) => FinishReason::ContentFilter,
        Some(
            GeminiFinish::MalformedFunctionCall
            | GeminiFinish::UnexpectedToolCall
            | GeminiFinish::TooManyToolCalls
            | GeminiFinish::MissingThoughtSignature
            | GeminiFinish::FinishReasonUnspecified
            | GeminiFinish::Unknown,
        )
        | None => stop,
    }
}

/// Maps `usageMetadata`. Reasoning is counted inside `completion_tokens`, as OpenAI does;
/// `cachedContentTokenCount` is already part of `promptTokenCount`.
pub fn map_usage(usage: Option<&UsageMetadata>) -> Usage {
    let Some(usage) = usage else {
        return Usage::default();
    };
    let audio = |details: &[crate::gemini::ModalityTokenCount]| {
        details
            .iter()
            .filter(|d| d.modality == "AUDIO")
            .map(|d| d.token_count)
            .sum()
    };
    let prompt = usage.prompt_token_count + usage.tool_use_prompt_token_count;
    let completion = usage.candidates_token_count + usage.thoughts_token_count;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: if usage.total_token_count > 0 {
            usage.total_token_count
        } else {
            prompt + completion
        },
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: usage.cached_content_token_count,
            audio_tokens: audio(&usage.prompt_tokens_details),
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: usage.thoughts_token_count,
            audio_tokens: audio(&usage.candidates_tokens_details),
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

/// What one part contributes to the answer.
pub enum PartOutput {
    /// Visible text.
    Content(String),
    /// A thought summary.
    Reasoning(String),
    /// A function call (its OpenAI form, without `index`), and what to remember of it.
    ToolCall(ToolCallOut, EmittedCall),
    /// Nothing (empty text, such as Gemini 3's `{"text": "", "thoughtSignature": …}`
    /// terminator, or a part kind with no OpenAI form).
    Nothing,
}

/// Converts one part. `new_id` makes an id for a call the upstream gave none.
pub fn convert_part(part: &Part, new_id: &mut dyn FnMut() -> String) -> PartOutput {
    if let Some(call) = &part.function_call {
        let upstream_id = call.id.clone().filter(|id| !id.is_empty());
        let id = upstream_id.clone().unwrap_or_else(new_id);
        // Arguments keep the upstream's key order (serde_json's `preserve_order`); proto3 may
        // leave out an empty `args`.
        let arguments = call
            .args
            .as_ref()
            .map_or_else(|| "{}".to_owned(), Value::to_string);
        let extra_content = part
            .thought_signature
            .as_ref()
            .map(|signature| json!({"google": {"thought_signature": signature}}));
        let remembered = RememberedCall {
            signature: part.thought_signature.clone(),
            upstream_id: upstream_id.is_some(),
        };
        let tool_call = ToolCallOut {
            index: None,
            id: id.clone(),
            kind: "function",
            function: FunctionOut {
                name: call.name.clone(),
                arguments,
            },
            extra_content,
        };
        return PartOutput::ToolCall(tool_call, (id, remembered));
    }
    if let Some(text) = part.text.as_deref().filter(|text| !text.is_empty()) {
        return if part.thought {
            PartOutput::Reasoning(text.to_owned())
        } else {
            PartOutput::Content(text.to_owned())
        };
    }
    if let Some(data) = &part.inline_data
        && data.mime_type.starts_with("image/")
    {
        return PartOutput::Content(format!(
            "![image](data:{};base64,{})",
            data.mime_type, data.data
        ));
    }
    if let Some(code) = &part.executable_code {
        let language = code.language.to_ascii_lowercase();
        return PartOutput::Content(format!("\n```{language}\n{}\n```\n", code.code));
    }
    if let Some(result) = &part.code_execution_result {
        return PartOutput::Content(format!("\n```output\n{}\n```\n", result.output));
    }
    PartOutput::Nothing
}

/// Converts a whole non-streamed answer.
pub fn chat_completion(
    response: &GenerateContentResponse,
    context: &ResponseContext,
    new_id: &mut dyn FnMut() -> String,
) -> Result<(ChatCompletion, Vec<EmittedCall>), TranslateError> {
    let mut emitted = Vec::new();
    let blocked = response.is_prompt_blocked();
    let choices = if response.candidates.is_empty() {
        if !blocked {
            return Err(TranslateError::UpstreamResponse(
                "the answer has neither candidates nor prompt feedback".to_owned(),
            ));
        }
        // A blocked prompt is a 200 with one empty, filtered choice.
        vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: None,
                refusal: None,
                reasoning_content: None,
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: FinishReason::ContentFilter,
        }]
    } else {
        let mut candidates: Vec<&Candidate> = response.candidates.iter().collect();
        candidates.sort_by_key(|candidate| candidate.index);
        candidates
            .into_iter()
            .map(|candidate| choice(candidate, context, new_id, &mut emitted))
            .collect()
    };
    let id = response.completion_id(new_id);
    let completion = ChatCompletion {
        id,
        object: "chat.completion",
        created: context.created,
        model: context.model.clone(),
        choices,
        usage: map_usage(response.usage_metadata.as_ref()),
    };
    Ok((completion, emitted))
}

fn choice(
    candidate: &Candidate,
    context: &ResponseContext,
    new_id: &mut dyn FnMut() -> String,
    emitted: &mut Vec<EmittedCall>,
) -> Choice {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let parts = candidate
        .content
        .as_ref()
        .map(|c| c.parts.as_slice())
        .unwrap_or_default();
    for part in parts {
        match convert_part(part, new_id) {
            PartOutput::Content(text) => content.push_str(&text),
            PartOutput::Reasoning(text) => reasoning.push_str(&text),
            PartOutput::ToolCall(call, remembered) => {
                tool_calls.push(call);
                emitted.push(remembered);
            }
            PartOutput::Nothing => {}
        }
    }
    let finish_reason = map_finish_reason(candidate.finish_reason, !tool_calls.is_empty());
    // No text: null when the answer is tool calls or was filtered, "" otherwise (OpenAI's own
    // shape for a reasoning model that spent its whole budget thinking).
    let content = if !content.is_empty() {
        Some(content)
    } else if !tool_calls.is_empty() || finish_reason == FinishReason::ContentFilter {
        None
    } else {
        Some(String::new())
    };
    Choice {
        index: candidate.index,
        message: AssistantMessage {
            role: "assistant",
            content,
            refusal: None,
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        },
        logprobs: if context.logprobs {
            candidate.logprobs_result.as_ref().map(map_logprobs)
        } else {
            None
        },
        finish_reason,
    }
}

fn map_logprobs(result: &crate::gemini::LogprobsResult) -> Value {
    let entry = |token: &str, logprob: f64| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
    let content: Vec<Value> = result
        .chosen_candidates
        .iter()
        .enumerate()
        .map(|(i, chosen)| {
            let mut item = entry(&chosen.token, chosen.log_probability);
            let top: Vec<Value> = result
                .top_candidates
                .get(i)
                .map(|top| {
                    top.candidates
                        .iter()
                        .map(|c| entry(&c.token, c.log_probability))
                        .collect()
                })
                .unwrap_or_default();
            item["top_logprobs"] = Value::Array(top);
            item
        })
        .collect();
    json!({"content": content, "refusal": null})
}
