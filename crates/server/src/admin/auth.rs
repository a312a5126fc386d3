//! Admin authentication: the password (an argon2id hash, checked off the async runtime), HS256
//! session tokens with an explicit algorithm and an expiry, the httpOnly `SameSite=Strict`
//! session cookie with a CSRF guard on state-changing calls, and per-IP throttling of failed
//! logins.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AdminError;
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "gp_session";
/// Header the dashboard sends with every state-changing call made with the cookie. A cross-site
/// form cannot set a custom header, and a cross-origin script cannot either without a CORS
/// preflight, which this server never grants.
pub const CSRF_HEADER: &str = "x-gemini-pool-csrf";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed logins allowed per address in [`LOGIN_WINDOW`].
const LOGIN_FAILURES_ALLOWED: usize = 5;
const LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// Claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The admin user name.
    pub sub: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expires at (seconds).
    pub exp: u64,
}

/// The admin credentials and session keys.
pub struct AdminAuth {
    username: String,
    password_hash: Mutex<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    failures: DashMap<IpAddr, VecDeque<Instant>>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Hashes a password with argon2id and a random salt (slow on purpose: call off the runtime).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// Checks a password against a PHC hash; a mismatch (or an unreadable hash) is `false`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AdminAuth {
    /// Credentials for `username` with the argon2 `password_hash`, signing with `secret`.
    pub fn new(username: String, password_hash: String, secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        Self {
            username,
            password_hash: Mutex::new(password_hash),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            failures: DashMap::new(),
        }
    }

    fn validation() -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation
    }

    /// A session token for the admin, and when it expires (seconds).
    pub fn issue(&self) -> Result<(String, u64), AdminError> {
        let iat = unix_seconds();
        let exp = iat + SESSION_LIFETIME.as_secs();
        let claims = Claims {
            sub: self.username.clone(),
            iat,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|token| (token, exp))
            .map_err(|error| AdminError::Internal(error.to_string()))
    }

    /// The claims of a valid token of the admin.
    pub fn verify(&self, token: &str) -> Result<Claims, AdminError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &Self::validation())
            .map_err(|_| AdminError::Unauthorized)?;
        if data.claims.sub != self.username {
            return Err(AdminError::Unauthorized);
        }
        Ok(data.claims)
    }

    fn throttled(&self, address: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.entry(address).or_default();
        while failures
            .front()
            .is_some_and(|t| t.elapsed() >= LOGIN_WINDOW)
        {
            failures.pop_front();
        }
        (failures.len() >= LOGIN_FAILURES_ALLOWED).then(|| {
            failures
                .front()
                .map_or(LOGIN_WINDOW, |t| LOGIN_WINDOW.saturating_sub(t.elapsed()))
        })
    }

    fn note_failure(&self, address: IpAddr) {
        self.failures
            .entry(address)
            .or_default()
            .push_back(Instant::now());
    }

    /// The admin user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    fn current_hash(&self) -> String {
        self.password_hash
            .lock()
            .map(|hash| hash.clone())
            .unwrap_or_default()
    }
}

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

/// Whether the request carries a valid admin session (for the `/` redirect).
pub fn has_session(state: &AppState, headers: &HeaderMap) -> bool {
    session_token(headers).is_some_and(|(token, _)| state.admin.verify(&token).is_ok())
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
        let claims = state.admin.verify(&token)?;
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
    if let Some(wait) = state.admin.throttled(address) {
        return Err(AdminError::TooManyRequests { retry_after: wait });
    }
    let login: LoginRequest = super::parse_body(&body)?;
    let hash = state.admin.current_hash();
    let password = login.password;
    // argon2 takes tens of milliseconds of CPU: never on the async runtime.
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|error| AdminError::Internal(error.to_string()))?;
    // Compare the user name in constant time too, so timing tells nothing about it.
    let user_ok = subtle_eq(login.username.as_bytes(), state.admin.username().as_bytes());
    if !(matches && user_ok) {
        state.admin.note_failure(address);
        tracing::warn!(%address, "failed admin login");
        return Err(AdminError::Unauthorized);
    }
    let (token, expires_at) = state.admin.issue()?;
    let mut response = Json(json!({"token": token, "expires_at": expires_at})).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&token, SESSION_LIFETIME.as_secs(), is_https(&headers)),
    );
    Ok(response)
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (index, byte) in a.iter().enumerate() {
        difference |= usize::from(byte ^ b.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

/// `POST /api/auth/logout`: clears the cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, is_https(&headers)));
    response
}

/// `GET /api/session`: who is logged in, until when.
pub async fn session(AdminSession(claims): AdminSession) -> Json<serde_json::Value> {
    Json(json!({"username": claims.sub, "expires_at": claims.exp}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_tokens_round_trip() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));

        let auth = AdminAuth::new(
            "admin".into(),
            hash,
            &SecretString::from("0123456789abcdef0123456789abcdef"),
        );
        let (token, exp) = auth.issue().unwrap();
        assert_eq!(auth.verify(&token).unwrap().exp, exp);
        let other = AdminAuth::new(
            "admin".into(),
            String::new(),
            &SecretString::from("another-secret-of-enough-length!!"),
        );
        assert!(other.verify(&token).is_err(), "another secret");
        // `alg: none` is refused.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(format!(r#"{{"sub":"admin","iat":1,"exp":{}}}"#, exp).as_bytes());
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
        assert!(
            subtle_eq(b"abc", b"abc") && !subtle_eq(b"abc", b"abd") && !subtle_eq(b"ab", b"abc")
        );
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
