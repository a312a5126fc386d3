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
    // Each route's future is boxed: inline, this future would be as large as the largest of
    // them (the Responses API's, twice chat's), and every request in flight, each of ten
    // thousand streams waiting for its first event among them, would hold that much.
    let result = match (method, rest.as_str()) {
        (Method::POST, "chat/completions") => {
            Box::pin(chat::create_chat_completion(&state, request, &mut meter)).await
        }
        (Method::POST, "completions") => {
            Box::pin(crate::http::openai::completions::create(
                &state, request, &mut meter,
            ))
            .await
        }
        (Method::POST, "embeddings") => {
            Box::pin(embeddings::create_embeddings(&state, request, &mut meter)).await
        }
        (_, path) if is_responses_path(path) => {
            Box::pin(crate::http::openai::responses::handle(
                &state, request, &mut meter,
            ))
            .await
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

#[cfg(test)]
mod tests {
    /// The size of the future an async function returns, without calling it.
    fn size_of_future<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_in_flight_holds_only_its_own_route_s_future() {
        // Inline, the Responses API's future made every request's as large (8.9 KB in a debug
        // build, against 2.0 KB boxed).
        let handle = size_of_future(super::handle);
        assert!(
            handle <= 3 * 1024,
            "openai::handle's future is {handle} bytes"
        );
    }
}
