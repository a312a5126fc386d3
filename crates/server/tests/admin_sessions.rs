//! Admin sessions can be ended: a logout revokes the token (bearer or cookie) it is called with,
//! a new `ADMIN_PASSWORD` revokes every session at the restart that brings it, and a revocation on
//! one instance is refused by every other instance on the same database.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::net::SocketAddr;

use common::{Harness, Setup};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new admin password";
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn gateway_on(database_url: Option<String>) -> Harness {
    let mut setup = Setup::with_keys(&[("AIzaSySessionKey0000000000000000000000", "alpha")]);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    setup.env.push(("JWT_SECRET", JWT_SECRET.to_owned()));
    if let Some(url) = database_url {
        setup.env.push(("DATABASE_URL", url));
    }
    Harness::start(setup).await
}

/// Logs in at `base`; the token and the `name=value` part of the cookie.
async fn login(http: &reqwest::Client, base: &str, password: &str) -> Option<(String, String)> {
    let response = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    if response.status() != 200 {
        return None;
    }
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    Some((body["token"].as_str().unwrap().to_owned(), cookie))
}

/// The status of an admin read with `token` as a bearer token.
async fn session_status(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.get(format!("{base}/api/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn base_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[tokio::test]
async fn a_token_works_until_its_logout_and_other_sessions_keep_working() {
    let gw = gateway_on(None).await;
    let base = gw.url("");
    let (first, _) = login(&gw.http, &base, PASSWORD).await.unwrap();
    let (second, cookie) = login(&gw.http, &base, PASSWORD).await.unwrap();
    assert_eq!(session_status(&gw.http, &base, &first).await, 200);
    assert_eq!(session_status(&gw.http, &base, &second).await, 200);

    let out = gw
        .http
        .post(gw.url("/api/auth/logout"))
        .bearer_auth(&first)
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
    for path in ["/api/session", "/api/keys", "/api/settings"] {
        let response = gw
            .http
            .get(gw.url(path))
            .bearer_auth(&first)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} after logout");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    // Only that session ended.
    assert_eq!(session_status(&gw.http, &base, &second).await, 200);

    // A logout with the cookie ends the cookie's session, and `/` stops sending it to the dashboard.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects
        .get(gw.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(root.headers()["location"], "/management.html");
    let out = gw
        .http
        .post(gw.url("/api/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let read = gw
        .http
        .get(gw.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);
    assert_eq!(session_status(&gw.http, &base, &second).await, 401);
    let root = no_redirects
        .get(gw.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(root.headers()["location"], "/login.html");
}

#[tokio::test]
async fn a_new_admin_password_revokes_every_session_at_restart() {
    let gw = gateway_on(None).await;
    let base = gw.url("");
    let (token, _) = login(&gw.http, &base, PASSWORD).await.unwrap();

    // A restart with the same password keeps the session.
    let (_, same) = gw
        .restart_with(&[
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
        ])
        .await;
    assert_eq!(session_status(&gw.http, &base_of(same), &token).await, 200);

    // A restart with another password ends it, on the new instance and on the old one too.
    let (_, changed) = gw
        .restart_with(&[
            ("ADMIN_PASSWORD", NEW_PASSWORD.to_owned()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
        ])
        .await;
    let changed = base_of(changed);
    assert_eq!(session_status(&gw.http, &changed, &token).await, 401);
    assert_eq!(session_status(&gw.http, &base, &token).await, 401);
    assert!(login(&gw.http, &changed, PASSWORD).await.is_none());
    let (fresh, _) = login(&gw.http, &changed, NEW_PASSWORD).await.unwrap();
    assert_eq!(session_status(&gw.http, &changed, &fresh).await, 200);

    // ADMIN_PASSWORD given as an argon2 hash: a new one revokes too, the same one again does not.
    let hashed = server::service::admin_auth::hash_password("a third admin password").unwrap();
    let restart_hashed = async || {
        let (_, addr) = gw
            .restart_with(&[
                ("ADMIN_PASSWORD", hashed.clone()),
                ("JWT_SECRET", JWT_SECRET.to_owned()),
            ])
            .await;
        base_of(addr)
    };
    let hashed_base = restart_hashed().await;
    assert_eq!(session_status(&gw.http, &hashed_base, &fresh).await, 401);
    let (third, _) = login(&gw.http, &hashed_base, "a third admin password")
        .await
        .unwrap();
    let again = restart_hashed().await;
    assert_eq!(session_status(&gw.http, &again, &third).await, 200);
}

#[tokio::test]
async fn a_logout_on_one_instance_is_refused_by_another_on_postgres() {
    let server = std::env::var("GEMINI_POOL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let database = store::testing::create_scratch_postgres(&server)
        .await
        .expect("PostgreSQL must run for this test (./scripts/test.sh starts it)");
    let a = gateway_on(Some(database)).await;
    let (_, b) = a
        .restart_with(&[
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
        ])
        .await;
    let (a_base, b_base) = (a.url(""), base_of(b));
    let (token, _) = login(&a.http, &a_base, PASSWORD).await.unwrap();
    assert_eq!(session_status(&a.http, &b_base, &token).await, 200);
    let out = a
        .http
        .post(format!("{b_base}/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(session_status(&a.http, &a_base, &token).await, 401);
    assert_eq!(session_status(&a.http, &b_base, &token).await, 401);
}
