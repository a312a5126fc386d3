//! Client authentication on the API routes.
//!
//! A client key may come as `Authorization: Bearer`, `x-goog-api-key`, `x-api-key` or `?key=`
//! (the forms OpenAI and Gemini SDKs use). It is looked up by its SHA-256 digest in an
//! in-memory map, so no database round trip sits on the request path, and the key itself is
//! never stored. Comparing digests leaks nothing useful through timing: finding a digest prefix
//! does not help find a key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::http::dialect::{dialect_of, query_value};
use crate::http::error::ApiError;
use crate::service::clients::Client;
use crate::state::AppState;

/// The client key that authenticated a request, from its extensions (set by the auth layer).
///
/// A handler keeps this rather than a clone of the extensions: those hold slices of the
/// request head (a client's `x-request-id`, say), and a slice kept while the upstream answers
/// keeps hyper's whole first read buffer alive, so that hyper allocates a second one for the
/// same connection.
pub fn client(extensions: &axum::http::Extensions) -> Option<Arc<Client>> {
    extensions.get::<Arc<Client>>().cloned()
}

/// The id of the client key that authenticated a request, from its extensions (set by the
/// auth layer).
pub fn client_of(extensions: &axum::http::Extensions) -> Option<i64> {
    extensions.get::<Arc<Client>>().map(|client| client.id)
}

/// The client key presented with a request, from whichever place the client put it.
pub fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    if let Some(bearer) = header("authorization").and_then(|value| {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    }) {
        return Some(bearer.trim().to_owned());
    }
    header("x-goog-api-key")
        .or_else(|| header("x-api-key"))
        .map(str::to_owned)
        .or_else(|| query_value(query?, "key"))
}

/// Refuses a model the client key may not use (a 403 in the route's dialect).
pub fn ensure_model_allowed(client: Option<&Client>, model: &str) -> Result<(), ApiError> {
    match client {
        Some(client) if !client.limits.allows_model(model) => {
            Err(ApiError::ModelNotAllowed(model.to_owned()))
        }
        _ => Ok(()),
    }
}

/// Middleware: resolves the client key or answers 401 in the route's dialect. Upload chunks
/// (`/upload/…?upload_id=…`) may come without a key: the SDKs send none there, and the
/// unguessable upload id is the credential (checked by the upload handler).
pub async fn require_client(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let query = request.uri().query();
    let dialect = dialect_of(request.uri().path(), request.headers(), query);
    let address = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let presented = presented_key(request.headers(), query);
    let client = presented
        .as_deref()
        .and_then(|key| state.clients.resolve(key));
    let now = std::time::Instant::now();
    // An address that failed too often gets no verdict on unknown keys for a while.
    if let Some(address) = address
        && let crate::service::auth_throttle::Verdict::BackOff(retry_after) = state
            .auth_throttle
            .judge(address, client.as_ref().map(|client| client.id), now)
        && !(presented.is_none() && is_upload_chunk(&request))
    {
        return ApiError::AuthBackOff { retry_after }.into_response_for(dialect);
    }
    match presented {
        Some(_) => match client {
            Some(client) => {
                if let Some(address) = address {
                    state.auth_throttle.succeeded(address, client.id, now);
                }
                // Per-client limits are checked before any upstream key is touched.
                if let Err(refusal) =
                    state
                        .client_gate
                        .admit(client.id, &client.limits, state.pool.now_ms())
                {
                    return ApiError::ClientRefused(refusal).into_response_for(dialect);
                }
                let in_flight = match client.limits.max_concurrent {
                    Some(limit) => match state.client_gate.enter(client.id, limit) {
                        Ok(place) => Some(place),
                        Err(refusal) => {
                            return ApiError::ClientRefused(refusal).into_response_for(dialect);
                        }
                    },
                    None => None,
                };
                request.extensions_mut().insert(client);
                let response = next.run(request).await;
                match in_flight {
                    // The place is given back when the response body ends (a stream holds it
                    // to its last event) or is dropped.
                    Some(place) => response.map(|body| {
                        axum::body::Body::new(HoldingBody {
                            body,
                            _place: place,
                        })
                    }),
                    None => response,
                }
            }
            None => {
                if let Some(address) = address {
                    state.auth_throttle.failed(address, now);
                }
                ApiError::InvalidKey.into_response_for(dialect)
            }
        },
        None if query.is_some() && is_upload_chunk(&request) => next.run(request).await,
        None => {
            if let Some(address) = address {
                state.auth_throttle.failed(address, now);
            }
            ApiError::MissingKey.into_response_for(dialect)
        }
    }
}

/// A response body that holds a client's place among its requests in flight.
struct HoldingBody {
    body: axum::body::Body,
    _place: pool::InFlight,
}

impl http_body::Body for HoldingBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An upload chunk (`/upload/…?upload_id=…`): it comes without a key, the upload id is its
/// credential.
fn is_upload_chunk(request: &Request) -> bool {
    request.uri().path().starts_with("/upload/")
        && request
            .uri()
            .query()
            .is_some_and(|q| query_value(q, "upload_id").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keys_are_found_in_every_place_clients_put_them() {
        let cases: [(HeaderMap, Option<&str>, Option<&str>); 6] = [
            (
                headers(&[("authorization", "Bearer k-bearer")]),
                None,
                Some("k-bearer"),
            ),
            (
                headers(&[("x-goog-api-key", "k-goog")]),
                None,
                Some("k-goog"),
            ),
            (
                headers(&[("x-api-key", "k-anthropic-style")]),
                None,
                Some("k-anthropic-style"),
            ),
            (
                HeaderMap::new(),
                Some("alt=sse&key=k%2Dquery"),
                Some("k-query"),
            ),
            (headers(&[("authorization", "Basic abc")]), None, None),
            (HeaderMap::new(), Some("key="), None),
        ];
        for (headers, query, expected) in cases {
            assert_eq!(presented_key(&headers, query).as_deref(), expected);
        }
    }
}
