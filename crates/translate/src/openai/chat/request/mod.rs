//! OpenAI `chat.completions` request → Gemini `GenerateContentRequest` (translation.md §3–§4).
//!
//! Everything the gateway can tell is wrong is refused here with a 400 naming the field, so a bad
//! request never reaches (and is never billed by) the upstream.

mod conversation;
mod generation;
mod tools;
mod validate;

use serde_json::{Map, Value};

use crate::common::model::{ModelFamily, normalize_model};
use crate::common::signatures::CallMemory;
use crate::error::TranslateError;
use crate::openai::chat::types::ChatCompletionRequest;
use conversation::assemble_conversation;
use generation::generation_config;
use tools::{ToolChoice, keep_only, translate_tool_choice, translate_tools};
use validate::{field, google_extensions, refuse_semantic_changes};

/// A translated chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiChatRequest {
    /// The normalised model id (echoed in the response's `model`).
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the stream ends with a usage chunk.
    pub include_usage: bool,
    /// Whether the client asked for log probabilities.
    pub logprobs: bool,
    /// The `GenerateContentRequest` body.
    pub body: Value,
}

impl GeminiChatRequest {
    /// The upstream path (below the origin): `generateContent`, or `streamGenerateContent` with
    /// `alt=sse` (without it, Gemini streams one JSON array).
    pub fn upstream_path(&self) -> String {
        if self.stream {
            format!("v1beta/models/{}:streamGenerateContent?alt=sse", self.model)
        } else {
            format!("v1beta/models/{}:generateContent", self.model)
        }
    }
}

/// Translates a chat request.
pub fn translate_chat_request(
    request: &ChatCompletionRequest,
    memory: &dyn CallMemory,
) -> Result<GeminiChatRequest, TranslateError> {
    let model = normalize_model(&request.model)?;
    let family = ModelFamily::of(&model);
    let stream = request.stream.unwrap_or(false);
    if request.stream_options.is_some() && !stream {
        return Err(TranslateError::invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ));
    }
    refuse_semantic_changes(request)?;
    let google = google_extensions(request);

    let mut body = Map::new();
    let (system, contents) = assemble_conversation(&request.messages, family, memory)?;
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = system {
        body.insert("systemInstruction".into(), system);
    }
    let (tools, declared) = translate_tools(request)?;
    let tool_config = translate_tool_choice(request, &declared)?;
    let tools = match &tool_config {
        Some(ToolChoice::OnlyDeclared(names)) => keep_only(tools, names),
        _ => tools,
    };
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(config) = tool_config.and_then(ToolChoice::into_config) {
        body.insert("toolConfig".into(), config);
    }
    let generation = generation_config(request, &model, family, google.as_ref())?;
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    if let Some(google) = &google {
        if let Some(cached) = field(google, "cached_content", "cachedContent") {
            body.insert("cachedContent".into(), cached.clone());
        }
        if let Some(safety) = field(google, "safety_settings", "safetySettings") {
            body.insert("safetySettings".into(), safety.clone());
        }
    }
    Ok(GeminiChatRequest {
        model,
        stream,
        include_usage: request
            .stream_options
            .as_ref()
            .is_some_and(|options| options.include_usage),
        logprobs: request.logprobs.unwrap_or(false),
        body: Value::Object(body),
    })
}

#[cfg(test)]
mod tests;
