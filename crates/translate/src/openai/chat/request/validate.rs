//! Request fields the gateway refuses or reads before translating (their semantics have no
//! Gemini equivalent, or they carry Google-specific extensions).

use serde_json::Value;

use crate::error::TranslateError;
use crate::openai::chat::types::{ChatCompletionRequest, Stop};

/// The most candidates the gateway asks for (Google documents no maximum; 8 is conservative).
pub(crate) const MAX_CANDIDATES: u32 = 8;
/// Gemini allows at most five stop sequences.
pub(crate) const MAX_STOP_SEQUENCES: usize = 5;

/// Parameters whose silent omission would change what the client gets, and values outside the
/// ranges both APIs document (refused here, so they never cost an upstream call).
pub(crate) fn refuse_semantic_changes(
    request: &ChatCompletionRequest,
) -> Result<(), TranslateError> {
    if request.messages.is_empty() {
        return Err(TranslateError::invalid(
            "'messages' must hold at least one message.",
            "messages",
        ));
    }
    for (value, range, param) in [
        (request.temperature, 0.0..=2.0, "temperature"),
        (request.top_p, 0.0..=1.0, "top_p"),
        (request.presence_penalty, -2.0..=2.0, "presence_penalty"),
        (request.frequency_penalty, -2.0..=2.0, "frequency_penalty"),
    ] {
        if let Some(value) = value
            && !range.contains(&value)
        {
            return Err(TranslateError::invalid(
                format!(
                    "'{param}' must be between {} and {}.",
                    range.start(),
                    range.end()
                ),
                param,
            ));
        }
    }
    if let Some(unknown) = request
        .modalities
        .iter()
        .flatten()
        .find(|m| !matches!(m.as_str(), "text" | "audio"))
    {
        return Err(TranslateError::invalid(
            format!("'{unknown}' is not a modality ('text' or 'audio')."),
            "modalities",
        ));
    }
    if let Some(n) = request.n
        && !(1..=MAX_CANDIDATES).contains(&n)
    {
        return Err(TranslateError::invalid(
            format!("'n' must be between 1 and {MAX_CANDIDATES}."),
            "n",
        ));
    }
    if let Some(Stop::Many(stops)) = &request.stop
        && stops.len() > MAX_STOP_SEQUENCES
    {
        return Err(TranslateError::invalid(
            format!("'stop' may hold at most {MAX_STOP_SEQUENCES} sequences."),
            "stop",
        ));
    }
    if let Some(top) = request.top_logprobs {
        if !request.logprobs.unwrap_or(false) {
            return Err(TranslateError::invalid(
                "'top_logprobs' requires 'logprobs' to be true.",
                "top_logprobs",
            ));
        }
        if top > 20 {
            return Err(TranslateError::invalid(
                "'top_logprobs' must be between 0 and 20.",
                "top_logprobs",
            ));
        }
    }
    if request
        .logit_bias
        .as_ref()
        .is_some_and(|bias| !bias.is_empty())
    {
        return Err(TranslateError::invalid(
            "'logit_bias' is not supported by Gemini models.",
            "logit_bias",
        ));
    }
    if request
        .modalities
        .as_ref()
        .is_some_and(|modalities| modalities.iter().any(|m| m == "audio"))
    {
        return Err(TranslateError::invalid(
            "Audio output is not supported by this gateway.",
            "modalities",
        ));
    }
    Ok(())
}

/// Google extensions: `extra_body.google` (Google's documented double nesting) wins over a
/// top-level `google` (what `extra_body={"google": …}` in the OpenAI SDK sends).
pub(crate) fn google_extensions(request: &ChatCompletionRequest) -> Option<Value> {
    request
        .extra_body
        .as_ref()
        .and_then(|extra| extra.get("google"))
        .or(request.google.as_ref())
        .filter(|google| google.is_object())
        .cloned()
}

/// A field under its snake_case or camelCase name (Google accepts both).
pub(crate) fn field<'a>(object: &'a Value, snake: &str, camel: &str) -> Option<&'a Value> {
    object.get(snake).or_else(|| object.get(camel))
}

// ---------------------------------------------------------------------------------------------
// Conversation (§4)
// ---------------------------------------------------------------------------------------------
