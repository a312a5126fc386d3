//! The management API's resources: upstream keys (never shown whole), client keys (shown
//! once), stats, logs and settings, checked against snapshots of the answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::admin::{FULL_KEYS, call, gateway, login, redacted};
use common::text_request;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn upstream_keys_are_added_listed_masked_changed_tested_and_deleted() {
    let gw = gateway().await;
    let token = login(&gw).await;
    let (status, listed) = call(&gw, &token, Method::GET, "/api/keys", None).await;
    assert_eq!(status, 200);
    redacted().bind(|| insta::assert_json_snapshot!("keys_at_start", listed));

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
    redacted().bind(|| insta::assert_json_snapshot!("key_1_disabled", changed));
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
    redacted().bind(|| insta::assert_json_snapshot!("key_test_passed", tested));
    let (_, failed) = call(
        &gw,
        &token,
        Method::POST,
        &format!("/api/keys/{gamma_id}/test"),
        None,
    )
    .await;
    assert!(!failed["message"].as_str().unwrap().contains("ManagedKeyC"));
    redacted().bind(|| insta::assert_json_snapshot!("key_test_refused", failed));

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
    // The key and its prefix are random: checked above, hidden from the snapshot.
    let mut settings = redacted();
    settings.add_redaction(".key", "[gp- and 40 random characters]");
    settings.add_redaction(".prefix", "[gp-abc…]");
    settings.add_redaction(".items[1].prefix", "[gp-abc…]");
    settings.bind(|| insta::assert_json_snapshot!("client_key_created", created));
    let (_, listed) = call(&gw, &token, Method::GET, "/api/client-keys", None).await;
    assert!(
        !listed.to_string().contains(&key),
        "the key is shown only once"
    );
    // The env key and the new one.
    settings.bind(|| insta::assert_json_snapshot!("client_keys_listed", listed));

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
    settings.bind(|| insta::assert_json_snapshot!("client_key_disabled", changed));
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
    // The hours the requests fall in depend on the clock: only their sum is checked.
    assert_eq!(
        stats["hourly"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_i64().unwrap())
            .sum::<i64>(),
        4
    );
    let mut settings = redacted();
    settings.add_redaction(".hourly", "[checked above]");
    settings.bind(|| insta::assert_json_snapshot!("stats_after_four_requests", stats));
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
    redacted().bind(|| insta::assert_json_snapshot!("logs_first_page", logs));
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
    insta::assert_json_snapshot!("settings_at_start", settings);
    let (status, changed) = call(&gw, &token, Method::PATCH, "/api/settings", Some(json!({
        "default_rpm_limit": 1, "max_retries": 1, "model_limits": {"gemini-2.5-pro": {"rpm": 5, "rpd": null, "tpm": null}}
    }))).await;
    assert_eq!(status, 200, "{changed}");
    insta::assert_json_snapshot!("settings_changed", changed);
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
    let row = |age_days: u64| store::RequestRecord {
        at_ms: now_ms - age_days * 86_400_000,
        client_key_id: None,
        upstream_key_id: None,
        project: None,
        model: Some("gemini-2.5-flash".to_owned()),
        route: "/v1/chat/completions",
        status: 200,
        latency_ms: 1,
        tokens: store::Tokens::default(),
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
