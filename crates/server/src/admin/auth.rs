//! Admin authentication: the password (an argon2id hash, checked off the async runtime, a few
//! at a time), HS256 session tokens with an explicit algorithm and an expiry, each naming a
//! session kept in the database so that it can be revoked (logout, a new password), the httpOnly
//! `SameSite=Strict` session cookie with a CSRF guard on state-changing calls, and the login
//! throttle ([`super::throttle`]).

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
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AdminError;
use super::throttle::{LoginThrottle, hashing_slots};
use crate::state::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "gp_session";
/// Header the dashboard sends with every state-changing call made with the cookie. A cross-site
/// form cannot set a custom header, and a cross-origin script cannot either without a CORS
/// preflight, which this server never grants.
pub const CSRF_HEADER: &str = "x-gemini-pool-csrf";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The admin user name.
    pub sub: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Expires at (seconds).
    pub exp: u64,
    /// The session in the database (`admin_sessions.id`), which a logout or a new password
    /// revokes. A token without one (issued before sessions were kept) is refused.
    pub sid: String,
}

/// The admin credentials and session keys.
pub struct AdminAuth {
    username: String,
    password_hash: Mutex<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    throttle: LoginThrottle,
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

/// Now, in milliseconds since the epoch (the unit of the `admin_sessions` columns).
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new session id: 128 random bits in hex.
fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
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
            throttle: LoginThrottle::new(hashing_slots()),
        }
    }

    fn validation() -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation
    }

    /// A token for the admin naming the session `session_id`, issued now, and when it
    /// expires (seconds).
    pub fn issue(&self, session_id: &str) -> Result<(String, u64), AdminError> {
        let iat = unix_seconds();
        let exp = iat + SESSION_LIFETIME.as_secs();
        let claims = Claims {
            sub: self.username.clone(),
            iat,
            exp,
            sid: session_id.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|token| (token, exp))
            .map_err(|error| AdminError::Internal(error.to_string()))
    }

    /// The claims of a token of the admin with a valid signature and expiry. Whether its session
    /// is still open is the database's to say: see [`live_claims`].
    pub fn verify(&self, token: &str) -> Result<Claims, AdminError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &Self::validation())
            .map_err(|_| AdminError::Unauthorized)?;
        if data.claims.sub != self.username {
            return Err(AdminError::Unauthorized);
        }
        Ok(data.claims)
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
    let login: LoginRequest = super::parse_body(&body)?;
    // The attempt takes its place in the throttle before argon2 runs, so parallel guesses are
    // counted before any of them is checked; a refused one costs no hashing.
    let (attempt, hashing_slot) = state
        .admin
        .throttle
        .admit(address, &login.username, Instant::now())
        .map_err(|retry_after| AdminError::TooManyRequests { retry_after })?;
    // Compare the user name in constant time, and hash whatever it is, so that timing tells
    // nothing about it.
    let user_ok = subtle_eq(login.username.as_bytes(), state.admin.username().as_bytes());
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

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (index, byte) in a.iter().enumerate() {
        difference |= usize::from(byte ^ b.get(index).copied().unwrap_or(0));
    }
    difference == 0
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
        let (token, exp) = auth.issue("00112233445566778899aabbccddeeff").unwrap();
        let claims = auth.verify(&token).unwrap();
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.sid, "00112233445566778899aabbccddeeff");
        let other = AdminAuth::new(
            "admin".into(),
            String::new(),
            &SecretString::from("another-secret-of-enough-length!!"),
        );
        assert!(other.verify(&token).is_err(), "another secret");
        // `alg: none` is refused.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body =
            base64_url(format!(r#"{{"sub":"admin","iat":1,"exp":{exp},"sid":"00"}}"#).as_bytes());
        assert!(auth.verify(&format!("{header}.{body}.")).is_err());
        // A token from before sessions were kept names none: refused.
        let sessionless = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "admin", "iat": 1, "exp": exp}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(auth.verify(&sessionless).is_err());
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
