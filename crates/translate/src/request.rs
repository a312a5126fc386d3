//! OpenAI `chat.completions` request → Gemini `GenerateContentRequest` (translation.md §3–§4).
//!
//! Everything the gateway can tell is wrong is refused here with a 400 naming the field, so a bad
//! request never reaches (and is never billed by) the upstream.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::TranslateError;
use crate::model::{BudgetVariant, ModelFamily, normalize_model};
use crate::openai::{ChatCompletionRequest, ChatMessage, Role, Stop, ToolCall};

/// Gemini 3 accepts this in place of a thought signature it never issued (a history from another
/// model or a client that dropped the signature); see Google's thought-signature FAQ.
pub const SIGNATURE_SENTINEL: &str = "skip_thought_signature_validator";

/// The most candidates the gateway asks for (Google documents no maximum; 8 is conservative).
const MAX_CANDIDATES: u32 = 8;
/// Gemini allows at most five stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;
/// Inline media limit of the Gemini API, in decoded bytes.
const MAX_INLINE_BYTES: usize = 100 * 1024 * 1024;
/// Model-id prefixes that reject presence/frequency penalties ("Penalty is not enabled").
const DROP_PENALTIES_FOR: [&str; 1] = ["gemini-3"];

/// What the gateway remembers about a tool call it returned: the thought signature that came
/// with it, and whether its id was the upstream's own (and so may be echoed back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RememberedCall {
    /// The `thoughtSignature` of the call's part.
    pub signature: Option<String>,
    /// Whether the id came from `functionCall.id`.
    pub upstream_id: bool,
}

/// Looks up tool calls the gateway returned earlier, by id.
pub trait CallMemory {
    /// What is remembered of the call `id`.
    fn recall(&self, id: &str) -> Option<RememberedCall>;
}

/// No memory: only what the client sends back counts.
pub struct NoMemory;

impl CallMemory for NoMemory {
    fn recall(&self, _: &str) -> Option<RememberedCall> {
        None
    }
}

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

/// Parameters whose silent omission would change what the client gets, and values outside the
/// ranges both APIs document (refused here, so they never cost an upstream call).
fn refuse_semantic_changes(request: &ChatCompletionRequest) -> Result<(), TranslateError> {
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
fn google_extensions(request: &ChatCompletionRequest) -> Option<Value> {
    request
        .extra_body
        .as_ref()
        .and_then(|extra| extra.get("google"))
        .or(request.google.as_ref())
        .filter(|google| google.is_object())
        .cloned()
}

/// A field under its snake_case or camelCase name (Google accepts both).
fn field<'a>(object: &'a Value, snake: &str, camel: &str) -> Option<&'a Value> {
    object.get(snake).or_else(|| object.get(camel))
}

// ---------------------------------------------------------------------------------------------
// Conversation (§4)
// ---------------------------------------------------------------------------------------------

/// Builds `systemInstruction` and `contents` from the messages.
fn assemble_conversation(
    messages: &[ChatMessage],
    family: ModelFamily,
    memory: &dyn CallMemory,
) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    let mut system_parts = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut inline_bytes = 0usize;
    let mut leading = true;
    let mut index = 0;
    while index < messages.len() {
        let message = &messages[index];
        let param = format!("messages[{index}]");
        match message.role {
            Role::System | Role::Developer => {
                let text = system_text(message, &param)?;
                if leading {
                    system_parts.push(json!({ "text": text }));
                } else if !text.is_empty() {
                    // A later system message stays where it is, as user text: hoisting it would
                    // move it before the turns it was written after.
                    push_parts(&mut contents, "user", vec![json!({ "text": text })]);
                }
            }
            Role::User => {
                leading = false;
                let parts = user_parts(message, &param, &mut inline_bytes)?;
                push_parts(&mut contents, "user", parts);
            }
            Role::Assistant => {
                leading = false;
                let parts = assistant_parts(message, &param, family, memory)?;
                let calls = message.tool_calls.as_deref().unwrap_or_default();
                push_parts(&mut contents, "model", parts);
                if !calls.is_empty() {
                    let (responses, next) = tool_responses(messages, index, calls)?;
                    push_parts(&mut contents, "user", responses);
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
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
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
    if contents.first().is_none_or(|(role, _)| *role == "model") {
        contents.insert(0, ("user", vec![json!({"text": "."})]));
    }
    let contents = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let system = (!system_parts.is_empty()).then(|| json!({ "parts": system_parts }));
    Ok((system, contents))
}

/// Appends parts to the conversation, merging them into the previous content when it has the
/// same role (Gemini wants alternating turns). Empty parts lists add nothing.
fn push_parts(
    contents: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
        _ => contents.push((role, parts)),
    }
}

/// The text of a system or developer message; non-text parts are refused.
fn system_text(message: &ChatMessage, param: &str) -> Result<String, TranslateError> {
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

fn part_type(part: &Value) -> Option<&str> {
    part.get("type").and_then(Value::as_str)
}

/// Parts of a user message (§3.2).
fn user_parts(
    message: &ChatMessage,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Vec<Value>, TranslateError> {
    match &message.content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text_part(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter().enumerate() {
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
fn text_part(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "text": text }))
}

fn user_part(
    part: &Value,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Option<Value>, TranslateError> {
    let missing = |what: &str| {
        TranslateError::invalid(
            format!("The content part needs '{what}'."),
            format!("{param}.{what}"),
        )
    };
    match part_type(part) {
        Some("text") => Ok(text_part(
            part.get("text").and_then(Value::as_str).unwrap_or(""),
        )),
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|image| image.get("url").or(Some(image)))
                .and_then(Value::as_str)
                .ok_or_else(|| missing("image_url.url"))?;
            media_reference(url, &format!("{param}.image_url.url"), inline_bytes).map(Some)
        }
        Some("input_audio") => {
            let audio = part
                .get("input_audio")
                .ok_or_else(|| missing("input_audio"))?;
            let data = audio
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("input_audio.data"))?;
            let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
            *inline_bytes += data.len() / 4 * 3;
            Ok(Some(
                json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}),
            ))
        }
        Some("file") => {
            let file = part.get("file").ok_or_else(|| missing("file"))?;
            if let Some(data) = file.get("file_data").and_then(Value::as_str) {
                return media_reference(data, &format!("{param}.file.file_data"), inline_bytes)
                    .map(Some);
            }
            let id = file
                .get("file_id")
                .and_then(Value::as_str)
                .ok_or_else(|| missing("file.file_id"))?;
            let id = id.strip_prefix("files/").unwrap_or(id);
            let mut data = json!({"fileUri": format!("https://generativelanguage.googleapis.com/v1beta/files/{id}")});
            if let Some(mime) = file
                .get("mime_type")
                .or_else(|| file.get("format"))
                .and_then(Value::as_str)
            {
                data["mimeType"] = json!(mime);
            }
            Ok(Some(json!({ "fileData": data })))
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

/// A data URL becomes `inlineData`; an http(s) URL becomes `fileData` (Gemini fetches public
/// and signed URLs itself since January 2026).
fn media_reference(
    url: &str,
    param: &str,
    inline_bytes: &mut usize,
) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest.split_once(',').ok_or_else(|| {
            TranslateError::invalid("The data URL has no ',' before its data.", param)
        })?;
        let mime = header.strip_suffix(";base64").ok_or_else(|| {
            TranslateError::invalid(
                "Only base64 data URLs (data:<mime>;base64,<data>) are supported.",
                param,
            )
        })?;
        // Clients commonly write the non-standard `image/jpg`.
        let mime = if mime.eq_ignore_ascii_case("image/jpg") {
            "image/jpeg"
        } else {
            mime
        };
        // Gemini would refuse it with a vaguer message, after a round trip.
        if !is_base64(data) {
            return Err(TranslateError::invalid(
                "The data URL's data is not valid base64.",
                param,
            ));
        }
        *inline_bytes += data.len() / 4 * 3;
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        let mut data = json!({ "fileUri": url });
        if let Some(mime) = mime_from_extension(url) {
            data["mimeType"] = json!(mime);
        }
        return Ok(json!({ "fileData": data }));
    }
    Err(TranslateError::invalid(
        "Media must be a data URL or an http(s) URL.",
        param,
    ))
}

/// Standard or URL-safe base64, padded or not: one pass over the bytes, no copy.
fn is_base64(data: &str) -> bool {
    let data = data.trim_end_matches('=');
    !data.is_empty()
        && data.len() % 4 != 1
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => return None,
    })
}

/// Parts of an assistant message: its text, then one `functionCall` per tool call.
fn assistant_parts(
    message: &ChatMessage,
    param: &str,
    family: ModelFamily,
    memory: &dyn CallMemory,
) -> Result<Vec<Value>, TranslateError> {
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
        let mut function_call = json!({"name": call.function.name, "args": args});
        if remembered.as_ref().is_some_and(|r| r.upstream_id) {
            function_call["id"] = json!(call.id);
        }
        let mut part = json!({ "functionCall": function_call });
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
            part["thoughtSignature"] = json!(signature);
            signed_first |= k == 0;
        } else if k == 0 && family.strict_signatures() && !signed_first {
            // Gemini 3 refuses a history whose first call of a turn has no signature.
            part["thoughtSignature"] = json!(SIGNATURE_SENTINEL);
        }
        parts.push(part);
    }
    Ok(parts)
}

/// `arguments` as a JSON object: `""`/null become `{}`, a non-object is wrapped as `{"value": …}`,
/// invalid JSON is refused.
fn parse_arguments(arguments: Option<&Value>, param: &str) -> Result<Value, TranslateError> {
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
fn tool_responses(
    messages: &[ChatMessage],
    assistant_index: usize,
    calls: &[ToolCall],
) -> Result<(Vec<Value>, usize), TranslateError> {
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
            json!({"functionResponse": {"name": call.function.name, "response": response}})
        })
        .collect();
    Ok((parts, index))
}

/// A tool result as Gemini's `response` object: a JSON object as it is, anything else (a JSON
/// scalar or array, or plain text) as `{"result": …}`.
fn tool_response_value(content: Option<&Value>) -> Value {
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

/// `tools` (and legacy `functions`) as Gemini tools: one tool with every function declaration,
/// then one tool per built-in (`googleSearch`, `codeExecution`, `urlContext`). Returns the tools
/// and the declared function names.
fn translate_tools(
    request: &ChatCompletionRequest,
) -> Result<(Vec<Value>, Vec<String>), TranslateError> {
    let mut declarations = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut builtins = Vec::new();
    let functions = request
        .functions
        .iter()
        .flatten()
        .map(|f| ("functions", f, f));
    let tools = request
        .tools
        .iter()
        .flatten()
        .map(|t| ("tools", t, t.get("function").unwrap_or(t)));
    for (i, (list, tool, function)) in tools.chain(functions).enumerate() {
        let param = format!("{list}[{i}]");
        let kind = tool.get("type").and_then(Value::as_str);
        let builtin = match kind {
            Some("google_search") => Some(json!({"googleSearch": {}})),
            Some("code_execution") => Some(json!({"codeExecution": {}})),
            Some("url_context") => Some(json!({"urlContext": {}})),
            Some("function") => None,
            None if list == "functions" => None,
            None => ["googleSearch", "codeExecution", "urlContext"]
                .iter()
                .find_map(|name| tool.get(*name).map(|config| json!({ *name: config }))),
            Some(other) => {
                return Err(TranslateError::invalid(
                    format!("Tools of type '{other}' are not supported."),
                    format!("{param}.type"),
                ));
            }
        };
        if let Some(builtin) = builtin {
            builtins.push(builtin);
            continue;
        }
        if kind.is_none() && list == "tools" {
            return Err(TranslateError::invalid(
                "Each tool needs a 'type'.",
                format!("{param}.type"),
            ));
        }
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        let name_param = if list == "tools" {
            format!("{param}.function.name")
        } else {
            format!("{param}.name")
        };
        if !valid {
            return Err(TranslateError::invalid(
                format!(
                    "Invalid function name '{name}': use 1 to 64 letters, digits, '_', '.', ':' or '-'."
                ),
                name_param,
            ));
        }
        if names.iter().any(|known| known == name) {
            return Err(TranslateError::invalid(
                format!("Duplicate function name '{name}'."),
                name_param,
            ));
        }
        names.push(name.to_owned());
        let mut declaration = json!({ "name": name });
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            declaration["description"] = json!(description);
        }
        // `parametersJsonSchema` takes real JSON Schema (`$ref`, `anyOf`, `additionalProperties`);
        // the legacy `parameters` field rejects those keywords with a 400.
        if let Some(schema) = schema_of(
            function.get("parameters"),
            &format!("{param}.function.parameters"),
        )? {
            declaration["parametersJsonSchema"] = schema;
        }
        declarations.push(declaration);
    }
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        tools.push(json!({ "functionDeclarations": declarations }));
    }
    tools.extend(builtins);
    Ok((tools, names))
}

/// A JSON schema as Gemini takes it: parsed when sent as a string, without the root `$schema`.
fn schema_of(schema: Option<&Value>, param: &str) -> Result<Option<Value>, TranslateError> {
    let mut schema = match schema {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|error| {
            TranslateError::invalid(format!("The schema is not valid JSON: {error}."), param)
        })?,
        Some(other) => other.clone(),
    };
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
    }
    Ok(Some(schema))
}

/// What `tool_choice` asks for.
enum ToolChoice {
    /// A `functionCallingConfig`.
    Config(Value),
    /// `allowed_tools` in auto mode: only these declarations are sent, with mode AUTO
    /// (`allowedFunctionNames` is only valid with ANY).
    OnlyDeclared(Vec<String>),
}

impl ToolChoice {
    fn into_config(self) -> Option<Value> {
        let config = match self {
            Self::Config(config) => config,
            Self::OnlyDeclared(_) => json!({"mode": "AUTO"}),
        };
        Some(json!({ "functionCallingConfig": config }))
    }
}

fn keep_only(tools: Vec<Value>, names: &[String]) -> Vec<Value> {
    tools
        .into_iter()
        .map(|mut tool| {
            if let Some(Value::Array(declarations)) = tool.get_mut("functionDeclarations") {
                declarations.retain(|d| {
                    d.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.iter().any(|k| k == n))
                });
            }
            tool
        })
        .collect()
}

fn translate_tool_choice(
    request: &ChatCompletionRequest,
    declared: &[String],
) -> Result<Option<ToolChoice>, TranslateError> {
    let (choice, param) = match (&request.tool_choice, &request.function_call) {
        (Some(choice), _) => (choice, "tool_choice"),
        (None, Some(choice)) => (choice, "function_call"),
        (None, None) => return Ok(None),
    };
    let requires_tools = |mode: &str| {
        if declared.is_empty() {
            Err(TranslateError::invalid(
                format!("'{param}' is '{mode}' but no functions were given in 'tools'."),
                param,
            ))
        } else {
            Ok(())
        }
    };
    let named = |name: &str| -> Result<ToolChoice, TranslateError> {
        if !declared.iter().any(|known| known == name) {
            return Err(TranslateError::invalid(
                format!("'{param}' names the function '{name}', which is not declared in 'tools'."),
                param,
            ));
        }
        Ok(ToolChoice::Config(
            json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        ))
    };
    let choice = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => ToolChoice::Config(json!({"mode": "AUTO"})),
            "none" => ToolChoice::Config(json!({"mode": "NONE"})),
            "required" | "any" => {
                requires_tools(mode)?;
                ToolChoice::Config(json!({"mode": "ANY"}))
            }
            other => {
                return Err(TranslateError::invalid(
                    format!(
                        "Invalid '{param}' value '{other}': expected 'auto', 'none', 'required' or an object."
                    ),
                    param,
                ));
            }
        },
        Value::Object(object) => {
            if let Some(name) = object
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| object.get("name"))
                .and_then(Value::as_str)
            {
                named(name)?
            } else if let Some(allowed) = object.get("allowed_tools") {
                let names: Vec<String> = allowed
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|tool| {
                        tool.get("function")
                            .unwrap_or(tool)
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect();
                for name in &names {
                    named(name)?;
                }
                match allowed.get("mode").and_then(Value::as_str) {
                    Some("required") => {
                        ToolChoice::Config(json!({"mode": "ANY", "allowedFunctionNames": names}))
                    }
                    _ => ToolChoice::OnlyDeclared(names),
                }
            } else {
                return Err(TranslateError::invalid(
                    format!("'{param}' object needs 'function.name'."),
                    param,
                ));
            }
        }
        _ => {
            return Err(TranslateError::invalid(
                format!("Invalid '{param}'."),
                param,
            ));
        }
    };
    Ok(Some(choice))
}

// ---------------------------------------------------------------------------------------------
// Generation config (§3.1, §3.4, §3.5)
// ---------------------------------------------------------------------------------------------

fn generation_config(
    request: &ChatCompletionRequest,
    model: &str,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    let mut set = |name: &str, value: Value| {
        config.insert(name.to_owned(), value);
    };
    // `max_completion_tokens` wins over the legacy `max_tokens`. Gemini counts thinking tokens
    // inside `maxOutputTokens`, as OpenAI counts reasoning tokens inside the completion limit.
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        set("maxOutputTokens", json!(max));
    }
    if let Some(t) = request.temperature {
        set("temperature", json!(t));
    }
    if let Some(p) = request.top_p {
        set("topP", json!(p));
    }
    if let Some(k) = request.top_k {
        set("topK", json!(k));
    }
    if let Some(n) = request.n.filter(|n| *n > 1) {
        set("candidateCount", json!(n));
    }
    match &request.stop {
        Some(Stop::One(stop)) => set("stopSequences", json!([stop])),
        Some(Stop::Many(stops)) if !stops.is_empty() => set("stopSequences", json!(stops)),
        _ => {}
    }
    if let Some(seed) = request.seed {
        set("seed", json!(seed));
    }
    // Some models answer 400 "Penalty is not enabled"; for those the penalties are dropped.
    let penalties_allowed = !DROP_PENALTIES_FOR
        .iter()
        .any(|prefix| model.starts_with(prefix));
    if penalties_allowed {
        if let Some(p) = request.presence_penalty {
            set("presencePenalty", json!(p));
        }
        if let Some(p) = request.frequency_penalty {
            set("frequencyPenalty", json!(p));
        }
    }
    if request.logprobs.unwrap_or(false) {
        set("responseLogprobs", json!(true));
        if let Some(top) = request.top_logprobs {
            set("logprobs", json!(top));
        }
    }
    if let Some(format) = &request.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => set("responseMimeType", json!("application/json")),
            Some("json_schema") => {
                // OpenAI requires the `json_schema` object (with its `name`); its `schema` may
                // be left out.
                let Some(json_schema) = format.get("json_schema").filter(|s| s.is_object()) else {
                    return Err(TranslateError::invalid(
                        "'response_format.json_schema' is required when the type is 'json_schema'.",
                        "response_format.json_schema",
                    ));
                };
                set("responseMimeType", json!("application/json"));
                let schema = json_schema.get("schema");
                if let Some(schema) = schema_of(schema, "response_format.json_schema.schema")? {
                    set("responseJsonSchema", schema);
                }
            }
            _ => {
                return Err(TranslateError::invalid(
                    "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                    "response_format.type",
                ));
            }
        }
    }
    if let Some(google) = google {
        for (snake, camel) in [
            ("response_modalities", "responseModalities"),
            ("media_resolution", "mediaResolution"),
        ] {
            if let Some(value) = field(google, snake, camel) {
                set(camel, value.clone());
            }
        }
    }
    if let Some(thinking) = thinking_config(request, family, google)? {
        set("thinkingConfig", thinking);
    }
    Ok(config)
}

/// `thinkingConfig` from an explicit `thinking_config` extension, else from `reasoning_effort`.
/// Non-thinking models get none (it is a 400 there); budget and level are never both sent.
fn thinking_config(
    request: &ChatCompletionRequest,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<Option<Value>, TranslateError> {
    let effort = request.reasoning_effort.clone().or_else(|| {
        request
            .reasoning
            .as_ref()?
            .get("effort")?
            .as_str()
            .map(str::to_owned)
    });
    let effort = effort
        .map(|effort| {
            let known = ["none", "minimal", "low", "medium", "high", "xhigh"];
            if known.contains(&effort.as_str()) {
                Ok(effort)
            } else {
                Err(TranslateError::invalid(
                    format!("Invalid 'reasoning_effort' '{effort}': expected none, minimal, low, medium, high or xhigh."),
                    "reasoning_effort",
                ))
            }
        })
        .transpose()?;
    if family == ModelFamily::NoThinking {
        return Ok(None);
    }
    let explicit = google.and_then(|g| field(g, "thinking_config", "thinkingConfig"));
    if let Some(explicit) = explicit {
        let budget = field(explicit, "thinking_budget", "thinkingBudget");
        let level = field(explicit, "thinking_level", "thinkingLevel");
        let mut config = Map::new();
        match (family, budget, level) {
            (ModelFamily::LevelBased { .. }, _, Some(level)) | (_, None, Some(level)) => {
                config.insert(
                    "thinkingLevel".into(),
                    json!(level.as_str().map(str::to_uppercase)),
                );
            }
            (_, Some(budget), _) => {
                config.insert("thinkingBudget".into(), budget.clone());
            }
            (_, None, None) => {}
        }
        if let Some(include) = field(explicit, "include_thoughts", "includeThoughts") {
            config.insert("includeThoughts".into(), include.clone());
        }
        return Ok(Some(Value::Object(config)));
    }
    let Some(effort) = effort else {
        return Ok(None);
    };
    let include = effort != "none";
    let config = match family {
        ModelFamily::BudgetBased(variant) => {
            let budget = match (effort.as_str(), variant) {
                // 2.5 Pro cannot switch thinking off: the least it takes is 128.
                ("none" | "minimal", BudgetVariant::Pro) => 128,
                ("none", _) => 0,
                ("minimal", _) => 512,
                ("low", _) => 1024,
                ("medium", _) => 8192,
                ("xhigh", BudgetVariant::Pro) => 32_768,
                _ => 24_576,
            };
            json!({"thinkingBudget": budget, "includeThoughts": include})
        }
        ModelFamily::LevelBased { pro } => {
            // Gemini 3 cannot switch thinking off; Pro models support only LOW and HIGH.
            let level = match (effort.as_str(), pro) {
                ("none" | "minimal", true) | ("low", _) => "LOW",
                ("none" | "minimal", false) => "MINIMAL",
                ("medium", false) => "MEDIUM",
                _ => "HIGH",
            };
            json!({"thinkingLevel": level, "includeThoughts": include})
        }
        ModelFamily::NoThinking => return Ok(None),
    };
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate_with(request: Value, memory: &dyn CallMemory) -> Result<Value, String> {
        let request: ChatCompletionRequest = serde_json::from_value(request).unwrap();
        match translate_chat_request(&request, memory) {
            Ok(translated) => Ok(translated.body),
            Err(TranslateError::InvalidRequest { param, .. }) => Err(param.unwrap_or_default()),
            Err(other) => panic!("{other}"),
        }
    }

    fn translate(request: Value) -> Result<Value, String> {
        translate_with(request, &NoMemory)
    }

    fn chat(model: &str, messages: Value) -> Value {
        json!({"model": model, "messages": messages})
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        base
    }

    const USER_HI: &str = r#"[{"role": "user", "content": "hi"}]"#;

    fn hi(model: &str) -> Value {
        chat(model, serde_json::from_str(USER_HI).unwrap())
    }

    #[test]
    fn local_refusals_name_the_field() {
        let two_calls = json!([
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "a", "content": "1"}
        ]);
        let cases: Vec<(Value, &str)> = vec![
            (with(hi("gemini-2.5-flash"), json!({"n": 9})), "n"),
            (with(hi("gemini-2.5-flash"), json!({"n": 0})), "n"),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"stop": ["1", "2", "3", "4", "5", "6"]}),
                ),
                "stop",
            ),
            (
                with(hi("gemini-2.5-flash"), json!({"top_logprobs": 3})),
                "top_logprobs",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"stream_options": {"include_usage": true}}),
                ),
                "stream_options",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"logit_bias": {"50256": -100}}),
                ),
                "logit_bias",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"modalities": ["text", "audio"]}),
                ),
                "modalities",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"reasoning_effort": "extreme"}),
                ),
                "reasoning_effort",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"response_format": {"type": "xml"}}),
                ),
                "response_format.type",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"model": "gemini:streamGenerateContent?key=x"}),
                ),
                "model",
            ),
            (
                chat("gemini-2.5-flash", two_calls),
                "messages[1].tool_calls",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\": "}}]}, {"role": "tool", "tool_call_id": "a", "content": "r"}]),
                ),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}, {"role": "tool", "tool_call_id": "zzz", "content": "r"}]),
                ),
                "messages[1].tool_call_id",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}, {"role": "tool", "tool_call_id": "a", "content": "r"}, {"role": "tool", "tool_call_id": "a", "content": "r"}]),
                ),
                "messages[2].tool_call_id",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "tool", "tool_call_id": "a", "content": "r"}]),
                ),
                "messages[0].role",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}]),
                ),
                "messages[0].content[0].type",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]),
                ),
                "messages[0].content[0].image_url.url",
            ),
            (
                chat(
                    "gemini-2.5-flash",
                    json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, {"role": "user", "content": "q"}]),
                ),
                "messages[0].content[0]",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}),
                ),
                "tools[1].function.name",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
                ),
                "tools[0].function.name",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"tools": [{"type": "retrieval"}]}),
                ),
                "tools[0].type",
            ),
            (
                with(hi("gemini-2.5-flash"), json!({"tool_choice": "required"})),
                "tool_choice",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
                ),
                "tool_choice",
            ),
            (
                with(
                    hi("gemini-2.5-flash"),
                    json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{not json"}}]}),
                ),
                "tools[0].function.parameters",
            ),
        ];
        for (request, param) in cases {
            assert_eq!(
                translate(request.clone()),
                Err(param.to_owned()),
                "{request}"
            );
        }
    }

    #[test]
    fn conversation_edge_cases() {
        // System-only: Gemini needs a user turn.
        let body = translate(chat(
            "gemini-2.0-flash",
            json!([{"role": "system", "content": "Be brief."}]),
        ))
        .unwrap();
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "."}]}])
        );
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );

        // A history that starts with a tool call gets a placeholder user turn first.
        let body = translate(chat("gemini-2.5-flash", json!([
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "[1, 2]"}
        ]))).unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "."}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": [1, 2]}}}]}
            ])
        );

        // Tool results: object as is, scalar/array/text wrapped; arguments that are not an
        // object are wrapped too; empty text and empty assistant messages disappear.
        let body = translate(chat("gemini-2.5-flash", json!([
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "go"}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "x", "type": "function", "function": {"name": "a", "arguments": "[1]"}},
                {"id": "y", "type": "function", "function": {"name": "b", "arguments": {"k": 1}}},
                {"id": "z", "type": "function", "function": {"name": "c", "arguments": null}}
            ]},
            {"role": "tool", "tool_call_id": "z", "content": "plain words"},
            {"role": "tool", "tool_call_id": "x", "content": "42"},
            {"role": "tool", "tool_call_id": "y", "content": [{"type": "text", "text": "{\"ok\": true}"}]}
        ]))).unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "go"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "a", "args": {"value": [1]}}},
                    {"functionCall": {"name": "b", "args": {"k": 1}}},
                    {"functionCall": {"name": "c", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "a", "response": {"result": 42}}},
                    {"functionResponse": {"name": "b", "response": {"ok": true}}},
                    {"functionResponse": {"name": "c", "response": {"result": "plain words"}}}
                ]}
            ])
        );

        // Legacy `function_call` and `role: function`.
        let body = translate(chat(
            "gemini-2.5-flash",
            json!([
                {"role": "user", "content": "q"},
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
                {"role": "function", "name": "f", "content": "{\"r\": 2}"}
            ]),
        ))
        .unwrap();
        assert_eq!(
            body["contents"][2],
            json!({"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 2}}}]})
        );
    }

    #[test]
    fn signatures_come_from_the_client_then_memory_then_the_gemini_3_sentinel() {
        struct Memory;
        impl CallMemory for Memory {
            fn recall(&self, id: &str) -> Option<RememberedCall> {
                (id == "remembered").then(|| RememberedCall {
                    signature: Some("sig-from-memory".into()),
                    upstream_id: true,
                })
            }
        }
        let history = |id: &str| {
            chat(
                "gemini-3-pro-preview",
                json!([
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "tool_calls": [
                        {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}},
                        {"id": "second", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": id, "content": "1"},
                    {"role": "tool", "tool_call_id": "second", "content": "2"}
                ]),
            )
        };
        let body = translate_with(history("remembered"), &Memory).unwrap();
        let parts = &body["contents"][1]["parts"];
        assert_eq!(
            parts[0],
            json!({"functionCall": {"name": "f", "args": {}, "id": "remembered"}, "thoughtSignature": "sig-from-memory"})
        );
        assert_eq!(
            parts[1],
            json!({"functionCall": {"name": "f", "args": {}}}),
            "only the first call is signed"
        );

        let body = translate_with(history("unknown"), &Memory).unwrap();
        assert_eq!(
            body["contents"][1]["parts"][0]["thoughtSignature"],
            SIGNATURE_SENTINEL
        );
        assert!(
            body["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none()
        );

        // Gemini 2.5 does not require signatures: none is invented.
        let mut older = history("unknown");
        older["model"] = json!("gemini-2.5-flash");
        let body = translate_with(older, &Memory).unwrap();
        assert!(
            body["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );
    }

    #[test]
    fn tool_choice_forms() {
        let tools = json!([
            {"type": "function", "function": {"name": "f", "parameters": {"$schema": "x", "type": "object", "additionalProperties": false}}},
            {"type": "function", "function": {"name": "g", "strict": true}}
        ]);
        let cases = [
            (json!("auto"), json!({"mode": "AUTO"}), 2),
            (json!("none"), json!({"mode": "NONE"}), 2),
            (json!("required"), json!({"mode": "ANY"}), 2),
            (
                json!({"type": "function", "function": {"name": "g"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["g"]}),
                2,
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
                2,
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "g"}}]}}),
                json!({"mode": "AUTO"}),
                1,
            ),
        ];
        for (choice, config, declared) in cases {
            let body = translate(with(
                hi("gemini-2.5-flash"),
                json!({"tools": tools, "tool_choice": choice}),
            ))
            .unwrap();
            assert_eq!(
                body["toolConfig"],
                json!({"functionCallingConfig": config}),
                "{choice}"
            );
            let declarations = body["tools"][0]["functionDeclarations"].as_array().unwrap();
            assert_eq!(declarations.len(), declared, "{choice}");
        }
        let body = translate(with(hi("gemini-2.5-flash"), json!({"tools": tools}))).unwrap();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [
                {"name": "f", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
                {"name": "g"}
            ]}])
        );
        assert!(body.get("toolConfig").is_none());
        let legacy = translate(with(
            hi("gemini-2.5-flash"),
            json!({"functions": [{"name": "f"}], "function_call": {"name": "f"}}),
        ))
        .unwrap();
        assert_eq!(
            legacy["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
        );
        let builtins = translate(with(
            hi("gemini-3-flash-preview"),
            json!({"tools": [{"type": "google_search"}, {"codeExecution": {}}]}),
        ))
        .unwrap();
        assert_eq!(
            builtins["tools"],
            json!([{"googleSearch": {}}, {"codeExecution": {}}])
        );
    }

    #[test]
    fn reasoning_effort_per_model_family() {
        let cases = [
            (
                "gemini-2.5-flash",
                "none",
                json!({"thinkingBudget": 0, "includeThoughts": false}),
            ),
            (
                "gemini-2.5-flash",
                "minimal",
                json!({"thinkingBudget": 512, "includeThoughts": true}),
            ),
            (
                "gemini-2.5-flash",
                "medium",
                json!({"thinkingBudget": 8192, "includeThoughts": true}),
            ),
            (
                "gemini-2.5-flash-lite",
                "high",
                json!({"thinkingBudget": 24576, "includeThoughts": true}),
            ),
            (
                "gemini-2.5-pro",
                "none",
                json!({"thinkingBudget": 128, "includeThoughts": false}),
            ),
            (
                "gemini-2.5-pro",
                "xhigh",
                json!({"thinkingBudget": 32768, "includeThoughts": true}),
            ),
            (
                "gemini-3-flash-preview",
                "none",
                json!({"thinkingLevel": "MINIMAL", "includeThoughts": false}),
            ),
            (
                "gemini-3-flash-preview",
                "medium",
                json!({"thinkingLevel": "MEDIUM", "includeThoughts": true}),
            ),
            (
                "gemini-3-pro-preview",
                "minimal",
                json!({"thinkingLevel": "LOW", "includeThoughts": true}),
            ),
            (
                "gemini-3-pro-preview",
                "medium",
                json!({"thinkingLevel": "HIGH", "includeThoughts": true}),
            ),
        ];
        for (model, effort, expected) in cases {
            let body = translate(with(hi(model), json!({"reasoning_effort": effort}))).unwrap();
            assert_eq!(
                body["generationConfig"]["thinkingConfig"], expected,
                "{model} {effort}"
            );
        }
        // `reasoning: {effort}` is the same thing.
        let body = translate(with(
            hi("gemini-2.5-flash"),
            json!({"reasoning": {"effort": "low"}}),
        ))
        .unwrap();
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            1024
        );
        // Non-thinking models get no thinking config at all.
        let body = translate(with(
            hi("gemini-2.0-flash"),
            json!({"reasoning_effort": "high"}),
        ))
        .unwrap();
        assert!(body.get("generationConfig").is_none());
        // An explicit thinking_config wins; the level wins over a budget on Gemini 3.
        let explicit = json!({"reasoning_effort": "low", "extra_body": {"google": {"thinking_config": {"thinking_budget": 99, "thinking_level": "high", "include_thoughts": false}}}});
        let body = translate(with(hi("gemini-3-flash-preview"), explicit.clone())).unwrap();
        assert_eq!(
            body["generationConfig"]["thinkingConfig"],
            json!({"thinkingLevel": "HIGH", "includeThoughts": false})
        );
        let body = translate(with(hi("gemini-2.5-flash"), explicit)).unwrap();
        assert_eq!(
            body["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 99, "includeThoughts": false})
        );
    }

    #[test]
    fn parameters_response_formats_and_google_extensions() {
        let body = translate(with(hi("gemini-2.5-flash"), json!({
            "max_tokens": 50, "n": 2, "stop": ["a", "b"], "logprobs": true, "top_logprobs": 2, "top_k": 5,
            "parallel_tool_calls": false, "user": "u", "metadata": {"a": "b"},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"$schema": "s", "type": "object"}}},
            "google": {"cached_content": "cachedContents/flat", "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]},
            "extra_body": {"google": {"cached_content": "cachedContents/nested"}}
        }))).unwrap();
        assert_eq!(
            body["generationConfig"],
            json!({
                "maxOutputTokens": 50, "topK": 5, "candidateCount": 2, "stopSequences": ["a", "b"],
                "responseLogprobs": true, "logprobs": 2,
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
            })
        );
        assert_eq!(
            body["cachedContent"], "cachedContents/nested",
            "extra_body.google wins"
        );
        assert!(
            body.get("safetySettings").is_none(),
            "the winning google object has none"
        );

        // Penalties are dropped for Gemini 3, where they are refused upstream.
        let body = translate(with(
            hi("gemini-3-flash-preview"),
            json!({"presence_penalty": 0.5, "temperature": 1.0}),
        ))
        .unwrap();
        assert_eq!(body["generationConfig"], json!({"temperature": 1.0}));
    }

    #[test]
    fn media_parts() {
        let body = translate(chat("gemini-2.5-flash", json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.PNG?x=1"}},
            {"type": "input_audio", "input_audio": {"data": "BBBB", "format": "mp3"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,CCCC", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_id": "files/abc"}}
        ]}]))).unwrap();
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                {"fileData": {"fileUri": "https://example.com/cat.PNG?x=1", "mimeType": "image/png"}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "BBBB"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "CCCC"}},
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}
            ])
        );
    }
}
