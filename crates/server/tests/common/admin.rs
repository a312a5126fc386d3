//! The management API's test helpers: a gateway with a known admin password and JWT secret,
//! a login, an authenticated call that checks no upstream key leaves whole, and the snapshot
//! settings that hide what changes from run to run.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Harness, Setup};

/// The admin password of [`gateway`].
pub const PASSWORD: &str = "correct horse battery staple";
/// The JWT secret of [`gateway`], for forging tokens.
pub const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test";
/// Upstream keys the management tests add; none may appear whole in an answer.
pub const FULL_KEYS: [&str; 3] = [
    "AIzaSyManagedKeyA000000000000000000000",
    "AIzaSyManagedKeyB000000000000000000000",
    "AIzaSyManagedKeyC000000000000000000000",
];

/// Every route behind the admin login, with a sample path.
pub const PROTECTED: [(&str, &str); 14] = [
    ("GET", "/api/session"),
    ("GET", "/api/keys"),
    ("POST", "/api/keys"),
    ("PATCH", "/api/keys/1"),
    ("DELETE", "/api/keys/1"),
    ("POST", "/api/keys/1/test"),
    ("GET", "/api/client-keys"),
    ("POST", "/api/client-keys"),
    ("PATCH", "/api/client-keys/1"),
    ("DELETE", "/api/client-keys/1"),
    ("GET", "/api/stats"),
    ("GET", "/api/logs"),
    ("GET", "/api/resources"),
    ("PATCH", "/api/settings"),
];

/// A gateway with the first of [`FULL_KEYS`] (project `alpha`), [`PASSWORD`] and [`JWT_SECRET`].
pub async fn gateway() -> Harness {
    let mut setup = Setup::with_keys(&[(FULL_KEYS[0], "alpha")]);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    setup.env.push(("JWT_SECRET", JWT_SECRET.to_owned()));
    Harness::start(setup).await
}

/// Logs in as admin; checks the session cookie's flags and returns the bearer token.
pub async fn login(gw: &Harness) -> String {
    login_with(gw, PASSWORD).await
}

/// [`login`] to a gateway whose admin password is `password`.
pub async fn login_with(gw: &Harness, password: &str) -> String {
    let response = gw
        .http
        .post(gw.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["expires_at"].as_u64().unwrap() > 0);
    body["token"].as_str().unwrap().to_owned()
}

/// An admin API call with `token`: its status and JSON answer (`null` when there is none).
/// Fails when the answer holds any of [`FULL_KEYS`] whole.
pub async fn call(
    gw: &Harness,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = gw.http.request(method, gw.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    for key in FULL_KEYS {
        assert!(!text.contains(key), "{path} returned a whole upstream key");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Snapshot settings for admin answers: the fields that differ from run to run (ids, clocks,
/// days, latencies) are replaced by a placeholder at any depth, so a snapshot holds only what
/// the test decides. A null stays null: whether a time or an id is there is part of the answer.
pub fn redacted() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for field in [
        "id",
        "client_key_id",
        "upstream_key_id",
        "created_at",
        "expires_at",
        "at_ms",
        "now_ms",
        "today_day",
        "bucket",
        "latency_ms",
    ] {
        redact_unless_null(&mut settings, &format!(".**.{field}"), field);
    }
    // Written behind the request that used the key: null or not depends on timing.
    settings.add_redaction(".**.last_used_at", "[null, or when last used]");
    settings
}

/// Adds a redaction of `selector` to `[name]`, leaving null values as they are.
pub fn redact_unless_null(settings: &mut insta::Settings, selector: &str, name: &str) {
    let placeholder = format!("[{name}]");
    settings.add_dynamic_redaction(selector, move |value, _path| {
        if value.is_nil() {
            value
        } else {
            insta::internals::Content::from(placeholder.clone())
        }
    });
}
