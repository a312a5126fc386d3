//! The admin's credentials: the argon2 password hash, the session-signing key and the login
//! throttle. Sessions themselves are rows of the database (`admin_sessions`); the routes that
//! log in and out are `http::admin::auth`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::service::login_throttle::{LoginThrottle, hashing_slots};

/// Whether two secrets are equal, in time that depends on their lengths only (a user name, the
/// metrics token): comparing byte by byte with an early exit would tell an attacker how much of
/// a guess is right.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

/// Why a session token was not issued or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// The token is not the admin's, is forged or expired.
    #[error("not signed in")]
    Unauthorized,
    /// The token could not be signed.
    #[error("cannot sign a session token: {0}")]
    Signing(String),
}

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
    /// Login attempts by address and user name.
    pub throttle: LoginThrottle,
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

pub(crate) fn unix_seconds() -> u64 {
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
pub fn new_session_id() -> String {
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
    pub fn issue(&self, session_id: &str) -> Result<(String, u64), AdminAuthError> {
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
            .map_err(|error| AdminAuthError::Signing(error.to_string()))
    }

    /// The claims of a token of the admin with a valid signature and expiry. Whether its session
    /// is still open is the database's to say (the admin routes check it).
    pub fn verify(&self, token: &str) -> Result<Claims, AdminAuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &Self::validation())
            .map_err(|_| AdminAuthError::Unauthorized)?;
        if data.claims.sub != self.username {
            return Err(AdminAuthError::Unauthorized);
        }
        Ok(data.claims)
    }

    /// The admin user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password hash in force.
    pub fn current_hash(&self) -> String {
        self.password_hash
            .lock()
            .map(|hash| hash.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            same_secret(b"abc", b"abc")
                && !same_secret(b"abc", b"abd")
                && !same_secret(b"ab", b"abc")
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
