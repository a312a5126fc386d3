//! A Responses request as a chat request, which the chat translation turns into Gemini's: one
//! set of rules (validation, media, tools, JSON schema, reasoning, thought signatures) serves
//! both formats.
//!
//! `input` items become chat messages (consecutive `function_call` items one assistant message
//! with several tool calls, `function_call_output` tool messages, `reasoning` items the thought
//! signature of the call that follows them); `tools`, `tool_choice`, `text.format`, `reasoning`
//! and `max_output_tokens` their chat equivalents. What Gemini cannot do (`background`, hosted
//! `file_search`, computer use, …) is refused with a 400 naming the field. Errors of the chat
//! translation are renamed back (`messages[3]` → `input[5]`, `response_format` → `text.format`).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::types::CreateResponse;
use crate::common::signatures::CallMemory;
use crate::error::TranslateError;
use crate::openai::chat::request::{GeminiChatRequest, translate_chat_request};
use crate::openai::chat::types::ChatCompletionRequest;

/// Where the `input` of a request comes from besides the request: the items of the responses it
/// continues, and the stored items it names by reference.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Input and output items of the previous responses, oldest first.
    pub items: Vec<Value>,
    /// Stored items by id, for `item_reference`.
    pub by_id: HashMap<String, Value>,
}

/// The ids of `item_reference` items in a request's `input`: what the caller looks up first.
pub fn referenced_ids(request: &CreateResponse) -> Vec<String> {
    input_items(request)
        .iter()
        .filter(|item| is_reference(item))
        .filter_map(|item| item.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// `{"type": "item_reference", "id"}`, or an object with nothing but an `id` (`type` is
/// optional in OpenAI's types).
fn is_reference(item: &Value) -> bool {
    match item.get("type").and_then(Value::as_str) {
        Some("item_reference") => true,
        None => item
            .as_object()
            .is_some_and(|object| object.len() == 1 && object.contains_key("id")),
        Some(_) => false,
    }
}

/// The request's own input as items (a string is one user message).
pub fn input_items(request: &CreateResponse) -> Vec<Value> {
    match &request.input {
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// The request's input items as they are stored and listed (`input_items`): references
/// replaced by the items they name, a string's text as an `input_text` part, and every item
/// with an id (`new_id("msg")` gives a new `msg_…`).
pub fn items_to_store(
    request: &CreateResponse,
    history: &History,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Vec<Value> {
    input_items(request)
        .into_iter()
        .map(|item| {
            let mut item = if is_reference(&item) {
                item.get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| history.by_id.get(id))
                    .cloned()
                    .unwrap_or(item)
            } else {
                item
            };
            let Some(object) = item.as_object_mut() else {
                return item;
            };
            if !object.contains_key("type") && object.contains_key("role") {
                object.insert("type".into(), json!("message"));
            }
            if object.get("type").and_then(Value::as_str) == Some("message")
                && let Some(Value::String(text)) = object.get("content")
            {
                let kind = if object.get("role").and_then(Value::as_str) == Some("assistant") {
                    "output_text"
                } else {
                    "input_text"
                };
                let parts = json!([{"type": kind, "text": text}]);
                object.insert("content".into(), parts);
            }
            if object
                .get("id")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                let prefix = match object.get("type").and_then(Value::as_str) {
                    Some("function_call") => "fc",
                    Some("function_call_output") => "fco",
                    Some("reasoning") => "rs",
                    _ => "msg",
                };
                object.insert("id".into(), json!(new_id(prefix)));
            }
            item
        })
        .collect()
}

/// Translates a Responses request (continuing `history`) into a Gemini request.
pub fn translate_responses_request(
    request: &CreateResponse,
    history: &History,
    memory: &dyn CallMemory,
) -> Result<GeminiChatRequest, TranslateError> {
    refuse_unsupported(request)?;
    let (chat, sources) = to_chat(request, history)?;
    let chat: ChatCompletionRequest =
        serde_json::from_value(chat).map_err(|error| TranslateError::InvalidRequest {
            message: format!("Invalid request: {error}."),
            param: None,
        })?;
    translate_chat_request(chat, memory).map_err(|error| rename_params(error, &sources))
}

/// Fields whose meaning Gemini cannot give.
fn refuse_unsupported(request: &CreateResponse) -> Result<(), TranslateError> {
    if request.background == Some(true) {
        return Err(TranslateError::invalid(
            "Background responses are not supported by this gateway: send the request without 'background'.",
            "background",
        ));
    }
    if request.conversation.is_some() {
        return Err(TranslateError::invalid(
            "Conversations are not supported by this gateway: continue with 'previous_response_id' instead.",
            "conversation",
        ));
    }
    if request.prompt.is_some() {
        return Err(TranslateError::invalid(
            "Stored prompts are not supported by this gateway.",
            "prompt",
        ));
    }
    if let (Some(_), Some(_)) = (&request.previous_response_id, &request.conversation) {
        return Err(TranslateError::invalid(
            "'previous_response_id' and 'conversation' cannot be used together.",
            "previous_response_id",
        ));
    }
    Ok(())
}

/// What one chat message came from (for renaming errors back).
type Sources = Vec<String>;

/// The chat request equivalent to `request` after `history`, and where each message came from.
fn to_chat(
    request: &CreateResponse,
    history: &History,
) -> Result<(Value, Sources), TranslateError> {
    let mut builder = Conversation::default();
    if let Some(instructions) = &request.instructions {
        let text = match instructions {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if !text.is_empty() {
            builder.push(
                json!({"role": "system", "content": text}),
                "instructions".to_owned(),
            );
        }
    }
    for (index, item) in history.items.iter().enumerate() {
        builder.item(
            item,
            &format!("previous_response_id (item {index})"),
            history,
            0,
        )?;
    }
    let own = input_items(request);
    if own.is_empty() && history.items.is_empty() {
        return Err(TranslateError::invalid(
            "'input' must hold at least one item.",
            "input",
        ));
    }
    for (index, item) in own.iter().enumerate() {
        builder.item(item, &format!("input[{index}]"), history, 0)?;
    }
    builder.flush_calls();

    let mut chat = Map::new();
    chat.insert("model".into(), json!(request.model));
    chat.insert("messages".into(), Value::Array(builder.messages));
    chat.insert("stream".into(), json!(request.is_stream()));
    if request.is_stream() {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(max) = request.max_output_tokens {
        chat.insert("max_completion_tokens".into(), json!(max));
    }
    if let Some(temperature) = request.temperature {
        chat.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        chat.insert("top_p".into(), json!(top_p));
    }
    if let Some(parallel) = request.parallel_tool_calls {
        chat.insert("parallel_tool_calls".into(), json!(parallel));
    }
    if let Some(tools) = &request.tools {
        chat.insert("tools".into(), Value::Array(chat_tools(tools)?));
    }
    if let Some(choice) = &request.tool_choice
        && let Some(choice) = chat_tool_choice(choice)?
    {
        chat.insert("tool_choice".into(), choice);
    }
    if let Some(format) = request.text.as_ref().and_then(|text| text.get("format")) {
        chat.insert("response_format".into(), chat_response_format(format)?);
    }
    if let Some(reasoning) = &request.reasoning {
        let effort = reasoning.get("effort").and_then(Value::as_str);
        let summary = reasoning
            .get("summary")
            .or_else(|| reasoning.get("generate_summary"))
            .and_then(Value::as_str);
        if let Some(effort) = effort {
            // OpenAI's newest step above `xhigh`; Gemini's highest is the same.
            let effort = if effort == "max" { "xhigh" } else { effort };
            chat.insert("reasoning_effort".into(), json!(effort));
        } else if summary.is_some() {
            // A summary without an effort: thoughts on, at the model's own budget.
            chat.insert(
                "google".into(),
                json!({"thinking_config": {"include_thoughts": true}}),
            );
        }
    }
    Ok((Value::Object(chat), builder.sources))
}

/// Builds the chat messages item by item.
#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    sources: Sources,
    /// Tool calls waiting for their assistant message (consecutive `function_call` items).
    calls: Vec<Value>,
    calls_source: String,
    /// The thought signature of a `reasoning` item, for the next function call.
    signature: Option<String>,
}

impl Conversation {
    fn push(&mut self, message: Value, source: String) {
        self.messages.push(message);
        self.sources.push(source);
    }

    /// Ends a run of function calls: one assistant message holds them all.
    fn flush_calls(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        let calls = std::mem::take(&mut self.calls);
        let source = std::mem::take(&mut self.calls_source);
        // Text the model wrote before its calls belongs to the same turn.
        if let Some(last) = self.messages.last_mut()
            && last["role"] == "assistant"
            && last.get("tool_calls").is_none()
        {
            last["tool_calls"] = Value::Array(calls);
            return;
        }
        self.push(
            json!({"role": "assistant", "content": null, "tool_calls": calls}),
            source,
        );
    }

    fn item(
        &mut self,
        item: &Value,
        param: &str,
        history: &History,
        depth: u8,
    ) -> Result<(), TranslateError> {
        if !item.is_object() {
            return Err(TranslateError::invalid(
                "Each input item must be an object.",
                param,
            ));
        }
        if is_reference(item) {
            let id = item.get("id").and_then(Value::as_str).unwrap_or("");
            let found = history.by_id.get(id).filter(|_| depth == 0).ok_or_else(|| {
                TranslateError::invalid(
                    format!("Item with id '{id}' not found. Items are not persisted when `store` is set to false."),
                    format!("{param}.id"),
                )
            })?;
            return self.item(found, param, history, depth + 1);
        }
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            Some("message") | None if item.get("role").is_some() => {
                self.flush_calls();
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                if !matches!(role, "user" | "assistant" | "system" | "developer") {
                    return Err(TranslateError::invalid(
                        format!(
                            "'{role}' is not a message role (user, assistant, system or developer)."
                        ),
                        format!("{param}.role"),
                    ));
                }
                let content = message_content(item.get("content"), role, param)?;
                self.push(json!({"role": role, "content": content}), param.to_owned());
            }
            Some("function_call") => {
                let call_id = text_field(item, "call_id", param)?;
                let name = text_field(item, "name", param)?;
                let arguments = item.get("arguments").cloned().unwrap_or(json!("{}"));
                let mut call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                if let Some(signature) = self.signature.take() {
                    call["extra_content"] = json!({"google": {"thought_signature": signature}});
                }
                if self.calls.is_empty() {
                    self.calls_source = param.to_owned();
                }
                self.calls.push(call);
            }
            Some("function_call_output") => {
                self.flush_calls();
                let call_id = text_field(item, "call_id", param)?;
                let output = match item.get("output") {
                    Some(Value::String(text)) => Value::String(text.clone()),
                    Some(Value::Array(parts)) => Value::String(
                        parts
                            .iter()
                            .filter_map(|part| part.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    Some(other) => Value::String(other.to_string()),
                    None => Value::String(String::new()),
                };
                self.push(
                    json!({"role": "tool", "tool_call_id": call_id, "content": output}),
                    param.to_owned(),
                );
            }
            Some("reasoning") => {
                // Thought summaries are not sent back (Gemini does not read them); the
                // signature is, with the call it belongs to.
                self.signature = item
                    .get("encrypted_content")
                    .and_then(Value::as_str)
                    .filter(|signature| !signature.is_empty())
                    .map(str::to_owned);
            }
            // Searches Gemini ran itself: nothing to send back.
            Some("web_search_call") => {}
            Some(other) => {
                return Err(TranslateError::invalid(
                    format!("Input items of type '{other}' are not supported by this gateway."),
                    format!("{param}.type"),
                ));
            }
            None => {
                return Err(TranslateError::invalid(
                    "An input item needs a 'type' (or a 'role' for a message).",
                    format!("{param}.type"),
                ));
            }
        }
        Ok(())
    }
}

/// A required string field of an item.
fn text_field(item: &Value, name: &str, param: &str) -> Result<String, TranslateError> {
    item.get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            TranslateError::invalid(format!("'{name}' is required."), format!("{param}.{name}"))
        })
}

/// A message's content as chat content: a string, or chat parts.
fn message_content(
    content: Option<&Value>,
    role: &str,
    param: &str,
) -> Result<Value, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Value::String(String::new())),
        Some(Value::String(text)) => return Ok(Value::String(text.clone())),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(TranslateError::invalid(
                "'content' must be a string or a list of parts.",
                format!("{param}.content"),
            ));
        }
    };
    // System and assistant turns are text; the chat translation takes them as one string.
    if role != "user" {
        let mut text = String::new();
        for (index, part) in parts.iter().enumerate() {
            match part.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text" | "text") => {
                    text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                }
                Some("refusal") => {
                    text.push_str(part.get("refusal").and_then(Value::as_str).unwrap_or(""));
                }
                other => {
                    return Err(TranslateError::invalid(
                        format!(
                            "A {role} message may only hold text parts, not '{}'.",
                            other.unwrap_or("untyped")
                        ),
                        format!("{param}.content[{index}].type"),
                    ));
                }
            }
        }
        return Ok(Value::String(text));
    }
    let mut chat_parts = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{index}]");
        let chat_part = match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => json!({"type": "text",
                "text": part.get("text").and_then(Value::as_str).unwrap_or("")}),
            Some("input_image") => {
                let url = match (
                    part.get("image_url").and_then(Value::as_str),
                    part.get("file_id").and_then(Value::as_str),
                ) {
                    (Some(url), _) => url.to_owned(),
                    (None, Some(id)) => file_url(id),
                    (None, None) => {
                        return Err(TranslateError::invalid(
                            "An image needs 'image_url' or 'file_id'.",
                            part_param,
                        ));
                    }
                };
                json!({"type": "image_url", "image_url": {"url": url}})
            }
            Some("input_file") => {
                if let Some(data) = part.get("file_data").and_then(Value::as_str) {
                    json!({"type": "file", "file": {"file_data": data,
                        "filename": part.get("filename").cloned().unwrap_or(Value::Null)}})
                } else if let Some(id) = part.get("file_id").and_then(Value::as_str) {
                    json!({"type": "image_url", "image_url": {"url": file_url(id)}})
                } else if let Some(url) = part.get("file_url").and_then(Value::as_str) {
                    json!({"type": "image_url", "image_url": {"url": url}})
                } else {
                    return Err(TranslateError::invalid(
                        "A file needs 'file_data', 'file_id' or 'file_url'.",
                        part_param,
                    ));
                }
            }
            other => {
                return Err(TranslateError::invalid(
                    format!(
                        "Content parts of type '{}' are not supported.",
                        other.unwrap_or("untyped")
                    ),
                    format!("{part_param}.type"),
                ));
            }
        };
        chat_parts.push(chat_part);
    }
    Ok(Value::Array(chat_parts))
}

/// A Gemini file (`files/abc`, or OpenAI's bare id) as the URL Gemini reads it from.
fn file_url(id: &str) -> String {
    if id.starts_with("https://") || id.starts_with("http://") {
        return id.to_owned();
    }
    let name = id.strip_prefix("files/").unwrap_or(id);
    format!("https://generativelanguage.googleapis.com/v1beta/files/{name}")
}

/// Responses tools as chat tools: functions, and web search as Google Search grounding.
fn chat_tools(tools: &[Value]) -> Result<Vec<Value>, TranslateError> {
    tools
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let param = format!("tools[{index}]");
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let mut function = Map::new();
                    for field in ["name", "description", "parameters", "strict"] {
                        if let Some(value) = tool.get(field) {
                            function.insert(field.to_owned(), value.clone());
                        }
                    }
                    Ok(json!({"type": "function", "function": function}))
                }
                // OpenAI's hosted web search is Gemini's Google Search grounding; its citations
                // come back as `url_citation` annotations.
                Some(kind) if kind.starts_with("web_search") => {
                    Ok(json!({"type": "google_search"}))
                }
                Some(other) => Err(TranslateError::invalid(
                    format!(
                        "Tools of type '{other}' are not supported by this gateway (function and web_search are)."
                    ),
                    format!("{param}.type"),
                )),
                None => Err(TranslateError::invalid(
                    "Each tool needs a 'type'.",
                    format!("{param}.type"),
                )),
            }
        })
        .collect()
}

/// `tool_choice` as chat's (`None`: leave it to the default).
fn chat_tool_choice(choice: &Value) -> Result<Option<Value>, TranslateError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(Some(choice.clone()))
        }
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = object.get("name").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(
                        "A forced function needs its 'name'.",
                        "tool_choice.name",
                    )
                })?;
                Ok(Some(
                    json!({"type": "function", "function": {"name": name}}),
                ))
            }
            // Gemini decides itself when to search: grounding is offered, not forced.
            Some(kind) if kind.starts_with("web_search") => Ok(Some(json!("auto"))),
            Some("allowed_tools") => {
                let mode = object.get("mode").and_then(Value::as_str).unwrap_or("auto");
                Ok(Some(json!(mode)))
            }
            other => Err(TranslateError::invalid(
                format!(
                    "'tool_choice' of type '{}' is not supported.",
                    other.unwrap_or("untyped")
                ),
                "tool_choice.type",
            )),
        },
        _ => Err(TranslateError::invalid(
            "'tool_choice' must be 'auto', 'none', 'required' or an object.",
            "tool_choice",
        )),
    }
}

/// `text.format` as chat's `response_format`.
fn chat_response_format(format: &Value) -> Result<Value, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = format.get(field) {
                    schema.insert(field.to_owned(), value.clone());
                }
            }
            Ok(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => Err(TranslateError::invalid(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.",
            "text.format.type",
        )),
    }
}

/// An error of the chat translation, with the Responses names of the fields it names.
fn rename_params(error: TranslateError, sources: &Sources) -> TranslateError {
    let TranslateError::InvalidRequest { message, param } = error else {
        return error;
    };
    let param = param.map(|param| {
        if let Some(rest) = param.strip_prefix("messages[")
            && let Some((index, tail)) = rest.split_once(']')
            && let Some(source) = index.parse::<usize>().ok().and_then(|i| sources.get(i))
        {
            return format!("{source}{tail}");
        }
        for (chat, responses) in [
            ("response_format", "text.format"),
            ("reasoning_effort", "reasoning.effort"),
            ("max_completion_tokens", "max_output_tokens"),
            ("messages", "input"),
        ] {
            if let Some(tail) = param.strip_prefix(chat) {
                return format!("{responses}{tail}");
            }
        }
        param.replace(".function.", ".")
    });
    let message = message
        .replace("'response_format", "'text.format")
        .replace("'reasoning_effort'", "'reasoning.effort'")
        .replace("'messages'", "'input'");
    TranslateError::InvalidRequest { message, param }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::signatures::NoMemory;

    fn request(value: Value) -> CreateResponse {
        serde_json::from_value(value).unwrap()
    }

    fn gemini(value: Value) -> Value {
        let translated =
            translate_responses_request(&request(value), &History::default(), &NoMemory).unwrap();
        serde_json::to_value(translated.body).unwrap()
    }

    fn refused(value: Value) -> String {
        match translate_responses_request(&request(value), &History::default(), &NoMemory) {
            Err(TranslateError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_instruction_and_a_user_turn() {
        let body = gemini(json!({"model": "gemini-2.5-flash", "input": "Hello",
            "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2}));
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "Hello"}]}])
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(body["generationConfig"]["temperature"], 0.2);
    }

    #[test]
    fn function_calls_and_outputs_round_trip_with_their_signature() {
        let body = gemini(json!({"model": "gemini-3-flash-preview", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Rome?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "SIG-1"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b", "output": "rain"}
        ], "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}]}));
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{body}");
        assert_eq!(contents[1]["role"], "model");
        let calls = contents[1]["parts"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["thoughtSignature"], "SIG-1");
        assert_eq!(calls[0]["functionCall"]["args"], json!({"city": "Paris"}));
        assert_eq!(
            contents[2]["parts"][1]["functionResponse"]["name"],
            "get_weather"
        );
        assert_eq!(
            body["tools"][0]["functionDeclarations"][0]["name"],
            "get_weather"
        );
    }

    #[test]
    fn formats_reasoning_and_web_search_map_to_their_gemini_forms() {
        let body = gemini(json!({"model": "gemini-2.5-flash", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "W", "strict": true,
                "schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false}}},
            "reasoning": {"effort": "low", "summary": "auto"},
            "tools": [{"type": "web_search_preview"}]}));
        let config = &body["generationConfig"];
        assert_eq!(config["responseMimeType"], "application/json");
        assert!(config["responseJsonSchema"].get("$schema").is_none());
        assert_eq!(config["thinkingConfig"]["includeThoughts"], true);
        assert_eq!(body["tools"], json!([{"googleSearch": {}}]));
        let summary_only = gemini(json!({"model": "gemini-2.5-flash", "input": "x",
            "reasoning": {"summary": "detailed"}}));
        assert_eq!(
            summary_only["generationConfig"]["thinkingConfig"],
            json!({"includeThoughts": true})
        );
    }

    #[test]
    fn item_references_resolve_from_the_history_and_unknown_ones_are_refused() {
        let mut history = History::default();
        history.by_id.insert(
            "msg_1".into(),
            json!({"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Hi!", "annotations": []}]}),
        );
        let request = request(json!({"model": "gemini-2.5-flash", "input": [
            {"role": "user", "content": "hello"}, {"type": "item_reference", "id": "msg_1"},
            {"role": "user", "content": "again"}]}));
        assert_eq!(referenced_ids(&request), vec!["msg_1".to_owned()]);
        let translated = translate_responses_request(&request, &history, &NoMemory).unwrap();
        let body = serde_json::to_value(translated.body).unwrap();
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [{"text": "Hi!"}]})
        );
        let missing = translate_responses_request(&request, &History::default(), &NoMemory);
        assert!(
            matches!(missing, Err(TranslateError::InvalidRequest { param: Some(p), .. }) if p == "input[1].id")
        );
    }

    #[test]
    fn stored_input_items_have_ids_parts_and_resolved_references() {
        let mut history = History::default();
        history.by_id.insert(
            "msg_1".into(),
            json!({"id": "msg_1", "type": "message", "role": "assistant", "content": []}),
        );
        let request = request(json!({"model": "m", "input": [
            {"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_1"},
            {"type": "function_call_output", "call_id": "c", "output": "x", "id": "fco_given"}]}));
        let mut next = 0;
        let items = items_to_store(&request, &history, &mut |prefix| {
            next += 1;
            format!("{prefix}_{next}")
        });
        assert_eq!(
            items[0],
            json!({"type": "message", "role": "user", "id": "msg_1",
            "content": [{"type": "input_text", "text": "hi"}]})
        );
        assert_eq!(items[1]["role"], "assistant");
        assert_eq!(items[2]["id"], "fco_given");
    }

    #[test]
    fn what_gemini_cannot_do_is_refused_naming_the_field() {
        assert_eq!(
            refused(json!({"model": "m", "input": "x", "background": true})),
            "background"
        );
        assert_eq!(
            refused(
                json!({"model": "m", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]})
            ),
            "tools[0].type"
        );
        assert_eq!(
            refused(
                json!({"model": "m", "input": "x", "tools": [{"type": "computer_use_preview"}]})
            ),
            "tools[0].type"
        );
        assert_eq!(refused(json!({"model": "m", "input": []})), "input");
        assert_eq!(
            refused(
                json!({"model": "gemini-2.5-flash", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}]})
            ),
            "input[0].content[0].image_url.url"
        );
        assert_eq!(
            refused(json!({"model": "gemini-2.5-flash", "input": "x", "temperature": 3})),
            "temperature"
        );
    }
}
