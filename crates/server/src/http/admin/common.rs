//! What every management route shares: its error shape, body and query parsing, and ids.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The management API's errors: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No session, a bad or expired token, wrong credentials.
    #[error("Authentication required.")]
    Unauthorized,
    /// Authenticated, but the call is refused (a missing CSRF header).
    #[error("{0}")]
    Forbidden(String),
    /// Invalid input.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// No such key.
    #[error("{0}")]
    NotFound(String),
    /// Too many failed logins from this address or for this user name, or too many logins
    /// being checked at once.
    #[error("Too many login attempts; try again later.")]
    TooManyRequests {
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// A bug or a database failure; the detail is logged, not returned.
    #[error("Internal error.")]
    Internal(String),
}

impl AdminError {
    /// A 400 about `field`.
    pub fn invalid(message: impl Into<String>, field: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<crate::service::admin_auth::AdminAuthError> for AdminError {
    fn from(error: crate::service::admin_auth::AdminAuthError) -> Self {
        use crate::service::admin_auth::AdminAuthError;
        match error {
            AdminAuthError::Unauthorized => Self::Unauthorized,
            AdminAuthError::Signing(message) => Self::Internal(message),
        }
    }
}

impl From<store::StorageError> for AdminError {
    fn from(error: store::StorageError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "management API error");
        }
        let (status, code) = self.status_and_code();
        let field = match &self {
            Self::BadRequest { field, .. } => field.clone(),
            _ => None,
        };
        let mut error = json!({"code": code, "message": self.to_string()});
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        match self {
            Self::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests { retry_after } => {
                // Rounded up: a client that waits what it is told is not refused again.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        response
    }
}

/// Parses a JSON body; unknown fields, wrong types and bad JSON are 400s naming the field.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        AdminError::BadRequest {
            message: format!("Invalid request body: {inner}."),
            field: (path != "." && !inner.is_syntax() && !inner.is_eof()).then_some(path),
        }
    })
}

/// Query parameters, with a 400 in the API's shape when they do not parse.
pub struct AdminQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AdminQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|query| Self(query.0))
            .map_err(|error| AdminError::BadRequest {
                message: format!("Invalid query: {}", error.body_text()),
                field: None,
            })
    }
}

/// A numeric id from the path.
pub fn parse_id(id: &str) -> Result<i64, AdminError> {
    id.parse()
        .map_err(|_| AdminError::invalid("The id must be a number.", "id"))
}
