//! The OpenAI-compatible routes under `/v1`: chat completions (plain and streamed), Responses,
//! legacy completions, models and embeddings, dispatched here. Requests are translated by the `translate` crate, sent with failover, and the
//! answers translated back; errors come in OpenAI's shape with the status its SDKs expect.

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

mod chat;
mod common;
pub mod completions;
mod embeddings;
mod models;
pub mod responses;

use crate::http::dialect::is_responses_path;
use crate::http::error::{ApiError, Dialect};
use crate::http::native::client_id;
use crate::service::accounting::RequestMeter;
use crate::state::AppState;

/// Dispatches an OpenAI route.
pub async fn handle(state: AppState, request: Request) -> Response {
    let rest = request.uri().path().trim_start_matches("/v1/").to_owned();
    let method = request.method().clone();
    let route = match rest.as_str() {
        "chat/completions" => "/v1/chat/completions",
        "completions" => "/v1/completions",
        "embeddings" => "/v1/embeddings",
        _ if is_responses_path(&rest) => "/v1/responses",
        _ => "/v1/models",
    };
    let mut meter = Some(RequestMeter::start(
        &state.meter_sinks,
        route,
        client_id(&request),
    ));
    let result = match (method, rest.as_str()) {
        (Method::POST, "chat/completions") => {
            chat::create_chat_completion(&state, request, &mut meter).await
        }
        (Method::POST, "completions") => {
            crate::http::openai::completions::create(&state, request, &mut meter).await
        }
        (Method::POST, "embeddings") => {
            embeddings::create_embeddings(&state, request, &mut meter).await
        }
        (_, path) if is_responses_path(path) => {
            crate::http::openai::responses::handle(&state, request, &mut meter).await
        }
        (Method::GET, "models") => models::list_models(&state).await,
        (Method::GET, path) if path.starts_with("models/") => {
            models::retrieve_model(&state, &path["models/".len()..]).await
        }
        (method, path) => Err(ApiError::NotFound(format!(
            "{method} /v1/{path} is not an OpenAI-compatible route of this gateway."
        ))),
    };
    let response = result.unwrap_or_else(|error| error.into_response_for(Dialect::OpenAi));
    // Not moved into a stream: the request ends here.
    if let Some(mut meter) = meter {
        meter.set_status(response.status().as_u16());
    }
    response
}
