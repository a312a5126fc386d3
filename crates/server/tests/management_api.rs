//! The management API: every route, authentication failures, validation, and the rule that
//! upstream keys never leave the server whole.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup, text_request};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test";
const FULL_KEYS: [&str; 3] = [
    "AIzaSyManagedKeyA000000000000000000000",
    "AIzaSyManagedKeyB000000000000000000000",
    "AIzaSyManagedKeyC000000000000000000000",
];

async fn gateway() -> Harness {
    let mut setup = Setup::with_keys(&[(FULL_KEYS[0], "alpha")]);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    setup.env.push(("JWT_SECRET", JWT_SECRET.to_owned()));
    Harness::start(setup).await
}

async fn login(gw: &Harness) -> String {
    let response = gw
        .http
        .post(gw.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
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

async fn call(
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

const PROTECTED: [(&str, &str); 14] = [
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

fn forge(claims: Value, secret: &str, algorithm: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn every_route_refuses_missing_forged_expired_and_client_credentials() {
    let gw = gateway().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = forge(
        json!({"sub": "admin", "iat": now - 7200, "exp": now - 3600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS256,
    );
    let wrong_secret = forge(
        json!({"sub": "admin", "iat": now, "exp": now + 3600}),
        "another-secret-another-secret-!!",
        jsonwebtoken::Algorithm::HS256,
    );
    let other_alg = forge(
        json!({"sub": "admin", "iat": now, "exp": now + 3600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS512,
    );
    let other_user = forge(
        json!({"sub": "mallory", "iat": now, "exp": now + 3600}),
        JWT_SECRET,
        jsonwebtoken::Algorithm::HS256,
    );
    let none_alg = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        forge(
            json!({"sub": "admin", "iat": now, "exp": now + 3600}),
            JWT_SECRET,
            jsonwebtoken::Algorithm::HS256
        )
        .split('.')
        .nth(1)
        .unwrap()
    );
    let credentials: [Option<&str>; 7] = [
        None,
        Some(&expired),
        Some(&wrong_secret),
        Some(&other_alg),
        Some(&other_user),
        Some(&none_alg),
        Some(CLIENT_KEY),
    ];
    for (method, path) in PROTECTED {
        for credential in credentials {
            let mut request = gw
                .http
                .request(method.parse().unwrap(), gw.url(path))
                .json(&json!({}));
            if let Some(token) = credential {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {credential:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // A client key is not an admin credential even as a cookie.
    let response = gw
        .http
        .get(gw.url("/api/keys"))
        .header("cookie", format!("gp_session={CLIENT_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn login_checks_the_password_throttles_failures_and_the_cookie_needs_the_csrf_header() {
    let gw = gateway().await;
    for (username, password) in [("admin", "wrong"), ("root", PASSWORD)] {
        let response = gw
            .http
            .post(gw.url("/api/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let malformed = gw
        .http
        .post(gw.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD, "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // The cookie works for reads; writes need the CSRF header too.
    let response = gw
        .http
        .post(gw.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let read = gw
        .http
        .get(gw.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["username"], "admin");
    let body = json!({"name": "csrf test"});
    let forged = gw
        .http
        .post(gw.url("/api/client-keys"))
        .header("cookie", &cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let guarded = gw
        .http
        .post(gw.url("/api/client-keys"))
        .header("cookie", &cookie)
        .header("x-gemini-pool-csrf", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(guarded.status(), 201);

    // Logout clears the cookie.
    let out = gw
        .http
        .post(gw.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // The login above started the count again; five failures start the backoff: the sixth
    // attempt, even right, is throttled.
    for _ in 0..5 {
        gw.http
            .post(gw.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": "nope"}))
            .send()
            .await
            .unwrap();
    }
    let throttled = gw
        .http
        .post(gw.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn upstream_keys_are_added_listed_masked_changed_tested_and_deleted() {
    let gw = gateway().await;
    let token = login(&gw).await;
    let (status, listed) = call(&gw, &token, Method::GET, "/api/keys", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["masked"], "AIza…0000");
    assert_eq!(listed["items"][0]["source"], "env");

    // One key, then a bulk paste with duplicates and per-key projects.
    let (status, added) = call(
        &gw,
        &token,
        Method::POST,
        "/api/keys",
        Some(json!({"key": FULL_KEYS[1], "project": "beta"})),
    )
    .await;
    assert_eq!(
        (status, added),
        (StatusCode::CREATED, json!({"added": 1, "duplicates": 0}))
    );
    let bulk = format!(
        "{}\n{} , {}@gamma",
        FULL_KEYS[0], FULL_KEYS[1], FULL_KEYS[2]
    );
    let (status, added) = call(
        &gw,
        &token,
        Method::POST,
        "/api/keys",
        Some(json!({"keys": bulk})),
    )
    .await;
    assert_eq!(
        (status, added),
        (StatusCode::CREATED, json!({"added": 1, "duplicates": 2}))
    );
    assert_eq!(
        gw.state.pool.keys().len(),
        3,
        "the pool sees new keys at once"
    );

    let invalid_cases = [
        (json!({"keys": "good-key, bad/key"}), "keys"),
        (json!({"key": "a b"}), "key"),
        (json!({"key": "AIzaX", "project": "no spaces"}), "project"),
        (json!({"key": "AIzaX", "colour": "red"}), "colour"),
        (json!({}), "key"),
        (json!({"key": 5}), "key"),
    ];
    for (body, field) in invalid_cases {
        let (status, error) =
            call(&gw, &token, Method::POST, "/api/keys", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error"]["code"], "invalid_request");
        assert!(
            error["error"]["field"]
                .as_str()
                .unwrap_or("")
                .contains(field)
                || error["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }

    // Paging and filtering.
    let (_, page) = call(
        &gw,
        &token,
        Method::GET,
        "/api/keys?per_page=2&page=2",
        None,
    )
    .await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["items"].as_array().unwrap().len()
        ),
        (Some(3), 1)
    );
    let (_, filtered) = call(&gw, &token, Method::GET, "/api/keys?q=gamma", None).await;
    assert_eq!(filtered["total"], 1);
    // Empty filters, as a form sends them, filter nothing.
    let (_, unfiltered) = call(&gw, &token, Method::GET, "/api/keys?q=&status=", None).await;
    assert_eq!(unfiltered["total"], 3);
    let (status, _) = call(&gw, &token, Method::GET, "/api/keys?per_page=abc", None).await;
    assert_eq!(status, 400);

    // Disable key 1: its traffic moves to the others.
    let (status, changed) = call(
        &gw,
        &token,
        Method::PATCH,
        "/api/keys/1",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(changed["status"], "disabled");
    assert!(!gw.state.pool.key(pool::KeyId(1)).unwrap().is_usable());
    let (_, beta) = call(&gw, &token, Method::GET, "/api/keys?q=beta", None).await;
    let beta_id = beta["items"][0]["id"].as_i64().unwrap();
    let (status, moved) = call(
        &gw,
        &token,
        Method::PATCH,
        &format!("/api/keys/{beta_id}"),
        Some(json!({"project": null})),
    )
    .await;
    assert_eq!(
        (status, moved["project"].clone()),
        (StatusCode::OK, Value::Null)
    );
    for (path, body, expected) in [
        ("/api/keys/99", json!({"enabled": true}), 404),
        ("/api/keys/abc", json!({"enabled": true}), 400),
        ("/api/keys/2", json!({"enabled": "yes"}), 400),
        ("/api/keys/2", json!({"project": "bad project"}), 400),
    ] {
        assert_eq!(
            call(&gw, &token, Method::PATCH, path, Some(body)).await.0,
            expected,
            "{path}"
        );
    }

    // The test call: the mock knows key 1 only. Ids are looked up (an upsert can skip ids).
    let (_, gamma) = call(&gw, &token, Method::GET, "/api/keys?q=gamma", None).await;
    let gamma_id = gamma["items"][0]["id"].as_i64().unwrap();
    let (_, tested) = call(&gw, &token, Method::POST, "/api/keys/1/test", None).await;
    assert_eq!(tested["ok"], true);
    let (_, failed) = call(
        &gw,
        &token,
        Method::POST,
        &format!("/api/keys/{gamma_id}/test"),
        None,
    )
    .await;
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["status"], 400);
    assert!(!failed["message"].as_str().unwrap().contains("ManagedKeyC"));

    let (status, _) = call(
        &gw,
        &token,
        Method::DELETE,
        &format!("/api/keys/{gamma_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        call(
            &gw,
            &token,
            Method::DELETE,
            &format!("/api/keys/{gamma_id}"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(gw.state.pool.keys().len(), 2);
}

#[tokio::test]
async fn client_keys_are_shown_once_work_at_once_and_stop_when_disabled_or_deleted() {
    let gw = gateway().await;
    let token = login(&gw).await;
    let (status, created) = call(
        &gw,
        &token,
        Method::POST,
        "/api/client-keys",
        Some(json!({
            "name": "alice's laptop", "rpm_limit": 100, "allowed_models": ["gemini-2.5-flash"]
        })),
    )
    .await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("gp-") && key.len() == 43);
    assert_eq!(created["prefix"], format!("{}…", &key[..6]));
    let (_, listed) = call(&gw, &token, Method::GET, "/api/client-keys", None).await;
    assert!(
        !listed.to_string().contains(&key),
        "the key is shown only once"
    );
    assert_eq!(listed["total"], 2, "the env key and the new one");

    let use_key = |key: String| {
        let http = gw.http.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(use_key(key.clone()).await, 200);
    let id = created["id"].as_i64().unwrap();
    let (status, changed) = call(
        &gw,
        &token,
        Method::PATCH,
        &format!("/api/client-keys/{id}"),
        Some(json!({"enabled": false, "rpm_limit": null})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (changed["enabled"].clone(), changed["rpm_limit"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(use_key(key.clone()).await, 401);
    call(
        &gw,
        &token,
        Method::PATCH,
        &format!("/api/client-keys/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(use_key(key.clone()).await, 200);

    for body in [
        json!({"name": ""}),
        json!({"name": "x", "rpm_limit": 0}),
        json!({"name": "x", "rpm_limit": -5}),
        json!({"name": "x", "allowed_models": ["../etc"]}),
        json!({"name": "x", "admin": true}),
        json!({"name": "'; DROP TABLE client_keys; --", "rpd_limit": "many"}),
    ] {
        assert_eq!(
            call(
                &gw,
                &token,
                Method::POST,
                "/api/client-keys",
                Some(body.clone())
            )
            .await
            .0,
            400,
            "{body}"
        );
    }
    // SQL-looking names are just names.
    let (status, odd) = call(
        &gw,
        &token,
        Method::POST,
        "/api/client-keys",
        Some(json!({"name": "'; DROP TABLE client_keys; --"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(odd["name"], "'; DROP TABLE client_keys; --");

    assert_eq!(
        call(
            &gw,
            &token,
            Method::DELETE,
            &format!("/api/client-keys/{id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(use_key(key).await, 401);
    assert_eq!(
        call(
            &gw,
            &token,
            Method::DELETE,
            &format!("/api/client-keys/{id}"),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn stats_logs_and_settings() {
    let gw = gateway().await;
    let token = login(&gw).await;
    for _ in 0..3 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("count this"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        gw.generate("no-such-model", text_request("x"))
            .await
            .status(),
        404
    );
    gw.state.accountant.flush().await;

    let (status, stats) = call(&gw, &token, Method::GET, "/api/stats?days=7", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["today"]["requests"], 4);
    assert_eq!(stats["today"]["errors"], 1);
    assert_eq!(stats["pool"]["keys"], 1);
    assert_eq!(stats["pool"]["usable"], 1);
    assert!(
        stats["hourly"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_i64().unwrap())
            .sum::<i64>()
            == 4
    );
    let models: Vec<&str> = stats["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(models.contains(&"gemini-2.5-flash") && models.contains(&"no-such-model"));
    assert_eq!(stats["by_client_key"][0]["name"], "from CLIENT_API_KEYS");
    assert_eq!(stats["by_upstream_key"][0]["name"], "AIza…0000");
    // The figures of one model, client key or upstream key.
    let (_, one_model) = call(
        &gw,
        &token,
        Method::GET,
        "/api/stats?days=7&model=no-such-model",
        None,
    )
    .await;
    assert_eq!(one_model["today"]["requests"], 1);
    assert_eq!(one_model["today"]["errors"], 1);
    assert_eq!(one_model["by_model"].as_array().unwrap().len(), 1);
    let client = stats["by_client_key"][0]["id"].as_i64().unwrap();
    let (_, one_client) = call(
        &gw,
        &token,
        Method::GET,
        &format!("/api/stats?client_key_id={client}"),
        None,
    )
    .await;
    assert_eq!(one_client["today"]["requests"], 4);
    let (_, nobody) = call(
        &gw,
        &token,
        Method::GET,
        "/api/stats?upstream_key_id=999",
        None,
    )
    .await;
    assert_eq!(nobody["today"]["requests"], 0);
    assert!(nobody["hourly"].as_array().unwrap().is_empty());
    assert_eq!(
        call(&gw, &token, Method::GET, "/api/stats?days=0", None)
            .await
            .0,
        400
    );

    let (_, logs) = call(&gw, &token, Method::GET, "/api/logs?per_page=2", None).await;
    assert_eq!(logs["total"], 4);
    assert_eq!(logs["items"].as_array().unwrap().len(), 2);
    assert_eq!(logs["items"][0]["client_name"], "from CLIENT_API_KEYS");
    let (_, errors) = call(&gw, &token, Method::GET, "/api/logs?status=error", None).await;
    assert_eq!(errors["total"], 1);
    assert_eq!(errors["items"][0]["status"], 404);
    let (_, by_model) = call(
        &gw,
        &token,
        Method::GET,
        "/api/logs?model=gemini-2.5-flash",
        None,
    )
    .await;
    assert_eq!(by_model["total"], 3);
    assert!(by_model["items"][0]["prompt_tokens"].as_i64().unwrap() > 0);
    assert_eq!(
        call(&gw, &token, Method::GET, "/api/logs?status=maybe", None)
            .await
            .0,
        400
    );
    assert_eq!(
        call(&gw, &token, Method::GET, "/api/logs?page=x", None)
            .await
            .0,
        400
    );

    let (_, settings) = call(&gw, &token, Method::GET, "/api/settings", None).await;
    assert_eq!(settings["max_retries"], 3);
    let (status, changed) = call(&gw, &token, Method::PATCH, "/api/settings", Some(json!({
        "default_rpm_limit": 1, "max_retries": 1, "model_limits": {"gemini-2.5-pro": {"rpm": 5, "rpd": null, "tpm": null}}
    }))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(gw.state.upstream.max_retries(), 1);
    assert_eq!(
        gw.state.pool.limits().for_model("gemini-2.5-pro").rpm,
        Some(5)
    );
    // In force at once: one request per minute per project for other models.
    assert_eq!(
        gw.generate("gemini-2.0-flash", text_request("x"))
            .await
            .status(),
        200
    );
    assert_eq!(
        gw.generate("gemini-2.0-flash", text_request("x"))
            .await
            .status(),
        429
    );
    for body in [
        json!({"max_retries": 99}),
        json!({"default_rpm_limit": 0}),
        json!({"model_limits": {"bad model": {}}}),
        json!({"unknown": 1}),
    ] {
        assert_eq!(
            call(
                &gw,
                &token,
                Method::PATCH,
                "/api/settings",
                Some(body.clone())
            )
            .await
            .0,
            400,
            "{body}"
        );
    }
    // Kept across a restart.
    let (restarted, _) = gw.restart().await;
    assert_eq!(restarted.upstream.max_retries(), 1);
    assert_eq!(restarted.pool.limits().default.rpm, Some(1));
}

#[tokio::test]
async fn pages_redirects_and_the_openapi_description_cover_the_api() {
    let gw = gateway().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects.get(gw.url("/")).send().await.unwrap();
    assert_eq!(root.headers()["location"], "/login.html");
    let token = login(&gw).await;
    let root = no_redirects
        .get(gw.url("/"))
        .header("cookie", format!("gp_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.headers()["location"], "/management.html");
    for page in ["/login.html", "/management.html"] {
        let response = gw.http.get(gw.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let etag = response.headers()["etag"].clone();
        let again = gw
            .http
            .get(gw.url(page))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    assert_eq!(
        gw.http
            .get(gw.url("/assets/../Cargo.toml"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let spec: Value = gw
        .http
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (method, path) in PROTECTED.iter().chain(&[
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/logout"),
        ("GET", "/api/settings"),
    ]) {
        let template = path.replace("/1", "/{id}");
        let operation = &paths
            .get(&template)
            .unwrap_or_else(|| panic!("{template} is not described"))[method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not described"
        );
    }
}

#[tokio::test]
async fn log_retention_is_a_setting_applied_by_the_writer() {
    let gw = gateway().await;
    let token = login(&gw).await;
    let (_, settings) = call(&gw, &token, Method::GET, "/api/settings", None).await;
    assert_eq!(settings["log_retention_days"], 30);
    for days in [0, 3651] {
        let (status, _) = call(
            &gw,
            &token,
            Method::PATCH,
            "/api/settings",
            Some(json!({"log_retention_days": days})),
        )
        .await;
        assert_eq!(status, 400, "{days}");
    }
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let row = |age_days: u64| server::service::accounting::RequestRecord {
        at_ms: now_ms - age_days * 86_400_000,
        client_key_id: None,
        upstream_key_id: None,
        project: None,
        model: Some("gemini-2.5-flash".to_owned()),
        route: "/v1/chat/completions",
        status: 200,
        latency_ms: 1,
        tokens: server::service::accounting::Tokens::default(),
        streamed: false,
        attempts: 1,
        upstream_error: None,
    };
    gw.state
        .storage
        .write_accounting(&[row(5), row(1), row(0)], &[])
        .await
        .unwrap();
    let (status, changed) = call(
        &gw,
        &token,
        Method::PATCH,
        "/api/settings",
        Some(json!({"log_retention_days": 2})),
    )
    .await;
    assert_eq!(
        (status, changed["log_retention_days"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    // Saved, and applied by the writer at its first write after a start.
    let (restarted, _) = gw.restart().await;
    assert_eq!(restarted.accountant.retention_days(), 2);
    restarted.accountant.flush().await;
    assert!(
        common::eventually_async(
            async || restarted.storage.request_log_count().await.unwrap() == 2
        )
        .await,
        "the 5-day-old row is still there"
    );
}

/// Every field `/api/keys` (keys, their quota per model, the models overview), `/api/stats`'s
/// pool, `/api/logs` rows and `/api/resources` answer is described in the OpenAPI file, and nothing described is
/// missing from the answers: the description cannot drift from the code unnoticed.
#[tokio::test]
async fn the_openapi_schemas_match_what_the_api_answers() {
    let gw = gateway().await;
    assert_eq!(
        gw.generate("gemini-2.5-flash", common::text_request("hi"))
            .await
            .status(),
        200
    );
    gw.state.accountant.flush().await;
    let token = login(&gw).await;
    let spec: Value = gw
        .http
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &spec["components"]["schemas"];
    let fields = |value: &Value| -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    let described = |schema: &Value| fields(&schema["properties"]);
    let (_, keys) = call(&gw, &token, Method::GET, "/api/keys", None).await;
    let key = &keys["items"][0];
    assert_eq!(fields(key), described(&schemas["Key"]), "Key");
    assert_eq!(
        fields(&key["quota"][0]),
        described(&schemas["ProjectQuota"]),
        "ProjectQuota"
    );
    assert_eq!(
        fields(&keys["models"][0]),
        described(&schemas["ModelNow"]),
        "ModelNow"
    );
    assert_eq!(
        fields(&keys["summary"]),
        described(&schemas["KeyPage"]["properties"]["summary"]),
        "the key summary"
    );
    let statuses: Vec<Value> = schemas["Key"]["properties"]["status"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    for status in keys["summary"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|s| *s != "total")
    {
        assert!(
            statuses.contains(&json!(status)),
            "{status} is not described"
        );
    }
    let (_, stats) = call(&gw, &token, Method::GET, "/api/stats", None).await;
    assert_eq!(
        fields(&stats["pool"]),
        described(&schemas["Stats"]["properties"]["pool"]),
        "the stats' pool"
    );
    let (_, logs) = call(&gw, &token, Method::GET, "/api/logs", None).await;
    let row = fields(&logs["items"][0]);
    for name in described(&schemas["LogPage"]["properties"]["items"]["items"]) {
        assert!(row.contains(&name), "log rows have no {name}");
    }
    let created = gw
        .native(Method::POST, "/v1beta/cachedContents")
        .json(&json!({"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "doc"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // The owner is written behind the request.
    assert!(
        common::eventually_async(async || {
            call(&gw, &token, Method::GET, "/api/resources", None)
                .await
                .1["total"]
                == 1
        })
        .await
    );
    let (_, resources) = call(&gw, &token, Method::GET, "/api/resources", None).await;
    assert_eq!(fields(&resources), described(&schemas["ResourcePage"]));
    assert_eq!(
        fields(&resources["items"][0]),
        described(&schemas["ResourcePage"]["properties"]["items"]["items"]),
        "ResourcePage items"
    );
}
