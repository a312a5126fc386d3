//! OpenAI Chat Completions wire types.
//!
//! The request is read tolerantly: typed where a field's type is fixed, `Value` where OpenAI
//! allows several shapes (message content, tools, `tool_choice`), and every unknown top-level
//! field kept in `extra` so nothing a client sends is silently misread. The response types are
//! written exactly as OpenAI's SDKs expect them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub n: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub response_format: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub functions: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub function_call: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub reasoning_effort: Option<String>,
    pub reasoning: Option<Value>,
    pub extra_body: Option<Value>,
    pub google: Option<Value>,
    pub logit_bias: Option<Map<String, Value>>,
    pub modalities: Option<Vec<String>>,
    /// Everything else (`user`, `metadata`, `store`, …): accepted and not forwarded.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send one usage chunk with empty `choices` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// A message of the conversation.
#[derive(Debug, Clone, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Value>,
    pub name: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
    pub tool_call_id: Option<String>,
    pub function_call: Option<FunctionCallIn>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[expect(missing_docs, reason = "OpenAI's role names")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// A tool call in an assistant message of the history.
#[derive(Debug, Clone, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
    /// Google's compat wire format for thought signatures:
    /// `{"google": {"thought_signature": "…"}}`.
    pub extra_content: Option<Value>,
}

/// A function name and its arguments (a JSON string; some clients send an object).
#[derive(Debug, Clone, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct FunctionCallIn {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// `chat.completion`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

/// A choice of a `chat.completion`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<Value>,
    pub finish_reason: FinishReason,
}

/// The assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    pub refusal: Option<String>,
    /// Thought summaries (the DeepSeek/vLLM/LiteLLM convention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}

/// A tool call in an answer (`index` only in stream deltas).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ToolCallOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<Value>,
}

/// A function call in an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct FunctionOut {
    pub name: String,
    pub arguments: String,
}

/// OpenAI finish reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[expect(missing_docs, reason = "OpenAI's finish reasons")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// `usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
    pub audio_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: u64,
    pub audio_tokens: u64,
    pub accepted_prediction_tokens: u64,
    pub rejected_prediction_tokens: u64,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// `null` on every chunk but the usage chunk when usage was asked for; absent otherwise.
    #[serde(skip_serializing_if = "ChunkUsage::is_absent")]
    pub usage: ChunkUsage,
}

/// The `usage` field of a chunk: absent, `null`, or the totals.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkUsage {
    /// Usage was not asked for: the field is left out.
    Absent,
    /// Usage was asked for, and this is not the usage chunk.
    Null,
    /// The usage chunk.
    Totals(Usage),
}

impl ChunkUsage {
    fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Absent | Self::Null => serializer.serialize_none(),
            Self::Totals(usage) => usage.serialize(serializer),
        }
    }
}

/// A choice of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<FinishReason>,
}

/// A chunk's delta.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallOut>>,
}
