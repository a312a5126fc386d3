//! What an upstream error says about the key that received it.
//!
//! Gemini errors are `{"error": {"code", "message", "status", "details": [...]}}`, where
//! `details` holds typed entries (`ErrorInfo`, `QuotaFailure`, `RetryInfo`, …) in no fixed
//! order, so entries are matched on `@type`, never on position. Only key-level problems (auth,
//! suspension, quota, upstream faults) move a request to another key; an error about the request
//! itself would fail the same way on every key and goes back to the client.

use std::time::Duration;

use translate::gemini::UpstreamError;

/// A failure that says something about the key (or upstream), not about the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The key is invalid, expired, suspended, leaked or not allowed to call the API.
    KeyInvalid {
        /// The `ErrorInfo.reason` or a short description, kept for the operator.
        reason: String,
    },
    /// 429 RESOURCE_EXHAUSTED.
    RateLimited {
        /// `RetryInfo.retryDelay`, when the upstream gave one.
        retry_after: Option<Duration>,
        /// Whether the violated quota is a per-day one (`QuotaFailure` quotaId `…PerDay…`).
        per_day: bool,
        /// The model named in `QuotaFailure.quotaDimensions`, when given.
        model: Option<String>,
    },
    /// 5xx from the upstream.
    ServerError,
    /// No HTTP answer: connection refused or reset, TLS failure, timeout before headers.
    Connection,
}

/// How the gateway should treat an upstream error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What the pool should learn, if anything.
    pub failure: Option<Failure>,
    /// Whether another key may succeed where this one failed.
    pub retry_on_another_key: bool,
}

/// ErrorInfo reasons that mean the key itself cannot be used.
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

/// Message fragments of key-level 400/403 errors that come without an ErrorInfo.
const KEY_MESSAGES: [&str; 4] = [
    "api key not valid",
    "api key not found",
    "reported as leaked",
    "has been suspended",
];

/// Classifies an upstream answer with a non-success `status` and body `body`.
pub fn classify_upstream_error(status: u16, body: &[u8]) -> Verdict {
    let error = UpstreamError::parse(body);
    let message = error.message.to_ascii_lowercase();
    let key_problem = error
        .reason
        .as_deref()
        .filter(|reason| KEY_REASONS.contains(reason))
        .map(str::to_owned)
        .or_else(|| {
            KEY_MESSAGES
                .iter()
                .find(|fragment| message.contains(**fragment))
                .map(|fragment| (*fragment).to_owned())
        });
    match status {
        400 | 403 if key_problem.is_some() => key_invalid(key_problem.unwrap_or_default()),
        401 => key_invalid(error.reason.unwrap_or_else(|| "UNAUTHENTICATED".to_owned())),
        // Location not supported, billing required: this key (or its project) cannot serve,
        // another one may.
        400 if error.status == "FAILED_PRECONDITION" => Verdict {
            failure: None,
            retry_on_another_key: true,
        },
        429 => Verdict {
            failure: Some(Failure::RateLimited {
                retry_after: error.retry_delay,
                per_day: error
                    .quota_id
                    .as_deref()
                    .is_some_and(|id| id.contains("PerDay")),
                model: error.quota_model,
            }),
            retry_on_another_key: true,
        },
        500..=599 => Verdict {
            failure: Some(Failure::ServerError),
            retry_on_another_key: true,
        },
        _ => Verdict {
            failure: None,
            retry_on_another_key: false,
        },
    }
}

fn key_invalid(reason: String) -> Verdict {
    Verdict {
        failure: Some(Failure::KeyInvalid { reason }),
        retry_on_another_key: true,
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
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../translate/tests/fixtures/gemini/errors/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn verdict(status: u16, name: &str) -> Verdict {
        classify_upstream_error(status, &fixture(name))
    }

    #[test]
    fn key_level_errors_take_the_key_out_and_retry() {
        let cases = [
            (400, "error_400_api_key_invalid", "API_KEY_INVALID"),
            (403, "error_403_consumer_suspended", "CONSUMER_SUSPENDED"),
            (403, "error_403_leaked_key", "reported as leaked"),
        ];
        for (status, name, reason) in cases {
            assert_eq!(
                verdict(status, name),
                Verdict {
                    failure: Some(Failure::KeyInvalid {
                        reason: reason.to_owned()
                    }),
                    retry_on_another_key: true,
                },
                "{name}"
            );
        }
        assert_eq!(
            classify_upstream_error(401, b"").failure,
            Some(Failure::KeyInvalid {
                reason: "UNAUTHENTICATED".into()
            })
        );
    }

    #[test]
    fn quota_errors_carry_delay_scope_and_model() {
        assert_eq!(
            verdict(429, "error_429_resource_exhausted").failure,
            Some(Failure::RateLimited {
                retry_after: Some(Duration::from_secs(26)),
                per_day: false,
                model: Some("gemini-2.5-flash".into()),
            })
        );
        let daily = verdict(429, "error_429_daily_quota");
        assert!(matches!(
            daily.failure,
            Some(Failure::RateLimited { per_day: true, .. })
        ));
        assert!(daily.retry_on_another_key);
        assert_eq!(
            verdict(429, "error_429_no_details").failure,
            Some(Failure::RateLimited {
                retry_after: None,
                per_day: false,
                model: None
            })
        );
    }

    #[test]
    fn upstream_faults_retry_and_request_errors_do_not() {
        for (status, name) in [(500, "error_500_internal"), (503, "error_503_unavailable")] {
            assert_eq!(
                verdict(status, name),
                Verdict {
                    failure: Some(Failure::ServerError),
                    retry_on_another_key: true
                }
            );
        }
        assert_eq!(
            verdict(400, "error_400_failed_precondition_location"),
            Verdict {
                failure: None,
                retry_on_another_key: true
            }
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
            assert_eq!(
                verdict(status, name),
                Verdict {
                    failure: None,
                    retry_on_another_key: false
                },
                "{name}"
            );
        }
        // A 502 with an HTML body from a front end is still an upstream fault.
        assert!(classify_upstream_error(502, b"<html>Bad Gateway</html>").retry_on_another_key);
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
