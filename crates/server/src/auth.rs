//! Client authentication on the API routes.
//!
//! A client key may come as `Authorization: Bearer`, `x-goog-api-key`, `x-api-key` or `?key=`
//! (the forms OpenAI and Gemini SDKs use). It is looked up by its SHA-256 digest in an
//! in-memory map, so no database round trip sits on the request path, and the key itself is
//! never stored. Comparing digests leaks nothing useful through timing: finding a digest prefix
//! does not help find a key.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Dialect};
use crate::state::AppState;
use secrecy::{ExposeSecret, SecretString};
use store::ClientKeyRow;

/// The hex SHA-256 digest under which a client key is stored.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, enough to recognise it in a list.
pub fn display_prefix(key: &str) -> String {
    let head: String = key.chars().take(6).collect();
    format!("{head}…")
}

/// Makes the stored `env` client keys match `CLIENT_API_KEYS`: the store gets their digests and
/// display prefixes, never the keys.
pub async fn sync_configured_client_keys(
    storage: &store::Storage,
    keys: &[SecretString],
) -> Result<store::SyncReport, store::StorageError> {
    let digested: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            (
                digest_hex(key.expose_secret()),
                display_prefix(key.expose_secret()),
            )
        })
        .collect();
    let new: Vec<store::NewClientKey<'_>> = digested
        .iter()
        .map(|(digest, prefix)| store::NewClientKey {
            name: "from CLIENT_API_KEYS",
            digest,
            prefix,
        })
        .collect();
    storage.sync_client_keys(&new).await
}

/// An authenticated client, added to the request extensions.
#[derive(Debug, Clone)]
pub struct Client {
    /// Database id of the client key.
    pub id: i64,
    /// Its display name.
    pub name: String,
    /// Its own limits.
    pub limits: pool::ClientLimits,
}

/// The accepted client keys, by digest. Swapped whole when keys change.
#[derive(Debug, Default)]
pub struct ClientKeys {
    by_digest: ArcSwap<HashMap<String, Arc<Client>>>,
}

impl ClientKeys {
    /// Replaces the accepted keys with the enabled ones of `rows`.
    pub fn replace(&self, rows: Vec<ClientKeyRow>) {
        let map = rows
            .into_iter()
            .filter(|row| row.enabled)
            .map(|row| {
                (
                    row.digest,
                    Arc::new(Client {
                        id: row.id,
                        name: row.name,
                        limits: row.limits,
                    }),
                )
            })
            .collect();
        self.by_digest.store(Arc::new(map));
    }

    /// The client a presented key belongs to.
    pub fn resolve(&self, key: &str) -> Option<Arc<Client>> {
        self.by_digest.load().get(&digest_hex(key)).cloned()
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.by_digest.load().len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

/// The decoded value of `name` in a raw query string.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

/// Whether the request authenticates the way Gemini SDKs do (`x-goog-api-key` or `?key=`),
/// which tells a native `GET /v1/models` from the OpenAI one.
pub fn uses_gemini_auth(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key("x-goog-api-key") || query.is_some_and(|q| query_value(q, "key").is_some())
}

/// The dialect of a request, from its path: OpenAI routes under `/v1`, Gemini everywhere else.
pub fn dialect_of(path: &str, headers: &HeaderMap, query: Option<&str>) -> Dialect {
    match path.strip_prefix("/v1/") {
        Some(rest) if crate::openai::is_openai_path(rest, uses_gemini_auth(headers, query)) => {
            Dialect::OpenAi
        }
        _ => Dialect::Gemini,
    }
}

/// Refuses a model the client key may not use (a 403 in the route's dialect).
pub fn ensure_model_allowed(
    extensions: &axum::http::Extensions,
    model: &str,
) -> Result<(), ApiError> {
    match extensions.get::<Arc<Client>>() {
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
        && let crate::auth_throttle::Verdict::BackOff(retry_after) =
            state
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

    #[tokio::test]
    async fn configured_client_keys_are_stored_as_digests_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let storage = store::Storage::open(&url).await.unwrap();
        let secret = "client-secret-value-123";
        sync_configured_client_keys(&storage, &[SecretString::from(secret)])
            .await
            .unwrap();
        let rows = storage.client_keys().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].digest, digest_hex(secret));
        drop(storage);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the client key is stored in clear"
            );
        }
    }
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

    #[test]
    fn lookups_go_through_the_digest_and_skip_disabled_keys() {
        let keys = ClientKeys::default();
        keys.replace(vec![
            ClientKeyRow {
                id: 1,
                name: "alice".into(),
                digest: digest_hex("alice-key-123"),
                enabled: true,
                limits: pool::ClientLimits::default(),
            },
            ClientKeyRow {
                id: 2,
                name: "bob".into(),
                digest: digest_hex("bob-key-456"),
                enabled: false,
                limits: pool::ClientLimits::default(),
            },
        ]);
        assert_eq!(keys.resolve("alice-key-123").map(|c| c.id), Some(1));
        assert!(keys.resolve("bob-key-456").is_none());
        assert!(keys.resolve("alice-key-12").is_none());
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn the_dialect_follows_the_route() {
        let none = HeaderMap::new();
        let goog = headers(&[("x-goog-api-key", "k")]);
        assert_eq!(
            dialect_of("/v1/chat/completions", &none, None),
            Dialect::OpenAi
        );
        assert_eq!(dialect_of("/v1/models", &none, None), Dialect::OpenAi);
        assert_eq!(dialect_of("/v1/models", &goog, None), Dialect::Gemini);
        assert_eq!(
            dialect_of("/v1/models", &none, Some("key=k")),
            Dialect::Gemini
        );
        assert_eq!(
            dialect_of("/v1/models/gemini-2.5-flash", &none, None),
            Dialect::OpenAi
        );
        assert_eq!(
            dialect_of("/v1/models/gemini-2.5-flash:generateContent", &none, None),
            Dialect::Gemini
        );
        assert_eq!(dialect_of("/v1beta/models", &none, None), Dialect::Gemini);
        assert_eq!(
            dialect_of("/upload/v1beta/files", &none, None),
            Dialect::Gemini
        );
    }
}
