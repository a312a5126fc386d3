//! `POST /v1/embeddings`, translated to Gemini's `batchEmbedContents`.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use translate::openai::embeddings::{EmbeddingsPlan, EmbeddingsRequest};

use super::common::*;
use crate::http::error::ApiError;
use crate::http::native::{ANSWER_LIMIT, read_limited};
use crate::service::accounting::RequestMeter;
use crate::service::upstream::Outgoing;
use crate::state::App;

/// `POST /v1/embeddings`: one `embedContent`, or `batchEmbedContents` in slices of 100.
pub(crate) async fn create_embeddings(
    app: &App,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let client = crate::http::auth::client(request.extensions());
    let embeddings: EmbeddingsRequest = read_json(request).await?;
    let plan = translate::openai::embeddings::plan(&embeddings)?;
    crate::http::auth::ensure_model_allowed(client.as_deref(), &plan.model)?;
    if let Some(meter) = meter.as_mut() {
        meter.set_model(&plan.model);
    }
    let mut vectors = Vec::with_capacity(plan.inputs.len());
    for (path, body) in plan.upstream_calls() {
        let body =
            serde_json::to_vec(&body).map_err(|error| ApiError::Internal(error.to_string()))?;
        let outgoing = Outgoing {
            method: Method::POST,
            path_and_query: path,
            headers: json_headers(),
            body: Bytes::from(body),
            streaming: false,
            model: Some(plan.model.clone()),
            project: None,
        };
        let committed = app
            .relay
            .send_with_failover(&outgoing)
            .await
            .map_err(|failure| upstream_error(failure, &plan.model))?;
        if let Some(meter) = meter.as_mut() {
            meter.set_key(&committed.key);
        }
        let answer = read_limited(committed.response, ANSWER_LIMIT).await?;
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|error| ApiError::UpstreamInvalidResponse(error.to_string()))?;
        vectors.extend(EmbeddingsPlan::vectors_of(&answer)?);
    }
    if vectors.len() != plan.inputs.len() {
        return Err(ApiError::UpstreamInvalidResponse(format!(
            "{} vectors for {} inputs",
            vectors.len(),
            plan.inputs.len()
        )));
    }
    Ok(axum::Json(plan.response(vectors)).into_response())
}
