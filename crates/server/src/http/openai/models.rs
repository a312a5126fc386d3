//! `GET /v1/models` and `GET /v1/models/{id}`, translated from Gemini's model list.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::common::*;
use crate::http::error::ApiError;
use crate::http::native::{ANSWER_LIMIT, read_limited};
use crate::service::upstream::Outgoing;
use crate::state::App;

/// Sends a GET for `path_and_query` with failover and returns the JSON answer.
pub(crate) async fn get_json(
    app: &App,
    path_and_query: String,
    model: &str,
) -> Result<Value, ApiError> {
    let outgoing = Outgoing {
        method: Method::GET,
        path_and_query,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        streaming: false,
        model: None,
        project: None,
    };
    let committed = app
        .relay
        .send_with_failover(&outgoing)
        .await
        .map_err(|failure| upstream_error(failure, model))?;
    let body = read_limited(committed.response, ANSWER_LIMIT).await?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string()))
}

/// `GET /v1/models`: every page of the upstream list, chat and embedding models only.
pub(crate) async fn list_models(app: &App) -> Result<Response, ApiError> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    // Bounded: a misbehaving upstream cannot keep the gateway paging forever.
    for _ in 0..50 {
        let mut path = "v1beta/models?pageSize=1000".to_owned();
        if let Some(token) = &token {
            path.push_str("&pageToken=");
            path.push_str(
                &url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
            );
        }
        let page = get_json(app, path, "").await?;
        token = page
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        pages.push(page);
        if token.is_none() {
            break;
        }
    }
    Ok(axum::Json(translate::openai::models::openai_model_list(&pages)).into_response())
}

/// `GET /v1/models/{id}`.
pub(crate) async fn retrieve_model(app: &App, id: &str) -> Result<Response, ApiError> {
    let model = translate::common::model::normalize_model(id)?;
    let entry = get_json(app, format!("v1beta/models/{model}"), &model).await?;
    let object = translate::openai::models::openai_model(&entry).unwrap_or_else(
        || serde_json::json!({"id": model, "object": "model", "created": 0, "owned_by": "google"}),
    );
    Ok(axum::Json(object).into_response())
}
