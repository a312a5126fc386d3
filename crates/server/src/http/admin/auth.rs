//! Admin authentication: the password (an argon2id hash, checked off the async runtime, a few
//! at a time), HS256 session tokens with an explicit algorithm and an expiry, each naming a
//! session kept in the database so that it can be revoked (logout, a new password), the httpOnly
//! `SameSite=Strict` session cookie with a CSRF guard on state-changing calls, and the login
//! throttle (`service::login_throttle`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::common::AdminError;
use crate::service::admin_auth::{
    Claims, SESSION_LIFETIME, new_session_id, same_secret, unix_millis, verify_password,
};
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "gp_session";
/// Header the dashboard sends with every state-changing call made with the cookie. A cross-site
/// form cannot set a custom header, and a cross-origin script cannot either without a CORS
/// preflight, which this server never grants.
pub const CSRF_HEADER: &str = "x-gemini-pool-csrf";
/// Where a session token came from.
fn session_token(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        return Some((bearer.trim().to_owned(), false));
    }
    let cookies = headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| (value.to_owned(), true))
}

/// The claims of `token` when it is valid and its session is open: neither revoked nor expired.
/// The database is asked on every call, so that a session revoked by another instance on the
/// same database is refused here at once; admin calls are few, and off the request hot path.
async fn live_claims(state: &AppState, token: &str) -> Result<Claims, AdminError> {
    let claims = state.admin.verify(token)?;
    if state
        .storage
        .admin_session_is_open(&claims.sid, unix_millis())
        .await?
    {
        Ok(claims)
    } else {
        Err(AdminError::Unauthorized)
    }
}

/// Whether the request carries an open admin session (for the `/` redirect).
pub async fn has_session(state: &AppState, headers: &HeaderMap) -> bool {
    match session_token(headers) {
        Some((token, _)) => live_claims(state, &token).await.is_ok(),
        None => false,
    }
}

/// An authenticated admin request. Any failure is a 401 with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone)]
pub struct AdminSession(pub Claims);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, via_cookie) = session_token(&parts.headers).ok_or(AdminError::Unauthorized)?;
        let claims = live_claims(state, &token).await?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if via_cookie && !safe && parts.headers.get(CSRF_HEADER).is_none_or(|v| v != "1") {
            return Err(AdminError::Forbidden(format!(
                "State-changing calls made with the session cookie need the header '{CSRF_HEADER}: 1'."
            )));
        }
        Ok(Self(claims))
    }
}

/// `POST /api/auth/login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

fn cookie(value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("gp_session=; Max-Age=0; Path=/"))
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.split(',').next().is_some_and(|p| p.trim() == "https"))
}

/// `POST /api/auth/login`: `{token, expires_at}` and the session cookie.
pub async fn login(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, AdminError> {
    // The peer address (set by the server); behind a reverse proxy all logins share its
    // address, which only makes the throttle stricter.
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(addr)| addr.ip());
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|_| AdminError::invalid("The body is too large.", "body"))?;
    let login: LoginRequest = super::common::parse_body(&body)?;
    // The attempt takes its place in the throttle before argon2 runs, so parallel guesses are
    // counted before any of them is checked; a refused one costs no hashing.
    let (attempt, hashing_slot) = state
        .admin
        .throttle
        .admit(address, &login.username, Instant::now())
        .map_err(|retry_after| AdminError::TooManyRequests { retry_after })?;
    // Compare the user name in constant time, and hash whatever it is, so that timing tells
    // nothing about it.
    let user_ok = same_secret(login.username.as_bytes(), state.admin.username().as_bytes());
    let hash = state.admin.current_hash();
    let password = login.password;
    // argon2 takes tens of milliseconds of CPU and about 19 MiB: never on the async runtime.
    // The slot moves into the blocking task, so a client hanging up frees it only when the
    // hashing is over and cannot push more verifications than the slots into the pool.
    let matches = tokio::task::spawn_blocking(move || {
        let _slot = hashing_slot;
        verify_password(&password, &hash)
    })
    .await
    .map_err(|error| AdminError::Internal(error.to_string()))?;
    if !(matches && user_ok) {
        attempt.failed(Instant::now());
        tracing::warn!(%address, "failed admin login");
        return Err(AdminError::Unauthorized);
    }
    attempt.succeeded(Instant::now());
    let now_ms = unix_millis();
    // Housekeeping: sessions past their expiry are of no use, even as revocations.
    if let Err(error) = state.storage.prune_admin_sessions(now_ms).await {
        tracing::warn!(%error, "could not prune expired admin sessions");
    }
    let session_id = new_session_id();
    let (token, expires_at) = state.admin.issue(&session_id)?;
    let expires_at_ms = i64::try_from(expires_at)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    state
        .storage
        .create_admin_session(&session_id, now_ms, expires_at_ms)
        .await?;
    let mut response = Json(json!({"token": token, "expires_at": expires_at})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&token, SESSION_LIFETIME.as_secs(), is_https(&headers)),
    );
    Ok(response)
}

/// `POST /api/auth/logout`: revokes the session of the token (or cookie) it is called with,
/// on every instance of the database, and clears the cookie. Without a valid token there is
/// nothing to revoke, and the cookie is cleared all the same.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let claims = session_token(&headers).and_then(|(token, _)| state.admin.verify(&token).ok());
    let revoked = match claims {
        Some(claims) => state
            .storage
            .revoke_admin_session(&claims.sid, unix_millis())
            .await
            .map(|_| ()),
        None => Ok(()),
    };
    // A failed revocation is a 500, so the caller knows the token still works.
    let mut response = match revoked {
        Ok(()) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(error) => AdminError::from(error).into_response(),
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, is_https(&headers)));
    response
}

/// `GET /api/session`: who is logged in, until when.
pub async fn session(AdminSession(claims): AdminSession) -> Json<serde_json::Value> {
    Json(json!({"username": claims.sub, "expires_at": claims.exp}))
}
