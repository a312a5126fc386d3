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

/// Parameters whose silent omission would change what the client gets.
fn refuse_semantic_changes(request: &ChatCompletionRequest) -> Result<(), TranslateError> {
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
                set("responseMimeType", json!("application/json"));
                let schema = format.get("json_schema").and_then(|s| s.get("schema"));
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
