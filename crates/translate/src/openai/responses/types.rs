//! OpenAI Responses wire types.
//!
//! The request is read tolerantly (clients send `input` items with or without `type`, replay our
//! own output items with every field we sent, and omit what OpenAI's types call required); what
//! goes back is written with every field OpenAI's SDKs require: the Python SDK validates
//! `Response` and each stream event against pydantic models, and the Vercel AI SDK against zod
//! schemas (a missing `annotations`, `logprobs` or `cache_write_tokens` fails them).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/responses` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct CreateResponse {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    pub instructions: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<Value>,
    pub reasoning: Option<Value>,
    pub max_output_tokens: Option<u32>,
    pub max_tool_calls: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_logprobs: Option<u32>,
    pub metadata: Option<Map<String, Value>>,
    pub user: Option<String>,
    pub truncation: Option<String>,
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub include: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub background: Option<bool>,
    pub conversation: Option<Value>,
    pub prompt: Option<Value>,
    pub service_tier: Option<String>,
    pub safety_identifier: Option<String>,
    pub prompt_cache_key: Option<String>,
    /// Everything else: accepted and not forwarded.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CreateResponse {
    /// Whether the answer streams.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the response and its input are kept (OpenAI's default: yes).
    pub fn is_stored(&self) -> bool {
        self.store.unwrap_or(true)
    }

    /// Whether the client asked for `what` in `include`.
    pub fn includes(&self, what: &str) -> bool {
        self.include.iter().flatten().any(|item| item == what)
    }
}

/// `status` of a response or an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(missing_docs, reason = "OpenAI's status names")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[expect(missing_docs, reason = "OpenAI's counters")]
pub struct Usage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

/// `usage.input_tokens_details` (`cache_write_tokens` is required by the Python SDK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[expect(missing_docs, reason = "OpenAI's counters")]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[expect(missing_docs, reason = "OpenAI's counters")]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

/// An item of a response's `output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model's text.
    Message {
        /// `msg_…`.
        id: String,
        /// Its status.
        status: Status,
        /// Always `assistant`.
        role: String,
        /// `output_text` parts.
        content: Vec<OutputText>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// `fc_…`.
        id: String,
        /// `call_…` (or the upstream's own id): what `function_call_output` answers.
        call_id: String,
        /// The function.
        name: String,
        /// Its arguments, a JSON string.
        arguments: String,
        /// Its status.
        status: Status,
    },
    /// The model's reasoning: thought summaries, and Gemini's thought signature carried as
    /// `encrypted_content` so that a client replaying the item sends it back.
    Reasoning {
        /// `rs_…`.
        id: String,
        /// Thought summaries (may be empty).
        summary: Vec<SummaryText>,
        /// Gemini's `thoughtSignature` of what followed, when asked for or needed.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        encrypted_content: Option<String>,
    },
    /// A Google Search the model ran (Gemini's grounding).
    WebSearchCall {
        /// `ws_…`.
        id: String,
        /// Its status.
        status: Status,
        /// What was searched, and the sources.
        action: WebSearchAction,
    },
}

impl OutputItem {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Message { id, .. }
            | Self::FunctionCall { id, .. }
            | Self::Reasoning { id, .. }
            | Self::WebSearchCall { id, .. } => id,
        }
    }
}

/// An `output_text` part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// Citations of web sources (`url_citation`); `[]` when none (required by the SDKs).
    pub annotations: Vec<Annotation>,
    /// Always `[]` (required by the Python SDK).
    #[serde(default)]
    pub logprobs: Vec<Value>,
}

impl OutputText {
    /// A part holding `text`, with `annotations`.
    pub fn new(text: String, annotations: Vec<Annotation>) -> Self {
        Self {
            kind: "output_text".to_owned(),
            text,
            annotations,
            logprobs: Vec::new(),
        }
    }
}

/// A `url_citation` annotation: the characters `start_index..end_index` of the text cite `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(missing_docs, reason = "OpenAI's fields")]
pub struct Annotation {
    #[serde(rename = "type")]
    pub kind: String,
    pub start_index: usize,
    pub end_index: usize,
    pub url: String,
    pub title: String,
}

/// A thought summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryText {
    /// Always `summary_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The summary.
    pub text: String,
}

impl SummaryText {
    /// A summary of `text`.
    pub fn new(text: String) -> Self {
        Self {
            kind: "summary_text".to_owned(),
            text,
        }
    }
}

/// What a web search did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSearchAction {
    /// Always `search`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The first query.
    pub query: String,
    /// Every query Gemini ran.
    #[serde(default)]
    pub queries: Vec<String>,
    /// The sources found.
    #[serde(default)]
    pub sources: Vec<Source>,
}

/// A web source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Always `url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its address.
    pub url: String,
}

/// `incomplete_details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// `error` of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    /// A code such as `server_error` or `rate_limit_exceeded`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// A response object, as every route and stream event returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub status: Status,
    pub background: bool,
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<Value>,
    pub max_output_tokens: Option<u32>,
    pub max_tool_calls: Option<u32>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub prompt_cache_key: Option<String>,
    pub reasoning: Value,
    pub safety_identifier: Option<String>,
    pub service_tier: String,
    pub store: bool,
    pub temperature: Option<f64>,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_logprobs: u32,
    pub top_p: Option<f64>,
    pub truncation: String,
    pub usage: Option<Usage>,
    pub user: Option<String>,
    pub metadata: Map<String, Value>,
}

impl Response {
    /// A response to `request`, not started yet (`in_progress`, no output): what
    /// `response.created` carries, and the frame the answer fills.
    pub fn started(request: &CreateResponse, id: String, model: String, created_at: u64) -> Self {
        let reasoning = request.reasoning.as_ref();
        Self {
            id,
            object: "response".to_owned(),
            created_at,
            status: Status::InProgress,
            background: false,
            completed_at: None,
            error: None,
            incomplete_details: None,
            instructions: request.instructions.clone(),
            max_output_tokens: request.max_output_tokens,
            max_tool_calls: request.max_tool_calls,
            model,
            output: Vec::new(),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            previous_response_id: request.previous_response_id.clone(),
            prompt_cache_key: request.prompt_cache_key.clone(),
            reasoning: serde_json::json!({
                "effort": reasoning.and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
                "summary": reasoning.and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
            }),
            safety_identifier: request.safety_identifier.clone(),
            service_tier: "default".to_owned(),
            store: request.is_stored(),
            temperature: request.temperature,
            text: {
                let format = request
                    .text
                    .as_ref()
                    .and_then(|text| text.get("format"))
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "text"}));
                serde_json::json!({"format": format, "verbosity": "medium"})
            },
            tool_choice: request
                .tool_choice
                .clone()
                .unwrap_or_else(|| Value::String("auto".to_owned())),
            tools: request.tools.clone().unwrap_or_default(),
            top_logprobs: request.top_logprobs.unwrap_or(0),
            top_p: request.top_p,
            truncation: request
                .truncation
                .clone()
                .unwrap_or_else(|| "disabled".to_owned()),
            usage: None,
            user: request.user.clone(),
            metadata: request.metadata.clone().unwrap_or_default(),
        }
    }
}
