//! OpenAI `chat.completions` request → Gemini `GenerateContentRequest` (translation.md §3–§4).
//!
//! Everything the gateway can tell is wrong is refused here with a 400 naming the field, so a bad
//! request never reaches (and is never billed by) the upstream.

mod conversation;
mod generation;
mod tools;
mod validate;

use crate::common::model::{ModelFamily, normalize_model};
use crate::common::signatures::CallMemory;
use crate::error::TranslateError;
use crate::gemini::request::GenerateContentRequest;
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
    /// The `GenerateContentRequest` body, serialised by whoever sends it.
    pub body: GenerateContentRequest,
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

/// Translates a chat request. It is consumed: the user messages' text and inline media move
/// into the Gemini body instead of being copied, so that a request carrying a hundred megabytes
/// never exists twice.
pub fn translate_chat_request(
    mut request: ChatCompletionRequest,
    memory: &dyn CallMemory,
) -> Result<GeminiChatRequest, TranslateError> {
    let request = &mut request;
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

    let (system_instruction, contents) =
        assemble_conversation(&mut request.messages, family, memory)?;
    let (tools, declared) = translate_tools(request)?;
    let tool_choice = translate_tool_choice(request, &declared)?;
    let tools = match &tool_choice {
        Some(ToolChoice::OnlyDeclared(names)) => keep_only(tools, names),
        _ => tools,
    };
    let generation_config = generation_config(request, &model, family, google.as_ref())?;
    let extension = |snake, camel| {
        google
            .as_ref()
            .and_then(|google| field(google, snake, camel))
            .cloned()
    };
    let body = GenerateContentRequest {
        contents,
        system_instruction,
        tools,
        tool_config: tool_choice.map(ToolChoice::into_config),
        generation_config,
        cached_content: extension("cached_content", "cachedContent"),
        safety_settings: extension("safety_settings", "safetySettings"),
        extra: Default::default(),
    };
    Ok(GeminiChatRequest {
        model,
        stream,
        include_usage: request
            .stream_options
            .as_ref()
            .is_some_and(|options| options.include_usage),
        logprobs: request.logprobs.unwrap_or(false),
        body,
    })
}

#[cfg(test)]
mod tests;
