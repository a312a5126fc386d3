//! Gemini `v1beta` response wire types, read tolerantly.
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

/// The parts of a Gemini error body (`{"error": {"code", "message", "status", "details"}}`)
/// that decide what to do with it. `details` entries are matched on `@type`, never on position,
/// because their order varies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamError {
    /// The google.rpc status name (`RESOURCE_EXHAUSTED`, …); empty when the body is not JSON.
    pub status: String,
    /// The message.
    pub message: String,
    /// `ErrorInfo.reason` (`API_KEY_INVALID`, `CONSUMER_SUSPENDED`, …).
    pub reason: Option<String>,
    /// `RetryInfo.retryDelay`.
    pub retry_delay: Option<std::time::Duration>,
    /// `QuotaFailure.violations[0].quotaId`.
    pub quota_id: Option<String>,
    /// `QuotaFailure.violations[0].quotaDimensions.model`.
    pub quota_model: Option<String>,
    /// `QuotaFailure.violations[0].quotaValue`: the limit Google enforces (a decimal string on
    /// the wire; anything that is not a whole number is dropped).
    pub quota_value: Option<u64>,
    /// `BadRequest.fieldViolations[0].field`.
    pub field_violation: Option<String>,
}

impl UpstreamError {
    /// Reads an error body; anything unreadable gives empty fields.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        // Google's OpenAI-compatible surface wraps the error in an array; accept both.
        let error = match &value {
            Value::Array(items) => items.first().and_then(|item| item.get("error")),
            _ => value.get("error"),
        };
        let Some(error) = error else {
            return Self::default();
        };
        let text = |value: &Value, field: &str| {
            value.get(field).and_then(Value::as_str).map(str::to_owned)
        };
        let mut parsed = Self {
            status: text(error, "status").unwrap_or_default(),
            message: text(error, "message").unwrap_or_default(),
            ..Self::default()
        };
        let details = error.get("details").and_then(Value::as_array);
        for detail in details.into_iter().flatten() {
            let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("google.rpc.ErrorInfo") {
                parsed.reason = text(detail, "reason");
            } else if kind.ends_with("google.rpc.RetryInfo") {
                parsed.retry_delay = detail
                    .get("retryDelay")
                    .and_then(Value::as_str)
                    .and_then(parse_duration);
            } else if kind.ends_with("google.rpc.QuotaFailure") {
                if let Some(violation) = detail.pointer("/violations/0") {
                    parsed.quota_id = text(violation, "quotaId");
                    parsed.quota_model = violation
                        .pointer("/quotaDimensions/model")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    parsed.quota_value = match violation.get("quotaValue") {
                        Some(Value::String(text)) => text.trim().parse().ok(),
                        Some(Value::Number(number)) => number.as_u64(),
                        _ => None,
                    };
                }
            } else if kind.ends_with("google.rpc.BadRequest") {
                parsed.field_violation = detail
                    .pointer("/fieldViolations/0/field")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
        }
        parsed
    }

    /// The key problem this error states, if it states one in a way no client can forge:
    /// `ErrorInfo.reason`, or one of Google's key messages as the *whole* message (Google quotes
    /// client text in messages, such as a field named "reported as leaked").
    pub fn key_problem(&self) -> Option<String> {
        key_problem_of(self)
    }

    /// Whether the violated quota is a per-day one.
    pub fn is_daily_quota(&self) -> bool {
        self.quota_id
            .as_deref()
            .is_some_and(|id| id.contains("PerDay"))
    }
}

/// Parses a protobuf JSON `Duration` such as `"26s"` or `"34.417833292s"`. The text comes from
/// the upstream and is untrusted: a negative or non-numeric delay is `None`, and one too large
/// for a `Duration` (`"1e20s"`) saturates to `Duration::MAX` instead of panicking; callers clamp.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let seconds: f64 = text.strip_suffix('s')?.trim().parse().ok()?;
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Some(std::time::Duration::try_from_secs_f64(seconds).unwrap_or(std::time::Duration::MAX))
}

/// `ErrorInfo.reason` values that mean the key (or its project's access) cannot be used.
/// Google sends them with 400 (`API_KEY_INVALID`) or 403 (the rest).
const KEY_REASONS: [&str; 8] = [
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "CONSUMER_SUSPENDED",
    "SERVICE_DISABLED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
];

/// Google's key messages that come without an `ErrorInfo`, matched as the *whole* message
/// (a client can get any substring into a message by naming a field after it).
const KEY_MESSAGES: [(&str, &str); 3] = [
    (
        "API key not valid. Please pass a valid API key.",
        "API_KEY_INVALID",
    ),
    (
        "API key expired. Please renew the API key.",
        "API_KEY_EXPIRED",
    ),
    (
        "Your API key was reported as leaked. Please use another API key.",
        "API_KEY_LEAKED",
    ),
];

/// `Permission denied: Consumer 'api_key:…' has been suspended.`, with the key (or its
/// redaction) in the quotes and nothing else.
fn is_suspension_message(message: &str) -> bool {
    message
        .strip_prefix("Permission denied: Consumer 'api_key:")
        .and_then(|rest| rest.strip_suffix("' has been suspended."))
        .is_some_and(|key| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'[' | b']'))
        })
}

/// The key problem an error states, if it states one in a way a client cannot forge.
fn key_problem_of(error: &UpstreamError) -> Option<String> {
    if let Some(reason) = error.reason.as_deref()
        && KEY_REASONS.contains(&reason)
    {
        return Some(reason.to_owned());
    }
    if let Some((_, reason)) = KEY_MESSAGES
        .iter()
        .find(|(message, _)| error.message == *message)
    {
        return Some((*reason).to_owned());
    }
    is_suspension_message(&error.message).then(|| "CONSUMER_SUSPENDED".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_fractional_seconds() {
        use std::time::Duration;
        assert_eq!(parse_duration("34.5s"), Some(Duration::from_millis(34_500)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("NaNs"), None);
        assert_eq!(parse_duration("12"), None);
        // Absurd delays saturate instead of panicking (Duration::from_secs_f64 would).
        assert_eq!(parse_duration("1e20s"), Some(Duration::MAX));
        assert_eq!(parse_duration("infs"), Some(Duration::MAX));
        assert_eq!(
            parse_duration("99999999999s"),
            Some(Duration::from_secs(99_999_999_999))
        );
    }

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

    #[test]
    fn error_details_are_read_by_type_in_any_order() {
        let body = br#"[{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "tools[0].function_declarations[0]", "description": "x"}]},
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R"}
        ]}}]"#;
        let error = UpstreamError::parse(body);
        assert_eq!(error.status, "INVALID_ARGUMENT");
        assert_eq!(error.reason.as_deref(), Some("R"));
        assert_eq!(
            error.field_violation.as_deref(),
            Some("tools[0].function_declarations[0]")
        );
        assert_eq!(UpstreamError::parse(b"<html>"), UpstreamError::default());
    }
}
