//! The OpenAI-compatible routes under `/v1`. Which `/v1` paths are OpenAI's is decided here;
//! the translation itself lives in the `translate` crate.

use axum::extract::Request;
use axum::response::Response;

use crate::error::{ApiError, Dialect};

/// Whether a path below `/v1/` is an OpenAI route. `models` and `models/{id}` are shared with
/// Gemini: a request authenticated the Gemini way (`x-goog-api-key` or `?key=`) is native.
pub fn is_openai_path(rest: &str, gemini_auth: bool) -> bool {
    match rest {
        "chat/completions" | "embeddings" | "completions" => true,
        "models" => !gemini_auth,
        _ => match rest.strip_prefix("models/") {
            Some(id) => !gemini_auth && !id.contains([':', '/']),
            None => false,
        },
    }
}

/// Answers OpenAI routes this build does not serve yet, in OpenAI's error shape.
pub async fn unsupported(request: Request) -> Response {
    ApiError::NotFound(format!(
        "{} {} is not served by this gateway build.",
        request.method(),
        request.uri().path()
    ))
    .into_response_for(Dialect::OpenAi)
}
