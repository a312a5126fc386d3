//! What an upstream error is about, decided in one place.
//!
//! Gemini errors are `{"error": {"code", "message", "status", "details": [...]}}`, where
//! `details` holds typed entries (`ErrorInfo`, `QuotaFailure`, `RetryInfo`, …) in no fixed
//! order, so entries are matched on `@type`, never on position. Each rule below cites what
//! Google sends. The answer decides three things: whether another key may do better, what the
//! pool learns (a project's quota, the model's capacity), and whether the key itself is in
//! doubt. Google quotes client text in its messages (`Unknown name "…"`), so nothing the client
//! could have written is ever read as a fact about a key: only `ErrorInfo.reason` or one of
//! Google's key messages *as a whole*, and even then a probe of the gateway's own confirms it
//! before the key leaves service (see `probe::confirm_key_error`).

use pool::{LearnedLimit, QuotaExhausted, QuotaWindow};
use translate::gemini::UpstreamError;

/// What an upstream error answer is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// The key itself, on structured evidence (to be confirmed by a probe).
    Key {
        /// `ErrorInfo.reason`, or which of Google's key messages it was.
        reason: String,
    },
    /// A project's quota for a model.
    Quota(QuotaExhausted),
    /// The upstream's capacity for the model: transient, says nothing about the key.
    Capacity {
        /// The status it answered.
        status: u16,
    },
    /// This key's project cannot serve (user location, billing): another project may.
    Project,
    /// The request itself: every key would fail the same way.
    Request,
}

impl About {
    /// Whether another key may succeed where this one failed.
    pub fn retry_on_another_key(&self) -> bool {
        !matches!(self, Self::Request)
    }

    /// A short word for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Key { .. } => "key_error",
            Self::Quota(_) => "quota",
            Self::Capacity { .. } => "capacity",
            Self::Project => "project_unusable",
            Self::Request => "request_error",
        }
    }
}

/// What the quota named in a 429's `QuotaFailure` is. Google's quota ids read like
/// `GenerateRequestsPerMinutePerProjectPerModel-FreeTier`,
/// `GenerateRequestsPerDayPerProjectPerModel-FreeTier` and
/// `GenerateContentInputTokensPerModelPerMinute-FreeTier`; its `quotaValue` is the limit.
fn quota_of(error: &UpstreamError) -> Option<QuotaExhausted> {
    let id = error.quota_id.as_deref().filter(|id| !id.is_empty())?;
    let window = if id.contains("PerDay") {
        QuotaWindow::Day
    } else {
        QuotaWindow::Minute
    };
    let limit = error.quota_value.and_then(|value| {
        let requests = || u32::try_from(value).ok();
        if id.contains("Token") {
            (window == QuotaWindow::Minute && id.contains("PerMinute"))
                .then_some(LearnedLimit::TokensPerMinute(value))
        } else if id.contains("Requests") && id.contains("PerMinute") {
            requests().map(LearnedLimit::RequestsPerMinute)
        } else if id.contains("Requests") && window == QuotaWindow::Day {
            requests().map(LearnedLimit::RequestsPerDay)
        } else {
            None
        }
    });
    Some(QuotaExhausted {
        window,
        retry_after: error.retry_delay,
        model: error.quota_model.clone(),
        limit,
    })
}

/// Classifies an upstream answer with a non-success `status` and body `body` (already
/// redacted: redaction keeps the shapes matched here).
pub fn classify(status: u16, body: &[u8]) -> About {
    let error = UpstreamError::parse(body);
    match status {
        // A key error as Google states it: ErrorInfo, or its whole message.
        400 | 403 => match error.key_problem() {
            Some(reason) => About::Key { reason },
            // "User location is not supported", billing not enabled: this project cannot
            // serve, another one may.
            None if status == 400 && error.status == "FAILED_PRECONDITION" => About::Project,
            // Anything else is about the request (a bad field, a file of another project, no
            // key at all): a 400 about the body never says anything about a key.
            None => About::Request,
        },
        // The gateway always sends a key; Google refusing it as a credential is about the key.
        401 => About::Key {
            reason: error.reason.unwrap_or_else(|| "UNAUTHENTICATED".to_owned()),
        },
        // RESOURCE_EXHAUSTED with a QuotaFailure that names the quota: the project's quota.
        // Without one ("Resource has been exhausted (e.g. check quota).") it is shared capacity
        // or the caller's address being throttled: nothing about this project.
        429 => quota_of(&error).map_or(About::Capacity { status }, About::Quota),
        // INTERNAL, front-end hiccups (502, often HTML), UNAVAILABLE ("The model is
        // overloaded"), DEADLINE_EXCEEDED: the upstream, model-wide and transient.
        500 | 502 | 503 | 504 => About::Capacity { status },
        // Other statuses (404 model, 413, 501, …) are the request's own.
        _ => About::Request,
    }
}

/// Hides API keys in text that came from the upstream: every `AIza…` key, every `key=` query
/// value, and `known` (the key the request used) wherever it appears. Upstream messages do quote
/// keys, for instance `Consumer 'api_key:AIza…' has been suspended`.
pub fn redact_secrets(text: &str, known: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in known.iter().filter(|secret| !secret.is_empty()) {
        out = out.replace(secret, REDACTED);
    }
    out = redact_after(&out, "AIza", 30);
    redact_after(&out, "key=", 1)
}

const REDACTED: &str = "[REDACTED_KEY]";

/// Replaces `marker` followed by at least `min_len` key characters (`[A-Za-z0-9_-]`) with the
/// redaction marker (keeping `key=` itself, so the text still reads).
fn redact_after(text: &str, marker: &str, min_len: usize) -> String {
    let is_key_byte = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after_marker = &rest[at + marker.len()..];
        let run = after_marker
            .bytes()
            .take_while(|byte| is_key_byte(*byte))
            .count();
        out.push_str(&rest[..at]);
        if run >= min_len {
            if marker == "key=" {
                out.push_str(marker);
            }
            out.push_str(REDACTED);
        } else {
            out.push_str(&rest[at..at + marker.len() + run]);
        }
        rest = &after_marker[run..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../translate/tests/fixtures/gemini/errors/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn about(status: u16, name: &str) -> About {
        // Classified after redaction, as the gateway does.
        let body = redact_secrets(&String::from_utf8(fixture(name)).unwrap(), &[]);
        classify(status, body.as_bytes())
    }

    #[test]
    fn key_errors_are_recognised_from_structure_or_whole_messages() {
        let cases = [
            (400, "error_400_api_key_invalid", "API_KEY_INVALID"),
            (403, "error_403_consumer_suspended", "CONSUMER_SUSPENDED"),
            (403, "error_403_leaked_key", "API_KEY_LEAKED"),
        ];
        for (status, name, reason) in cases {
            assert_eq!(
                about(status, name),
                About::Key {
                    reason: reason.to_owned()
                },
                "{name}"
            );
        }
        assert_eq!(
            classify(401, b""),
            About::Key {
                reason: "UNAUTHENTICATED".into()
            }
        );
        let suspended_no_info = br#"{"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Permission denied: Consumer 'api_key:[REDACTED_KEY]' has been suspended."}}"#;
        assert!(matches!(
            classify(403, suspended_no_info),
            About::Key { .. }
        ));
    }

    #[test]
    fn client_text_quoted_in_a_message_never_blames_a_key() {
        // What Google answers for a body with a field named after a key message.
        for words in [
            "reported as leaked",
            "api key not valid",
            "has been suspended",
            "API key not valid. Please pass a valid API key.",
            "Your API key was reported as leaked. Please use another API key.",
        ] {
            let message = format!(
                "Invalid JSON payload received. Unknown name \"{words}\" at 'generate_content_request': Cannot find field."
            );
            for status in [400, 403] {
                let body = serde_json::json!({"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}});
                assert_eq!(
                    classify(status, body.to_string().as_bytes()),
                    About::Request,
                    "{status} {words}"
                );
            }
        }
        let forged = br#"{"error": {"code": 403, "message": "Permission denied: Consumer 'api_key:x' has been suspended. Unknown name \"y\"", "status": "PERMISSION_DENIED"}}"#;
        assert_eq!(classify(403, forged), About::Request);
    }

    #[test]
    fn quota_errors_carry_window_delay_model_and_limit() {
        assert_eq!(
            about(429, "error_429_resource_exhausted"),
            About::Quota(QuotaExhausted {
                window: QuotaWindow::Minute,
                retry_after: Some(Duration::from_secs(26)),
                model: Some("gemini-2.5-flash".into()),
                limit: Some(LearnedLimit::RequestsPerMinute(10)),
            })
        );
        assert_eq!(
            about(429, "error_429_daily_quota"),
            About::Quota(QuotaExhausted {
                window: QuotaWindow::Day,
                retry_after: Some(Duration::from_secs(47)),
                model: Some("gemini-2.5-flash".into()),
                limit: Some(LearnedLimit::RequestsPerDay(250)),
            })
        );
        let tokens = br#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaValue": "250000"}]}]}}"#;
        assert!(matches!(
            classify(429, tokens),
            About::Quota(QuotaExhausted {
                limit: Some(LearnedLimit::TokensPerMinute(250_000)),
                ..
            })
        ));
    }

    #[test]
    fn capacity_is_a_bare_429_or_an_upstream_fault() {
        assert_eq!(
            about(429, "error_429_no_details"),
            About::Capacity { status: 429 }
        );
        assert_eq!(
            about(503, "error_503_unavailable"),
            About::Capacity { status: 503 }
        );
        assert_eq!(
            about(500, "error_500_internal"),
            About::Capacity { status: 500 }
        );
        assert_eq!(
            classify(502, b"<html>Bad Gateway</html>"),
            About::Capacity { status: 502 }
        );
        assert_eq!(classify(504, b""), About::Capacity { status: 504 });
    }

    #[test]
    fn hostile_retry_info_neither_panics_nor_escapes_the_clamp_later() {
        for delay in ["1e20s", "-5s", "99999999999s", "NaNs", "s", "1e400s"] {
            let body = format!(
                r#"{{"error": {{"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q", "details": [
                {{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}}]}},
                {{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "{delay}"}}]}}}}"#
            );
            let About::Quota(quota) = classify(429, body.as_bytes()) else {
                panic!("{delay}: not a quota error");
            };
            assert!(
                quota.retry_after.is_none_or(|d| d >= Duration::ZERO),
                "{delay}"
            );
        }
    }

    #[test]
    fn project_and_request_errors() {
        assert_eq!(
            about(400, "error_400_failed_precondition_location"),
            About::Project
        );
        for (status, name) in [
            (400, "error_400_invalid_argument_schema"),
            (400, "error_400_context_too_long"),
            (400, "error_400_missing_thought_signature"),
            (400, "error_400_function_response_count"),
            (404, "error_404_model_not_found"),
            // No key reached Google: a gateway fault, not the key's, and no other key helps.
            (403, "error_403_unregistered_caller"),
        ] {
            assert_eq!(about(status, name), About::Request, "{name}");
        }
    }

    #[test]
    fn keys_are_redacted_from_upstream_text() {
        let body = String::from_utf8(fixture("error_403_consumer_suspended")).unwrap();
        let redacted = redact_secrets(&body, &[]);
        assert!(!redacted.contains("AIzaSyDUMMY"), "{redacted}");
        assert!(redacted.contains("api_key:[REDACTED_KEY]"));

        let text = "GET /v1beta/models?key=secret-123&alt=sse failed for my-own-key; AIza";
        let redacted = redact_secrets(text, &["my-own-key"]);
        assert_eq!(
            redacted,
            "GET /v1beta/models?key=[REDACTED_KEY]&alt=sse failed for [REDACTED_KEY]; AIza"
        );
    }
}
