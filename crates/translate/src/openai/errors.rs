//! Upstream Gemini errors in OpenAI's shape (translation.md §8.2). OpenAI SDKs pick their
//! exception class from the HTTP status, so the status is chosen first and `type`/`code` follow.
//! Key-level failures are never shown as 400/401: the client's own credentials were fine.

use serde::Serialize;
use serde_json::{Value, json};

use crate::gemini::UpstreamError;

/// An error in OpenAI's shape, with the HTTP status and `Retry-After` that go with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Message (upstream messages pass through, after key redaction by the caller).
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `permission_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    /// An error of the gateway itself.
    pub fn new(
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
            retry_after: None,
        }
    }

    /// A failure of the upstream stream after the response was committed.
    pub fn upstream_stream(message: &str) -> Self {
        Self::new(502, "server_error", Some("upstream_stream_error"), message)
    }

    /// `{"error": {…}}`.
    pub fn body(&self) -> Value {
        json!({ "error": self })
    }
}

/// Seconds until a retry, from `RetryInfo` (an hour at most: the delay is the upstream's word,
/// and untrusted). Without one: a minute for a 429 that names a quota (a per-minute quota is
/// reset within it), a second for one that names none. That one is shared capacity, not a quota
/// (`"Resource has been exhausted (e.g. check quota)."` with no `QuotaFailure`): the native
/// routes say a second for it too, and a client back that soon meets the gateway's own capacity
/// answer, which names the time the next try goes upstream.
fn retry_after_secs(error: &UpstreamError) -> u64 {
    match error.retry_delay {
        Some(delay) => delay
            .min(std::time::Duration::from_secs(3600))
            .as_secs_f64()
            .ceil() as u64,
        None if error.quota_id.is_some() => 60,
        None => 1,
    }
}

/// The first sentence of an upstream message (Gemini appends help links and quota details).
fn first_sentence(message: &str) -> &str {
    // A sentence ends at ". " followed by a capital ("(e.g. check quota)" does not end one).
    let end = message.match_indices(". ").map(|(at, _)| at).find(|at| {
        message[at + 2..]
            .chars()
            .next()
            .is_some_and(char::is_uppercase)
    });
    match end {
        Some(at) => &message[..=at],
        None => message.trim_end(),
    }
}

/// Maps a Gemini error answer (`status`, `body`) for a request about `model`.
pub fn from_upstream(status: u16, body: &[u8], model: &str) -> OpenAiError {
    let error = UpstreamError::parse(body);
    let message = if error.message.is_empty() {
        format!("The upstream answered with HTTP {status}.")
    } else {
        error.message.clone()
    };
    let lower = message.to_ascii_lowercase();
    // Only a key problem Google states in structure (never words a client could have put in
    // the message) is shown as the gateway's own key trouble.
    let key_reason = error.key_problem().is_some();
    match status {
        429 => {
            let seconds = retry_after_secs(&error);
            if error.is_daily_quota() {
                let mut mapped = OpenAiError::new(
                    429,
                    "rate_limit_error",
                    Some("insufficient_quota"),
                    format!("All upstream keys have exhausted their daily quota for {model}."),
                );
                mapped.retry_after = Some(seconds);
                return mapped;
            }
            let wait = if error.retry_delay.is_some() {
                format!("retry after {seconds}s")
            } else {
                "retry later".to_owned()
            };
            let mut mapped = OpenAiError::new(
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                format!(
                    "All upstream keys are rate limited; {wait}. Upstream: {}",
                    first_sentence(&message)
                ),
            );
            mapped.retry_after = Some(seconds);
            mapped
        }
        400 | 401 | 403 if key_reason || status == 401 => OpenAiError::new(
            503,
            "server_error",
            Some("upstream_auth_failed"),
            format!("No usable upstream API key (last upstream error: {message})"),
        ),
        403 if lower.contains("unregistered callers") => OpenAiError::new(
            500,
            "server_error",
            Some("internal_error"),
            "Internal gateway error: upstream request was sent without credentials.",
        ),
        403 => OpenAiError::new(403, "permission_error", Some("permission_denied"), message),
        400 if error.status == "FAILED_PRECONDITION" => OpenAiError::new(
            503,
            "server_error",
            Some("upstream_precondition_failed"),
            format!("Upstream refused the request: {message}"),
        ),
        400 => {
            let mut mapped = OpenAiError::new(400, "invalid_request_error", None, message);
            if lower.contains("input token count") && lower.contains("exceeds the maximum") {
                mapped.code = Some("context_length_exceeded");
                mapped.param = Some("messages".to_owned());
            } else {
                mapped.param = param_of(&error, &lower);
            }
            mapped
        }
        404 => {
            let mut mapped = OpenAiError::new(
                404,
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "The model `{model}` does not exist or is not supported for generateContent."
                ),
            );
            mapped.param = Some("model".to_owned());
            mapped
        }
        409 => OpenAiError::new(409, "server_error", None, message),
        500 => OpenAiError::new(
            500,
            "server_error",
            Some("upstream_internal_error"),
            message,
        ),
        503 => OpenAiError::new(503, "server_error", Some("upstream_unavailable"), message),
        504 => OpenAiError::new(504, "server_error", Some("upstream_timeout"), message),
        413 => OpenAiError::new(413, "invalid_request_error", None, message),
        other if (400..500).contains(&other) => {
            OpenAiError::new(status, "invalid_request_error", None, message)
        }
        _ => OpenAiError::new(502, "server_error", Some("upstream_error"), message),
    }
}

/// The OpenAI field a Gemini 400 is about: from `BadRequest.fieldViolations`, or the message.
fn param_of(error: &UpstreamError, lower_message: &str) -> Option<String> {
    let field = error.field_violation.as_deref().unwrap_or("");
    let hint = if field.is_empty() {
        lower_message
    } else {
        field
    };
    if hint.starts_with("tools")
        || hint.contains("function_declarations")
        || lower_message.contains("'tools[")
    {
        Some("tools".to_owned())
    } else if hint.starts_with("contents")
        || lower_message.contains("thought_signature")
        || lower_message.contains("function response parts")
        || lower_message.contains("function call turn")
    {
        Some("messages".to_owned())
    } else {
        None
    }
}

/// The answer when every project that could serve is out of quota: a 429 whose `Retry-After`
/// says when the first one frees up, with the last upstream 429's message when there was one.
pub fn pool_exhausted(
    retry_after_secs: u64,
    daily: bool,
    model: &str,
    last_answer: Option<&[u8]>,
) -> OpenAiError {
    let retry_after_secs = retry_after_secs.max(1);
    let mut error = if daily {
        OpenAiError::new(
            429,
            "rate_limit_error",
            Some("insufficient_quota"),
            format!("All upstream keys have exhausted their daily quota for {model}."),
        )
    } else {
        let upstream = last_answer
            .map(UpstreamError::parse)
            .filter(|error| !error.message.is_empty())
            .map(|error| format!(" Upstream: {}", first_sentence(&error.message)))
            .unwrap_or_default();
        OpenAiError::new(
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            format!(
                "All upstream keys are rate limited; retry after {retry_after_secs}s.{upstream}"
            ),
        )
    };
    error.retry_after = Some(retry_after_secs);
    error
}

/// Maps an `{"error": {code, message, status}}` event received inside a 200 stream.
pub fn from_stream_error(error: &Value) -> OpenAiError {
    let code = error.get("code").and_then(Value::as_u64).unwrap_or(500);
    let status = u16::try_from(code).unwrap_or(500);
    let body = json!({ "error": error }).to_string();
    from_upstream(status, body.as_bytes(), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the shared `error_mapping.json`, run through the mapping.
    #[test]
    fn every_fixture_maps_as_the_spec_table_says() {
        let table: Vec<Value> = serde_json::from_str(include_str!(
            "../../tests/fixtures/openai/error_mapping.json"
        ))
        .unwrap();
        assert!(table.len() >= 15);
        for row in table {
            let name = row["gemini_fixture"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            let path = format!(
                "{}/tests/fixtures/gemini/errors/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let body = std::fs::read(&path).unwrap();
            let status = u16::try_from(row["upstream_http_status"].as_u64().unwrap()).unwrap();
            let mapped = from_upstream(status, &body, "gemini-1.5-flash");
            let expected = &row["client_body"]["error"];
            assert_eq!(
                u64::from(mapped.status),
                row["client_http_status"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(mapped.kind, expected["type"], "{name}");
            assert_eq!(json!(mapped.code), expected["code"], "{name}");
            assert_eq!(json!(mapped.param), expected["param"], "{name}");
            let expected_message = expected["message"].as_str().unwrap();
            if name.contains("daily") {
                assert_eq!(
                    mapped.message,
                    "All upstream keys have exhausted their daily quota for gemini-1.5-flash."
                );
            } else if !name.contains("consumer_suspended") {
                // The suspended-key message quotes the key; the gateway redacts it before mapping.
                assert_eq!(mapped.message, expected_message, "{name}");
            }
            if let Some(retry) = row["client_headers"]["retry-after"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
            {
                assert_eq!(mapped.retry_after, Some(retry), "{name}");
            }
        }
    }

    /// `Retry-After` of a 429: its `RetryInfo`; else a minute when it names a quota, a second
    /// when it names none (shared capacity).
    #[test]
    fn a_429_waits_as_long_as_it_says_or_as_its_kind() {
        let retry_after =
            |body: Value| from_upstream(429, body.to_string().as_bytes(), "m").retry_after;
        let capacity = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "Resource has been exhausted (e.g. check quota)."}});
        assert_eq!(retry_after(capacity), Some(1));
        let quota = |details: Vec<Value>| {
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota.", "details": details}})
        };
        let violation = json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "10"}]});
        assert_eq!(retry_after(quota(vec![violation.clone()])), Some(60));
        let retry_info =
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"});
        assert_eq!(retry_after(quota(vec![violation, retry_info])), Some(26));
    }

    #[test]
    fn stream_errors_use_the_same_table() {
        let error = from_stream_error(
            &json!({"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}),
        );
        assert_eq!(
            (error.status, error.kind, error.code),
            (503, "server_error", Some("upstream_unavailable"))
        );
        assert_eq!(
            error.body(),
            json!({"error": {"message": "The model is overloaded.", "type": "server_error", "param": null, "code": "upstream_unavailable"}})
        );
    }
}
