//! Gemini `v1beta` request wire types: the `GenerateContentRequest` the OpenAI translators build.
//!
//! Typed where the gateway writes the value itself; `Value` where a client's value travels
//! verbatim (function arguments and results, JSON schemas, and the Google extensions a client
//! sets under `google`), so Gemini judges it exactly as the client wrote it. Keys appear in the
//! order of the fields (serde_json is built with `preserve_order`), which is the order the
//! translators have always written them in: the bytes sent upstream do not depend on this type.
//! A request is serialised once, at the edge, by the caller.

use serde::Serialize;
use serde_json::{Map, Value};

use super::native::{
    collect_field_references, collect_references, collect_string_field_references, sorted_unique,
};

/// `GenerateContentRequest`: the body of `generateContent` and `streamGenerateContent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    /// The conversation, alternating `user` and `model` turns.
    pub contents: Vec<Content>,
    /// The system prompt (a content without a role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    /// Function declarations and built-in tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// How the model may call the declared functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    /// Sampling, length, format and thinking settings; left out when none is set.
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig,
    /// A `cachedContents/…` name, as the client gave it (a Google extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_content: Option<Value>,
    /// The client's `safetySettings`, forwarded verbatim: the gateway builds none, and reading
    /// them into types would reorder their keys or refuse entries Gemini judges itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_settings: Option<Value>,
    /// Fields this type does not name, sent unchanged after the named ones (the chat
    /// translation sets none).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl GenerateContentRequest {
    /// The owned resources (`files/…`, `cachedContents/…`) the request names: exactly what
    /// [`super::native::referenced_resources`] finds in its JSON, read from the fields without
    /// building that JSON (the request may hold a hundred megabytes of inline media).
    pub fn referenced_resources(&self) -> Vec<String> {
        let mut found = Vec::new();
        for content in self.contents.iter().chain(&self.system_instruction) {
            for part in &content.parts {
                part.data.collect_references(&mut found);
            }
        }
        for tool in &self.tools {
            tool.collect_references(&mut found);
        }
        self.generation_config.collect_references(&mut found);
        if let Some(cached) = &self.cached_content {
            collect_field_references("cachedContent", cached, &mut found);
        }
        if let Some(safety) = &self.safety_settings {
            collect_references(safety, &mut found);
        }
        for (field, value) in &self.extra {
            collect_field_references(field, value, &mut found);
        }
        sorted_unique(found)
    }
}

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The client: messages, tool results.
    User,
    /// The model: its answers and function calls.
    Model,
}

/// A turn of the conversation, or (without a role) the system instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Content {
    /// Who speaks; absent for `systemInstruction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The parts, in order.
    pub parts: Vec<Part>,
}

/// One part of a content: its data, and what Gemini attaches to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// What the part holds (Gemini's `data` oneof: exactly one of its fields).
    #[serde(flatten)]
    pub data: PartData,
    /// Whether the part is a thought summary: Gemini marks them in its answers; the translators
    /// send none back (Gemini does not read them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// The opaque signature Gemini 3 wants back with the function call it came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

impl Part {
    /// A part holding `data` and nothing else.
    pub fn new(data: PartData) -> Self {
        Self {
            data,
            thought: None,
            thought_signature: None,
        }
    }

    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(PartData::Text(text.into()))
    }
}

/// The data of a part.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PartData {
    /// `text`.
    Text(String),
    /// `inlineData`: base64 bytes in the request.
    InlineData(Blob),
    /// `fileData`: media Gemini fetches or holds.
    FileData(FileData),
    /// `functionCall`: a call the model made, sent back in the history.
    FunctionCall(FunctionCall),
    /// `functionResponse`: the result of a call.
    FunctionResponse(FunctionResponse),
}

impl PartData {
    fn collect_references(&self, found: &mut Vec<String>) {
        match self {
            Self::Text(_) | Self::InlineData(_) => {}
            Self::FileData(file) => file.collect_references(found),
            Self::FunctionCall(call) => collect_references(&call.args, found),
            Self::FunctionResponse(response) => collect_references(&response.response, found),
        }
    }
}

/// `inlineData`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// Its media type.
    pub mime_type: String,
    /// Its bytes, base64-encoded as the client sent them.
    pub data: String,
}

/// `fileData`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    /// A URL Gemini fetches, or a Gemini file's URL.
    pub file_uri: String,
    /// Its media type, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl FileData {
    fn collect_references(&self, found: &mut Vec<String>) {
        collect_string_field_references("fileUri", &self.file_uri, found);
    }
}

/// `functionCall`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON object.
    pub args: Value,
    /// Gemini's own id of the call, echoed back only when Gemini issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `functionResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionResponse {
    /// The function's name.
    pub name: String,
    /// Its result, a JSON object.
    pub response: Value,
}

/// A tool: the gateway sends one kind per tool (all function declarations together, then one
/// tool per built-in).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    /// `functionDeclarations`.
    FunctionDeclarations(Vec<FunctionDeclaration>),
    /// `googleSearch`, with the client's configuration (`{}` by default).
    GoogleSearch(Value),
    /// `codeExecution`, with the client's configuration (`{}` by default).
    CodeExecution(Value),
    /// `urlContext`, with the client's configuration (`{}` by default).
    UrlContext(Value),
}

impl Tool {
    fn collect_references(&self, found: &mut Vec<String>) {
        match self {
            Self::FunctionDeclarations(declarations) => {
                for schema in declarations
                    .iter()
                    .filter_map(|d| d.parameters_json_schema.as_ref())
                {
                    collect_references(schema, found);
                }
            }
            Self::GoogleSearch(config) | Self::CodeExecution(config) | Self::UrlContext(config) => {
                collect_references(config, found);
            }
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters as JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

/// `toolConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    /// How functions may be called.
    pub function_calling_config: FunctionCallingConfig,
}

/// `functionCallingConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// Whether the model may, must or must not call functions.
    pub mode: FunctionCallingMode,
    /// The functions it may call (only valid with `ANY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

impl FunctionCallingConfig {
    /// A mode with no list of functions.
    pub fn mode(mode: FunctionCallingMode) -> Self {
        Self {
            mode,
            allowed_function_names: None,
        }
    }
}

/// `functionCallingConfig.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FunctionCallingMode {
    /// The model decides.
    Auto,
    /// The model must call a function.
    Any,
    /// The model must not call functions.
    None,
}

/// `generationConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[expect(
    missing_docs,
    reason = "fields are Gemini's, named as in its API reference"
)]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    /// A Google extension, as the client gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_modalities: Option<Value>,
    /// A Google extension, as the client gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_resolution: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig {
    /// Whether no field is set (Gemini then gets no `generationConfig` at all).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn collect_references(&self, found: &mut Vec<String>) {
        let thinking = self.thinking_config.iter().flat_map(|thinking| {
            [
                &thinking.thinking_budget,
                &thinking.thinking_level,
                &thinking.include_thoughts,
            ]
        });
        [
            &self.response_json_schema,
            &self.response_modalities,
            &self.media_resolution,
        ]
        .into_iter()
        .chain(thinking)
        .flatten()
        .for_each(|value| collect_references(value, found));
    }
}

/// `thinkingConfig`. The values are JSON because an explicit `thinking_config` extension
/// travels as the client wrote it (Gemini refuses what it cannot read, as it always has); the
/// gateway never sends a budget and a level together.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// Thinking tokens allowed (Gemini 2.5); `0` switches thinking off where that is possible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<Value>,
    /// `MINIMAL`, `LOW`, `MEDIUM` or `HIGH` (Gemini 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<Value>,
    /// Whether thought summaries come back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<Value>,
}
