//! The management API's doors: every route refuses missing, forged, expired and client
//! credentials; login checks the password, throttles failures, and a session cookie needs the
//! CSRF header to write.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::CLIENT_KEY;
use common::admin::{JWT_SECRET, PASSWORD, PROTECTED, gateway};
use serde_json::{Value, json};

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
