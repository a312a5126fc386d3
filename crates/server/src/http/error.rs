//! Errors the gateway itself answers with, rendered in the caller's dialect: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` on the OpenAI routes, Gemini's
//! `{"error": {"code", "message", "status"}}` on the native ones.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape the caller expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI-compatible routes (`/v1/chat/completions`, …).
    OpenAi,
    /// Native Gemini routes (`/v1beta/…`, native `/v1/…`, uploads).
    Gemini,
}

/// An error answered by the gateway (not relayed from the upstream).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No client key in the request.
    #[error(
        "Missing API key. Pass a gateway client key as 'Authorization: Bearer <key>', 'x-goog-api-key', 'x-api-key' or '?key='."
    )]
    MissingKey,
    /// The client key is unknown or disabled.
    #[error("Invalid API key.")]
    InvalidKey,
    /// Too many failed authentications came from the caller's address: it backs off.
    #[error("Too many requests with invalid API keys from this address; retry later.")]
    AuthBackOff {
        /// When the address may try again.
        retry_after: std::time::Duration,
    },
    /// The client key's own limits refuse the request.
    #[error("{0}.")]
    ClientRefused(pool::ClientRefusal),
    /// The client key may not use this model.
    #[error("This API key may not use the model `{0}`.")]
    ModelNotAllowed(String),
    /// The request names a file or cached content (`files/x`, `cachedContents/y`) that another
    /// client key created. Worded as Google words a resource the caller may not see, so that
    /// nothing tells it from one that does not exist.
    #[error("{}", resource_denied_message(.0))]
    ResourceDenied(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A field of the request is wrong (OpenAI's `param` names it).
    #[error("{message}")]
    InvalidField {
        /// What is wrong.
        message: String,
        /// The field, such as `messages[2].content`.
        param: Option<String>,
    },
    /// An upstream error answer, already mapped to OpenAI's status, type and code.
    #[error("{}", .0.message)]
    Upstream(translate::openai::errors::OpenAiError),
    /// The upstream answered 200 with something that is not a Gemini answer.
    #[error("The upstream answer could not be read.")]
    UpstreamInvalidResponse(String),
    /// The route or resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than the gateway accepts.
    #[error("The request body is larger than {limit} bytes.")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The path and query are longer than any Gemini route needs.
    #[error("The request URI is longer than {limit} bytes.")]
    UriTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// No upstream key can serve the request.
    #[error("{0}")]
    NoUsableKey(String),
    /// Every project of the model is cooling after capacity failures of the upstream.
    #[error("{}", capacity_message(.model.as_deref(), *.status, *.retry_after))]
    Capacity {
        /// The model.
        model: Option<String>,
        /// What the upstream answered (429 or a 5xx).
        status: u16,
        /// When the next try may go.
        retry_after: std::time::Duration,
    },
    /// Every answer the upstream gave was empty (a 200 without content).
    #[error(
        "The upstream returned an empty answer (no content, finishReason STOP, no output tokens) on every try."
    )]
    EmptyAnswer,
    /// Every attempt failed to connect to the upstream.
    #[error("The upstream could not be reached.")]
    UpstreamUnreachable,
    /// The upstream did not answer in time.
    #[error("The upstream did not answer in time.")]
    UpstreamTimeout,
    /// A bug or an unexpected condition; the detail is logged, never returned.
    #[error("Internal error.")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status, the same in both dialects.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::ClientRefused(pool::ClientRefusal::Expired) => StatusCode::UNAUTHORIZED,
            Self::ClientRefused(_) | Self::AuthBackOff { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ModelNotAllowed(_) | Self::ResourceDenied(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::Upstream(error) => {
                StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::UpstreamInvalidResponse(_) => StatusCode::BAD_GATEWAY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::NoUsableKey(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Capacity { status: 429, .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Capacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::EmptyAnswer => StatusCode::BAD_GATEWAY,
            Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The google.rpc status name of the Gemini error shape.
    fn gemini_status(&self) -> &'static str {
        match self {
            Self::MissingKey | Self::InvalidKey => "UNAUTHENTICATED",
            Self::ClientRefused(pool::ClientRefusal::Expired) => "UNAUTHENTICATED",
            Self::ClientRefused(_) | Self::AuthBackOff { .. } => "RESOURCE_EXHAUSTED",
            Self::ModelNotAllowed(_) | Self::ResourceDenied(_) => "PERMISSION_DENIED",
            Self::BadRequest(_)
            | Self::InvalidField { .. }
            | Self::PayloadTooLarge { .. }
            | Self::UriTooLong { .. } => "INVALID_ARGUMENT",
            Self::Upstream(error) => match error.status {
                400 | 413 => "INVALID_ARGUMENT",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                504 => "DEADLINE_EXCEEDED",
                _ => "UNAVAILABLE",
            },
            Self::UpstreamInvalidResponse(_) | Self::EmptyAnswer => "UNAVAILABLE",
            Self::Capacity { status: 429, .. } => "RESOURCE_EXHAUSTED",
            Self::Capacity { .. } => "UNAVAILABLE",
            Self::NotFound(_) => "NOT_FOUND",
            Self::NoUsableKey(_) | Self::UpstreamUnreachable => "UNAVAILABLE",
            Self::UpstreamTimeout => "DEADLINE_EXCEEDED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::MissingKey => ("invalid_request_error", Some("missing_api_key")),
            Self::InvalidKey => ("invalid_request_error", Some("invalid_api_key")),
            Self::ClientRefused(pool::ClientRefusal::Expired) => {
                ("invalid_request_error", Some("expired_api_key"))
            }
            Self::ClientRefused(pool::ClientRefusal::Tokens { .. }) => {
                ("rate_limit_error", Some("insufficient_quota"))
            }
            Self::ClientRefused(_) => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::AuthBackOff { .. } => {
                ("rate_limit_error", Some("too_many_failed_authentications"))
            }
            Self::ModelNotAllowed(_) => ("permission_error", Some("model_not_allowed")),
            Self::ResourceDenied(_) => ("permission_error", Some("permission_denied")),
            Self::BadRequest(_) | Self::InvalidField { .. } => ("invalid_request_error", None),
            Self::Upstream(error) => (error.kind, error.code),
            Self::UpstreamInvalidResponse(_) => ("server_error", Some("upstream_invalid_response")),
            Self::NotFound(_) => ("invalid_request_error", Some("not_found")),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("payload_too_large")),
            Self::UriTooLong { .. } => ("invalid_request_error", Some("uri_too_long")),
            Self::NoUsableKey(_) => ("server_error", Some("no_usable_upstream_key")),
            Self::Capacity { status: 429, .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::Capacity { .. } => ("server_error", Some("upstream_overloaded")),
            Self::EmptyAnswer => ("server_error", Some("upstream_empty_response")),
            Self::UpstreamUnreachable => ("server_error", Some("upstream_connection_error")),
            Self::UpstreamTimeout => ("server_error", Some("upstream_timeout")),
            Self::Internal(_) => ("server_error", None),
        }
    }

    /// Renders the error in `dialect`.
    pub fn into_response_for(self, dialect: Dialect) -> Response {
        match &self {
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            Self::UpstreamInvalidResponse(detail) => {
                tracing::warn!(%detail, "unreadable upstream answer");
            }
            _ => {}
        }
        let status = self.status();
        let retry_after = match &self {
            Self::Upstream(error) => error.retry_after,
            Self::ClientRefused(refusal) => refusal.retry_after().map(whole_seconds),
            Self::Capacity { retry_after, .. } | Self::AuthBackOff { retry_after } => {
                Some(whole_seconds(*retry_after))
            }
            // Keys being checked are back in seconds; keys out of service need the operator.
            Self::NoUsableKey(_) => Some(NO_KEY_RETRY_AFTER_SECS),
            _ => None,
        }
        // Every 429 and 503 says when to come back, so SDKs retry at the right time.
        .or_else(|| matches!(status.as_u16(), 429 | 503).then_some(DEFAULT_RETRY_AFTER_SECS));
        let param = match &self {
            Self::InvalidField { param, .. } => param.clone(),
            Self::Upstream(error) => error.param.clone(),
            _ => None,
        };
        let message = self.to_string();
        let body = match dialect {
            Dialect::Gemini => json!({"error": {
                "code": status.as_u16(),
                "message": message,
                "status": self.gemini_status(),
            }}),
            Dialect::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Google's words for a file or cached content the caller may not see (`files/abc` gives
/// "… the File abc …").
fn resource_denied_message(resource: &str) -> String {
    let (collection, id) = resource.split_once('/').unwrap_or(("", resource));
    let kind = if collection == "cachedContents" {
        "CachedContent"
    } else {
        "File"
    };
    format!("You do not have permission to access the {kind} {id} or it may not exist.")
}

/// `Retry-After` of a 503 when no key can serve.
const NO_KEY_RETRY_AFTER_SECS: u64 = 10;
/// `Retry-After` of a 429 or 503 that names no time of its own.
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// Whole seconds, rounded up, at least one (what `Retry-After` carries).
pub fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait
        .min(std::time::Duration::from_secs(86_400))
        .as_secs_f64()
        .ceil() as u64)
        .max(1)
}

/// `HH:MM:SS UTC` of the moment `wait` from now.
pub fn utc_time_after(wait: std::time::Duration) -> String {
    let at = std::time::SystemTime::now()
        .checked_add(wait)
        .unwrap_or_else(std::time::SystemTime::now)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let of_day = at % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The message of [`ApiError::Capacity`]: what the upstream said and when the next try goes.
fn capacity_message(model: Option<&str>, status: u16, retry_after: std::time::Duration) -> String {
    let said = match status {
        429 => {
            "429 RESOURCE_EXHAUSTED (shared capacity or this gateway's address throttled, not a quota)"
        }
        500 => "500 INTERNAL",
        502 => "502 (no answer from its front end)",
        503 => "503 UNAVAILABLE (the model is overloaded)",
        504 => "504 DEADLINE_EXCEEDED",
        _ => "an error",
    };
    let model = model.map_or_else(|| "the model".to_owned(), |m| format!("`{m}`"));
    format!(
        "Every project of {model} is cooling for capacity: the upstream answered {said}. The next try goes at {}; retry in {} s.",
        utc_time_after(retry_after),
        whole_seconds(retry_after)
    )
}

impl From<crate::service::ownership::OwnershipError> for ApiError {
    fn from(error: crate::service::ownership::OwnershipError) -> Self {
        use crate::service::ownership::OwnershipError;
        match error {
            OwnershipError::Denied(resource) => Self::ResourceDenied(resource),
            OwnershipError::BadRequest(message) => Self::BadRequest(message),
            OwnershipError::UnreadableListing(collection) => {
                Self::UpstreamInvalidResponse(format!("a {collection} listing"))
            }
            OwnershipError::Internal(message) => Self::Internal(message),
        }
    }
}

impl From<translate::TranslateError> for ApiError {
    fn from(error: translate::TranslateError) -> Self {
        match error {
            translate::TranslateError::InvalidRequest { message, param } => {
                Self::InvalidField { message, param }
            }
            translate::TranslateError::UpstreamResponse(detail) => {
                Self::UpstreamInvalidResponse(detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(error: ApiError, dialect: Dialect) -> (u16, serde_json::Value) {
        let response = error.into_response_for(dialect);
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn each_dialect_gets_its_own_shape() {
        assert_eq!(
            render(ApiError::InvalidKey, Dialect::OpenAi).await,
            (
                401,
                json!({"error": {"message": "Invalid API key.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
            )
        );
        assert_eq!(
            render(ApiError::InvalidKey, Dialect::Gemini).await,
            (
                401,
                json!({"error": {"code": 401, "message": "Invalid API key.", "status": "UNAUTHENTICATED"}})
            )
        );
    }

    #[tokio::test]
    async fn another_clients_resource_is_refused_in_googles_words() {
        assert_eq!(
            render(
                ApiError::ResourceDenied("files/abc".into()),
                Dialect::Gemini
            )
            .await,
            (
                403,
                json!({"error": {"code": 403, "message": "You do not have permission to access the File abc or it may not exist.", "status": "PERMISSION_DENIED"}})
            )
        );
        assert_eq!(
            render(
                ApiError::ResourceDenied("cachedContents/c1".into()),
                Dialect::OpenAi
            )
            .await,
            (
                403,
                json!({"error": {"message": "You do not have permission to access the CachedContent c1 or it may not exist.", "type": "permission_error", "param": null, "code": "permission_denied"}})
            )
        );
    }

    #[tokio::test]
    async fn internal_details_stay_out_of_the_body() {
        let (status, body) = render(
            ApiError::Internal("database password wrong".into()),
            Dialect::OpenAi,
        )
        .await;
        assert_eq!(status, 500);
        assert!(!body.to_string().contains("password"));
    }
}
