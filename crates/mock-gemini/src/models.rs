//! The models the mock serves, listed and described as Google does.

use axum::response::Response;
use serde_json::{Value, json};

use crate::http::{Incoming, google_error, json_response};
use crate::state::MockState;

/// The models the mock serves: generation, embedding and a predict-only one (to test filtering).
const MODELS: [(&str, &str, bool); 8] = [
    ("gemini-2.5-flash", "generateContent", true),
    ("gemini-2.5-pro", "generateContent", true),
    ("gemini-2.5-flash-lite", "generateContent", true),
    ("gemini-2.0-flash", "generateContent", false),
    ("gemini-3-pro-preview", "generateContent", true),
    ("gemini-3-flash-preview", "generateContent", true),
    ("gemini-embedding-001", "embedContent", false),
    ("imagen-4.0-generate-001", "predict", false),
];

fn model_entry(id: &str, method: &str, thinking: bool) -> Value {
    let methods: Vec<&str> = match method {
        "generateContent" => vec!["generateContent", "countTokens", "createCachedContent"],
        "embedContent" => vec!["embedContent", "countTextTokens", "countTokens"],
        other => vec![other],
    };
    let mut entry = json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": id,
        "description": format!("Mock of {id}"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": methods,
    });
    if thinking {
        entry["thinking"] = Value::Bool(true);
    }
    entry
}

pub(crate) fn find_model(id: &str) -> Option<(&'static str, &'static str, bool)> {
    MODELS.iter().copied().find(|(name, _, _)| *name == id)
}

pub(crate) fn list_models(state: &MockState, incoming: &Incoming) -> Response {
    let page_size = incoming
        .query("pageSize")
        .and_then(|size| size.parse::<usize>().ok())
        .filter(|size| *size > 0)
        .unwrap_or(state.config.default_models_page_size)
        .min(1000);
    let offset = incoming
        .query("pageToken")
        .and_then(|token| token.strip_prefix("page-"))
        .and_then(|offset| offset.parse::<usize>().ok())
        .unwrap_or(0);
    let models: Vec<Value> = MODELS
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|(id, method, thinking)| model_entry(id, method, *thinking))
        .collect();
    let mut body = json!({ "models": models });
    if offset + page_size < MODELS.len() {
        body["nextPageToken"] = Value::String(format!("page-{}", offset + page_size));
    }
    json_response(&body)
}

pub(crate) fn get_model(id: &str) -> Response {
    match find_model(id) {
        Some((id, method, thinking)) => json_response(&model_entry(id, method, thinking)),
        None => model_not_found(id, "get"),
    }
}

pub(crate) fn model_not_found(model: &str, method: &str) -> Response {
    google_error(
        404,
        &format!(
            "models/{model} is not found for API version v1beta, or is not supported for {method}. Call ListModels to see the list of available models and their supported methods."
        ),
        "NOT_FOUND",
        Vec::new(),
    )
}
