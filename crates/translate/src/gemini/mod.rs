//! Gemini `v1beta` wire types: the request the translators send ([`request`]), and the answers,
//! read tolerantly (here).
//!
//! Gemini follows proto3 JSON rules: fields equal to 0, false or empty may be left out (a
//! candidate's `index` 0, `candidatesTokenCount` when nothing visible was produced), so every
//! field has a default. Unknown fields are kept in `extra`; unknown enum values land in
//! `Unknown` instead of failing the whole response.

use serde::Deserialize;
use serde_json::{Map, Value};

/// `GenerateContentResponse`, also each event of a stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// The candidates (absent when the prompt was blocked).
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// Why the prompt was blocked, if it was.
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token counts; in streams a cumulative snapshot.
    pub usage_metadata: Option<UsageMetadata>,
    /// The model version that answered.
    pub model_version: Option<String>,
    /// The upstream response id.
    pub response_id: Option<String>,
    /// Fields this gateway does not read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl GenerateContentResponse {
    /// Whether the prompt was blocked (`promptFeedback.blockReason`).
    pub fn is_prompt_blocked(&self) -> bool {
        self.prompt_feedback
            .as_ref()
            .is_some_and(|feedback| feedback.block_reason.is_some())
    }

    /// Whether this is an empty answer: see [`is_empty_answer`].
    pub fn is_empty_answer(&self) -> bool {
        is_empty_answer(
            self.is_prompt_blocked(),
            self.candidates.iter().map(|candidate| {
                (
                    candidate.content.as_ref().map_or(0, |c| c.parts.len()),
                    candidate.finish_reason,
                )
            }),
            self.usage_metadata
                .as_ref()
                .map_or(0, |usage| usage.candidates_token_count),
        )
    }

    /// The OpenAI completion id: `chatcmpl-` and the upstream `responseId`, or a fresh id.
    pub fn completion_id(&self, new_id: &mut dyn FnMut() -> String) -> String {
        match &self.response_id {
            Some(id) => format!("chatcmpl-{id}"),
            None => format!("chatcmpl-{}", new_id().trim_start_matches("call_")),
        }
    }
}

/// One candidate answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Its content; `{"role": "model"}` without parts when nothing was produced.
    pub content: Option<Content>,
    /// Why generation stopped (only on the last event of a stream).
    pub finish_reason: Option<FinishReason>,
    /// Its index among `candidateCount` candidates; omitted when 0.
    #[serde(default)]
    pub index: u32,
    /// Gemini's explanation of the finish reason.
    pub finish_message: Option<String>,
    /// Log probabilities, when requested.
    pub logprobs_result: Option<LogprobsResult>,
    /// What Google Search found, when the answer is grounded (usually on the last event).
    pub grounding_metadata: Option<GroundingMetadata>,
}

/// `groundingMetadata`: the searches run, the web pages found, and which spans of the answer
/// each page supports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingMetadata {
    /// The queries Google Search ran.
    #[serde(default)]
    pub web_search_queries: Vec<String>,
    /// The pages found (`web.uri`, `web.title`).
    #[serde(default)]
    pub grounding_chunks: Vec<GroundingChunk>,
    /// Spans of the answer and the chunks supporting each.
    #[serde(default)]
    pub grounding_supports: Vec<GroundingSupport>,
}

/// One page found.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroundingChunk {
    /// The page, for web results.
    pub web: Option<WebChunk>,
}

/// A web page of a grounding chunk.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WebChunk {
    /// Its address (often a Google redirect).
    #[serde(default)]
    pub uri: String,
    /// Its title (often the site's domain).
    #[serde(default)]
    pub title: String,
}

/// A span of the answer and what supports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingSupport {
    /// The span: byte offsets into the answer's text (UTF-8).
    #[serde(default)]
    pub segment: Segment,
    /// Indices into `grounding_chunks`.
    #[serde(default)]
    pub grounding_chunk_indices: Vec<usize>,
}

/// A span of text, by byte offsets.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Where it starts (absent for 0).
    #[serde(default)]
    pub start_index: usize,
    /// Where it ends.
    #[serde(default)]
    pub end_index: usize,
}

/// A content: role and parts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// The parts, in order.
    #[serde(default)]
    pub parts: Vec<Part>,
    /// `model` on answers.
    pub role: Option<String>,
}

/// One part. Every kind is an optional field, so an unknown kind is simply a part with none of
/// the known fields set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text (a thought summary when `thought` is true).
    pub text: Option<String>,
    /// Whether `text` is a thought summary.
    #[serde(default)]
    pub thought: bool,
    /// Opaque signature that must be sent back with this part in later turns.
    pub thought_signature: Option<String>,
    /// A function call.
    pub function_call: Option<FunctionCall>,
    /// Inline media (image-output models).
    pub inline_data: Option<InlineData>,
    /// Code written by the code-execution tool.
    pub executable_code: Option<ExecutableCode>,
    /// The result of running it.
    pub code_execution_result: Option<CodeExecutionResult>,
    /// Other part kinds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A function call requested by the model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// Its arguments; proto3 may omit an empty object.
    pub args: Option<Value>,
    /// An id, sent by some models.
    pub id: Option<String>,
}

/// Inline bytes with a MIME type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineData {
    /// MIME type.
    #[serde(default)]
    pub mime_type: String,
    /// Base64 bytes.
    #[serde(default)]
    pub data: String,
}

/// Code from the code-execution tool.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExecutableCode {
    /// Language, such as `PYTHON`.
    #[serde(default)]
    pub language: String,
    /// The code.
    #[serde(default)]
    pub code: String,
}

/// The output of executed code.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CodeExecutionResult {
    /// `OUTCOME_OK` and so on.
    #[serde(default)]
    pub outcome: String,
    /// What the code printed.
    #[serde(default)]
    pub output: String,
}

/// `Candidate.finishReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[expect(missing_docs, reason = "the variants are Gemini's enum values")]
pub enum FinishReason {
    FinishReasonUnspecified,
    Stop,
    MaxTokens,
    Safety,
    Recitation,
    Language,
    Other,
    Blocklist,
    ProhibitedContent,
    Spii,
    MalformedFunctionCall,
    ImageSafety,
    ImageProhibitedContent,
    ImageRecitation,
    ImageOther,
    NoImage,
    UnexpectedToolCall,
    TooManyToolCalls,
    MissingThoughtSignature,
    /// A value newer than this gateway.
    #[serde(other)]
    Unknown,
}

/// `promptFeedback`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// Set when the prompt was blocked.
    pub block_reason: Option<String>,
}

/// `usageMetadata`. Every count defaults to 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[expect(
    missing_docs,
    reason = "the fields are Gemini's counters, named as in the API"
)]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub total_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub prompt_tokens_details: Vec<ModalityTokenCount>,
    #[serde(default)]
    pub candidates_tokens_details: Vec<ModalityTokenCount>,
}

/// Tokens of one modality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModalityTokenCount {
    /// `TEXT`, `AUDIO`, `IMAGE`, …
    #[serde(default)]
    pub modality: String,
    /// The count.
    #[serde(default)]
    pub token_count: u64,
}

/// `logprobsResult`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogprobsResult {
    /// Top candidates per position.
    #[serde(default)]
    pub top_candidates: Vec<TopCandidates>,
    /// The chosen token per position.
    #[serde(default)]
    pub chosen_candidates: Vec<LogprobCandidate>,
}

/// Top candidates at one position.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopCandidates {
    /// Candidates, most likely first.
    #[serde(default)]
    pub candidates: Vec<LogprobCandidate>,
}

/// One token and its log probability.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogprobCandidate {
    /// The token.
    #[serde(default)]
    pub token: String,
    /// Its log probability.
    #[serde(default)]
    pub log_probability: f64,
}

/// Gemini sometimes answers 200 with nothing in it: no candidate, or a candidate without parts
/// that says `finishReason: STOP` and counts no output tokens (a known glitch, mostly of
/// thinking models). That is an upstream fault, not an answer: the gateway retries it on
/// another key. A candidate without parts that stopped for a reason (`MAX_TOKENS` spent on
/// thinking, `SAFETY`, `RECITATION`, a malformed call, …) is a real answer, and so is a blocked
/// prompt. `candidates` gives each candidate's part count and finish reason.
pub fn is_empty_answer(
    prompt_blocked: bool,
    mut candidates: impl Iterator<Item = (usize, Option<FinishReason>)>,
    output_tokens: u64,
) -> bool {
    if prompt_blocked || output_tokens > 0 {
        return false;
    }
    candidates.all(|(parts, finish)| {
        parts == 0
            && matches!(
                finish,
                None | Some(FinishReason::Stop | FinishReason::FinishReasonUnspecified)
            )
    })
}

/// The least of a `GenerateContentResponse` (or a stream event) that tells whether it is empty
/// (see [`is_empty_answer`]) and whether it ends the stream, read without keeping any text: for
/// answers relayed byte for byte.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerShape {
    #[serde(default)]
    candidates: Vec<CandidateShape>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageShape>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateShape {
    content: Option<ContentShape>,
    finish_reason: Option<FinishReason>,
}

#[derive(Debug, Default, Deserialize)]
struct ContentShape {
    #[serde(default)]
    parts: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageShape {
    #[serde(default)]
    candidates_token_count: u64,
}

impl AnswerShape {
    /// Reads an answer's shape; `None` when it is not a JSON object of that shape.
    pub fn read(json: &[u8]) -> Option<Self> {
        serde_json::from_slice(json).ok()
    }

    /// Whether it is an empty answer (see [`is_empty_answer`]).
    pub fn is_empty(&self) -> bool {
        is_empty_answer(
            self.prompt_feedback
                .as_ref()
                .is_some_and(|feedback| feedback.block_reason.is_some()),
            self.candidates.iter().map(|candidate| {
                (
                    candidate.content.as_ref().map_or(0, |c| c.parts.len()),
                    candidate.finish_reason,
                )
            }),
            self.usage_metadata
                .as_ref()
                .map_or(0, |usage| usage.candidates_token_count),
        )
    }

    /// Whether a candidate says why generation stopped: the last event of a stream.
    pub fn is_finished(&self) -> bool {
        self.candidates
            .iter()
            .any(|candidate| candidate.finish_reason.is_some())
    }
}

pub mod error;
pub mod native;
pub mod request;
pub mod sse;

pub use error::{UpstreamError, parse_duration};

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn empty_answers_are_told_from_real_ones() {
        let empty = [
            r#"{"candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}"#,
            r#"{"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "thoughtsTokenCount": 30}}"#,
            r#"{"candidates": [], "usageMetadata": {"promptTokenCount": 5}}"#,
            r#"{}"#,
        ];
        for json in empty {
            let shape = AnswerShape::read(json.as_bytes()).unwrap();
            assert!(shape.is_empty(), "{json}");
            let typed: GenerateContentResponse = serde_json::from_str(json).unwrap();
            assert!(typed.is_empty_answer(), "{json}");
        }
        let real = [
            r#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}]}"#,
            r#"{"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}], "usageMetadata": {"thoughtsTokenCount": 100}}"#,
            r#"{"candidates": [{"finishReason": "SAFETY"}]}"#,
            r#"{"promptFeedback": {"blockReason": "SAFETY"}}"#,
            r#"{"candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}], "usageMetadata": {"candidatesTokenCount": 3}}"#,
        ];
        for json in real {
            let shape = AnswerShape::read(json.as_bytes()).unwrap();
            assert!(!shape.is_empty(), "{json}");
            let typed: GenerateContentResponse = serde_json::from_str(json).unwrap();
            assert!(!typed.is_empty_answer(), "{json}");
        }
    }
}
