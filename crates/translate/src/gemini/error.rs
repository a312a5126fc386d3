//! Gemini's error bodies, read for what decides what to do with them: the status, the message,
//! `ErrorInfo.reason`, `RetryInfo`, `QuotaFailure` and `BadRequest` details, and whether the
//! error states a problem with the key in a way no client can forge.

use serde_json::Value;

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
