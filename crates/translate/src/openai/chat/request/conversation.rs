//! The messages of a chat request as Gemini `contents` and a `systemInstruction`.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::common::media::MAX_INLINE_BYTES;
use crate::common::media::media_reference;
use crate::common::model::ModelFamily;
use crate::common::signatures::{CallMemory, SIGNATURE_SENTINEL};
use crate::error::TranslateError;
use crate::gemini::request::{
    Blob, Content, FileData, FunctionCall, FunctionResponse, Part, PartData, Role as GeminiRole,
};
use crate::openai::chat::types::{ChatMessage, Role, ToolCall};

/// Builds `systemInstruction` and `contents` from the messages; the user messages' contents are
/// moved out of them (see [`user_parts`]).
pub(crate) fn assemble_conversation(
    messages: &mut [ChatMessage],
    family: ModelFamily,
    memory: &dyn CallMemory,
) -> Result<(Option<Content>, Vec<Content>), TranslateError> {
    let mut system_parts = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    let mut inline_bytes = 0usize;
    let mut leading = true;
    let mut index = 0;
    while index < messages.len() {
        let param = format!("messages[{index}]");
        if messages[index].role == Role::User {
            leading = false;
            let parts = user_parts(&mut messages[index], &param, &mut inline_bytes)?;
            push_parts(&mut contents, GeminiRole::User, parts);
            index += 1;
            continue;
        }
        let message = &messages[index];
        match message.role {
            Role::System | Role::Developer => {
                let text = system_text(message, &param)?;
                if leading {
                    system_parts.push(Part::text(text));
                } else if !text.is_empty() {
                    // A later system message stays where it is, as user text: hoisting it would
                    // move it before the turns it was written after.
                    push_parts(&mut contents, GeminiRole::User, vec![Part::text(text)]);
                }
            }
            // Handled above, with the message borrowed mutably.
            Role::User => {}
            Role::Assistant => {
                leading = false;
                let parts = assistant_parts(message, &param, family, memory)?;
                let calls = message.tool_calls.as_deref().unwrap_or_default();
                push_parts(&mut contents, GeminiRole::Model, parts);
                if !calls.is_empty() {
                    let (responses, next) = tool_responses(messages, index, calls)?;
                    push_parts(&mut contents, GeminiRole::User, responses);
                    index = next;
                    continue;
                }
            }
            Role::Tool => {
                return Err(TranslateError::invalid(
                    "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'.",
                    format!("{param}.role"),
                ));
            }
            Role::Function => {
                leading = false;
                let name = message.name.clone().unwrap_or_default();
                if name.is_empty() {
                    return Err(TranslateError::invalid(
                        "A message with role 'function' needs a 'name'.",
                        format!("{param}.name"),
                    ));
                }
                let response = tool_response_value(message.content.as_ref());
                push_parts(
                    &mut contents,
                    GeminiRole::User,
                    vec![function_response(name, response)],
                );
            }
        }
        index += 1;
    }
    if inline_bytes > MAX_INLINE_BYTES {
        return Err(TranslateError::invalid(
            "Inline media in one request may be at most 100 MB; upload large files first.",
            "messages",
        ));
    }
    // A function-call turn must follow a user turn: a history that starts with the model (for
    // example truncated by the client) gets a placeholder user turn. Gemini also refuses an
    // empty `contents`, which OpenAI allows for a system-only request.
    if contents
        .first()
        .is_none_or(|content| content.role == Some(GeminiRole::Model))
    {
        contents.insert(
            0,
            Content {
                role: Some(GeminiRole::User),
                parts: vec![Part::text(".")],
            },
        );
    }
    // `systemInstruction` is a content without a role.
    let system = (!system_parts.is_empty()).then_some(Content {
        role: None,
        parts: system_parts,
    });
    Ok((system, contents))
}

/// Appends parts to the conversation, merging them into the previous content when it has the
/// same role (Gemini wants alternating turns). Empty parts lists add nothing.
pub(crate) fn push_parts(contents: &mut Vec<Content>, role: GeminiRole, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == Some(role) => last.parts.extend(parts),
        _ => contents.push(Content {
            role: Some(role),
            parts,
        }),
    }
}

/// The text of a system or developer message; non-text parts are refused.
pub(crate) fn system_text(message: &ChatMessage, param: &str) -> Result<String, TranslateError> {
    match &message.content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match part_type(part) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "System and developer messages may only contain text parts.",
                            format!("{param}.content[{j}]"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(TranslateError::invalid(
            "'content' must be a string or an array of content parts.",
            format!("{param}.content"),
        )),
    }
}

pub(crate) fn part_type(part: &Value) -> Option<&str> {
    part.get("type").and_then(Value::as_str)
}

/// Parts of a user message (§3.2). Its text and inline media are taken out of `message`, not
/// copied: they are most of a large request's bytes.
pub(crate) fn user_parts(
    message: &mut ChatMessage,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Vec<Part>, TranslateError> {
    match &mut message.content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => {
            Ok(owned_text_part(std::mem::take(text)).into_iter().collect())
        }
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter_mut().enumerate() {
                let part_param = format!("{param}.content[{j}]");
                if let Some(converted) = user_part(part, &part_param, inline_bytes)? {
                    out.push(converted);
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(
            "'content' must be a string or an array of content parts.",
            format!("{param}.content"),
        )),
    }
}

/// A text part, or nothing for empty text (Gemini refuses empty parts).
pub(crate) fn text_part(text: &str) -> Option<Part> {
    (!text.is_empty()).then(|| Part::text(text))
}

/// [`text_part`] of a string that is moved in, not copied.
fn owned_text_part(text: String) -> Option<Part> {
    (!text.is_empty()).then(|| Part::text(text))
}

/// The string at `value`, taken out of it (an empty one is left behind); `None` when `value`
/// is absent or not a string.
fn take_str(value: Option<&mut Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) => Some(std::mem::take(text)),
        _ => None,
    }
}

/// One part of a user message's content; its text and media data are taken out of `part`.
pub(crate) fn user_part(
    part: &mut Value,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Option<Part>, TranslateError> {
    let missing = |what: &str| {
        TranslateError::invalid(
            format!("The content part needs '{what}'."),
            format!("{param}.{what}"),
        )
    };
    let kind = part_type(part).map(str::to_owned);
    match kind.as_deref() {
        Some("text") => Ok(owned_text_part(
            take_str(part.get_mut("text")).unwrap_or_default(),
        )),
        Some("image_url") => {
            // `image_url` is an object with a `url`, or (leniently) the URL itself.
            let url = match part.get_mut("image_url") {
                Some(image) if image.get("url").is_some() => take_str(image.get_mut("url")),
                other => take_str(other),
            }
            .ok_or_else(|| missing("image_url.url"))?;
            media_reference(url, &format!("{param}.image_url.url"), inline_bytes).map(Some)
        }
        Some("input_audio") => {
            let audio = part
                .get_mut("input_audio")
                .ok_or_else(|| missing("input_audio"))?;
            let data =
                take_str(audio.get_mut("data")).ok_or_else(|| missing("input_audio.data"))?;
            let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
            *inline_bytes += data.len() / 4 * 3;
            Ok(Some(Part::new(PartData::InlineData(Blob {
                mime_type: format!("audio/{format}"),
                data,
            }))))
        }
        Some("file") => {
            let file = part.get_mut("file").ok_or_else(|| missing("file"))?;
            if let Some(data) = take_str(file.get_mut("file_data")) {
                return media_reference(data, &format!("{param}.file.file_data"), inline_bytes)
                    .map(Some);
            }
            let id = file
                .get("file_id")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("file.file_id"))?;
            let id = id.strip_prefix("files/").unwrap_or(id);
            let mime_type = file
                .get("mime_type")
                .or_else(|| file.get("format"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Some(Part::new(PartData::FileData(FileData {
                file_uri: format!("https://generativelanguage.googleapis.com/v1beta/files/{id}"),
                mime_type,
            }))))
        }
        Some(other) => Err(TranslateError::invalid(
            format!("Content parts of type '{other}' are not supported."),
            format!("{param}.type"),
        )),
        None => Err(TranslateError::invalid(
            "Each content part needs a 'type'.",
            format!("{param}.type"),
        )),
    }
}

/// Parts of an assistant message: its text, then one `functionCall` per tool call.
pub(crate) fn assistant_parts(
    message: &ChatMessage,
    param: &str,
    family: ModelFamily,
    memory: &dyn CallMemory,
) -> Result<Vec<Part>, TranslateError> {
    let mut parts = Vec::new();
    match &message.content {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => parts.extend(text_part(text)),
        Some(Value::Array(items)) => {
            for (j, item) in items.iter().enumerate() {
                let text = match part_type(item) {
                    Some("text") => item.get("text"),
                    Some("refusal") => item.get("refusal"),
                    _ => {
                        return Err(TranslateError::invalid(
                            "Assistant messages may only contain text and refusal parts.",
                            format!("{param}.content[{j}]"),
                        ));
                    }
                };
                parts.extend(text_part(text.and_then(Value::as_str).unwrap_or("")));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "'content' must be a string or an array of content parts.",
                format!("{param}.content"),
            ));
        }
    }
    let legacy = message.function_call.as_ref().map(|call| ToolCall {
        id: String::new(),
        kind: None,
        function: call.clone(),
        extra_content: None,
    });
    let calls: Vec<&ToolCall> = message
        .tool_calls
        .iter()
        .flatten()
        .chain(legacy.as_ref())
        .collect();
    let mut signed_first = false;
    for (k, call) in calls.iter().enumerate() {
        let call_param = format!("{param}.tool_calls[{k}]");
        let args = parse_arguments(
            call.function.arguments.as_ref(),
            &format!("{call_param}.function.arguments"),
        )?;
        let remembered = (!call.id.is_empty())
            .then(|| memory.recall(&call.id))
            .flatten();
        // Only an id Gemini issued itself may go back as `functionCall.id`.
        let id = remembered
            .as_ref()
            .is_some_and(|r| r.upstream_id)
            .then(|| call.id.clone());
        let mut part = Part::new(PartData::FunctionCall(FunctionCall {
            name: call.function.name.clone(),
            args,
            id,
        }));
        // The signature is a sibling of `functionCall` in the part: first what the client sent
        // back (Google's compat format), then what the gateway remembered.
        let signature = call
            .extra_content
            .as_ref()
            .and_then(|extra| extra.pointer("/google/thought_signature"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| remembered.and_then(|r| r.signature));
        if let Some(signature) = signature {
            part.thought_signature = Some(signature);
            signed_first |= k == 0;
        } else if k == 0 && family.strict_signatures() && !signed_first {
            // Gemini 3 refuses a history whose first call of a turn has no signature.
            part.thought_signature = Some(SIGNATURE_SENTINEL.to_owned());
        }
        parts.push(part);
    }
    Ok(parts)
}

/// `arguments` as a JSON object: `""`/null become `{}`, a non-object is wrapped as `{"value": …}`,
/// invalid JSON is refused.
pub(crate) fn parse_arguments(
    arguments: Option<&Value>,
    param: &str,
) -> Result<Value, TranslateError> {
    let parsed = match arguments {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|error| {
            TranslateError::invalid(
                format!("The function arguments are not valid JSON: {error}."),
                param,
            )
        })?,
        Some(other) => other.clone(),
    };
    Ok(match parsed {
        Value::Object(_) => parsed,
        other => json!({ "value": other }),
    })
}

/// The run of `tool` messages after the assistant message at `assistant_index`, as
/// `functionResponse` parts in the order of the calls (not of the messages). Every call needs
/// exactly one response. Returns the parts and the index after the run.
pub(crate) fn tool_responses(
    messages: &[ChatMessage],
    assistant_index: usize,
    calls: &[ToolCall],
) -> Result<(Vec<Part>, usize), TranslateError> {
    let mut responses: HashMap<&str, Value> = HashMap::new();
    let mut index = assistant_index + 1;
    while let Some(message) = messages.get(index).filter(|m| m.role == Role::Tool) {
        let param = format!("messages[{index}].tool_call_id");
        let id = message.tool_call_id.as_deref().unwrap_or("");
        if !calls.iter().any(|call| call.id == id) {
            return Err(TranslateError::invalid(
                format!(
                    "Invalid 'tool_call_id' '{id}': no tool call with this id in the preceding assistant message."
                ),
                param,
            ));
        }
        if responses
            .insert(id, tool_response_value(message.content.as_ref()))
            .is_some()
        {
            return Err(TranslateError::invalid(
                format!("Duplicate response for 'tool_call_id' '{id}'."),
                param,
            ));
        }
        index += 1;
    }
    let missing: Vec<&str> = calls
        .iter()
        .map(|call| call.id.as_str())
        .filter(|id| !responses.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(TranslateError::invalid(
            format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                missing.join(", ")
            ),
            format!("messages[{assistant_index}].tool_calls"),
        ));
    }
    let parts = calls
        .iter()
        .map(|call| {
            let response = responses.remove(call.id.as_str()).unwrap_or(Value::Null);
            function_response(call.function.name.clone(), response)
        })
        .collect();
    Ok((parts, index))
}

/// A `functionResponse` part.
fn function_response(name: String, response: Value) -> Part {
    Part::new(PartData::FunctionResponse(FunctionResponse {
        name,
        response,
    }))
}

/// A tool result as Gemini's `response` object: a JSON object as it is, anything else (a JSON
/// scalar or array, or plain text) as `{"result": …}`.
pub(crate) fn tool_response_value(content: Option<&Value>) -> Value {
    let text = match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        Some(other) => other.to_string(),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({ "result": other }),
        Err(_) => json!({ "result": text }),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools (§3.3)
// ---------------------------------------------------------------------------------------------
