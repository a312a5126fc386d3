//! The HTTP side every handler shares: the request as the handlers see it, who called (Google's
//! answers to a missing, unknown or suspended key), and Google's JSON and error bodies.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::MockState;

/// Everything the handlers need to know about a request.
pub(crate) struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The key, from the header or the `key` query parameter (both are accepted by Google).
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-goog-api-key").or_else(|| self.query("key"))
    }

    pub fn json(&self) -> Result<Value, Response> {
        serde_json::from_slice(&self.body).map_err(|error| {
            google_error(
                400,
                &format!("Invalid JSON payload received. {error}"),
                "INVALID_ARGUMENT",
                Vec::new(),
            )
        })
    }
}

pub(crate) struct Caller {
    pub key: String,
    pub project: String,
}

/// Google's answers to a missing, unknown or suspended key.
pub(crate) fn authenticate(state: &MockState, key: Option<&str>) -> Result<String, Response> {
    let Some(key) = key else {
        return Err(google_error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
            Vec::new(),
        ));
    };
    if state.config.suspended_keys.iter().any(|k| k == key) {
        return Err(google_error(
            403,
            &format!("Permission denied: Consumer 'api_key:{key}' has been suspended."),
            "PERMISSION_DENIED",
            vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONSUMER_SUSPENDED",
                "domain": "googleapis.com",
                "metadata": {"containerInfo": format!("api_key:{key}")}
            })],
        ));
    }
    state.project_of(key).ok_or_else(|| {
        google_error(
            400,
            "API key not valid. Please pass a valid API key.",
            "INVALID_ARGUMENT",
            vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            })],
        )
    })
}

/// A Gemini error body: `{"error": {"code", "message", "status", "details"?}}`.
pub(crate) fn google_error(
    code: u16,
    message: &str,
    status: &str,
    details: Vec<Value>,
) -> Response {
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    let body = serde_json::to_string_pretty(&json!({ "error": error })).unwrap_or_default();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

pub(crate) fn json_response(value: &Value) -> Response {
    let body = serde_json::to_string_pretty(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}
