//! The scheduler against `mock-gemini` quotas, and exact accounting across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup, eventually, text_request};
use reqwest::Method;
use serde_json::{Value, json};
use store::UsageDimension;

/// Three projects, two keys sharing one: `A` (k1, k2), `B` (k3), `C` (k4).
fn three_projects(upstream_rpm: u32, gateway_rpm: u32) -> Setup {
    let mut setup = Setup::with_keys(&[("k1", "A"), ("k2", "A"), ("k3", "B"), ("k4", "C")]);
    setup.mock.rpm_limit = Some(upstream_rpm);
    setup
        .env
        .push(("DEFAULT_RPM_LIMIT", gateway_rpm.to_string()));
    setup.env.push(("MAX_RETRIES", "3".to_owned()));
    setup
}

fn project_of(key: &str) -> &'static str {
    match key {
        "k1" | "k2" => "A",
        "k3" => "B",
        _ => "C",
    }
}

#[tokio::test]
async fn upstream_quotas_are_learned_with_at_most_one_wasted_call_per_project() {
    // The gateway thinks 10 per minute; the upstream allows 2 per project and model.
    let gw = Harness::start(three_projects(2, 10)).await;
    for i in 0..6 {
        let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
        assert_eq!(response.status(), 200, "request {i}");
    }
    let seventh = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(seventh.status(), 429);
    let retry_after: u64 = seventh.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = seventh.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");

    let wasted: Vec<String> = gw
        .mock
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.api_key.clone().unwrap())
        .collect();
    let mut wasted_projects: Vec<&str> = wasted.iter().map(|k| project_of(k)).collect();
    wasted_projects.sort_unstable();
    assert!(!wasted.is_empty());
    let before = wasted_projects.len();
    wasted_projects.dedup();
    assert_eq!(
        before,
        wasted_projects.len(),
        "a project was asked again after its 429: {wasted:?}"
    );

    // Now the gateway knows: the next request is refused without any upstream call.
    let calls = gw.mock.requests().len();
    let eighth = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(eighth.status(), 429);
    assert!(eighth.headers().contains_key("retry-after"));
    assert_eq!(gw.mock.requests().len(), calls);

    // Another model has its own quota.
    assert_eq!(
        gw.generate("gemini-2.5-pro", text_request("hi"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn local_limits_waste_no_upstream_call() {
    let gw = Harness::start(three_projects(2, 2)).await;
    for _ in 0..6 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("hi"))
                .await
                .status(),
            200
        );
    }
    // The same through the OpenAI route: a 429 in OpenAI's shape.
    let refused = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        gw.mock.requests().iter().all(|r| r.status == 200),
        "no call was wasted"
    );
    // Every project served exactly its two requests.
    for project in ["A", "B", "C"] {
        let served = gw
            .mock
            .requests()
            .iter()
            .filter(|r| project_of(r.api_key.as_deref().unwrap()) == project)
            .count();
        assert_eq!(served, 2, "project {project}");
    }
}

/// Reads a native SSE stream to its end; returns the last event's usage.
async fn stream_native(gw: &Harness, sse: bool) -> Value {
    let path = if sse {
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    } else {
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    };
    let text = gw
        .native(Method::POST, path)
        .json(&text_request("stream these words please"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    if sse {
        let last = text
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .last()
            .unwrap();
        serde_json::from_str::<Value>(last.strip_prefix("data: ").unwrap()).unwrap()["usageMetadata"].clone()
    } else {
        let events: Vec<Value> = serde_json::from_str(&text).unwrap();
        events.last().unwrap()["usageMetadata"].clone()
    }
}

#[tokio::test]
async fn usage_counters_match_the_upstream_exactly_and_survive_a_restart() {
    let gw = Harness::start(Setup::with_keys(&[("k1", "A"), ("k2", "B")])).await;
    for _ in 0..3 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("count me in"))
                .await
                .status(),
            200
        );
    }
    stream_native(&gw, true).await;
    stream_native(&gw, true).await;
    stream_native(&gw, false).await;
    let count = gw
        .native(Method::POST, "/v1beta/models/gemini-2.5-flash:countTokens")
        .json(&text_request("how many"))
        .send()
        .await
        .unwrap();
    assert_eq!(count.status(), 200);
    for stream in [false, true, false, true] {
        let response = gw
            .http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({
                "model": "gemini-2.5-flash", "stream": stream,
                "messages": [{"role": "user", "content": "openai side words"}],
                "reasoning_effort": "low"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    gw.state.accountant.flush().await;

    let storage = gw.state.storage.clone();
    let today = pool::pacific_day(gw.state.pool.now_ms());
    let totals = storage
        .usage_totals(UsageDimension::UpstreamKey, today)
        .await
        .unwrap();
    let key_ids: Vec<(i64, &str)> = vec![(1, "k1"), (2, "k2")];
    let mut requests = 0;
    for (id, key) in &key_ids {
        let counted = totals.get(id).cloned().unwrap_or_default();
        let served = gw.mock.usage_served_by(key);
        assert_eq!(
            counted.requests,
            i64::try_from(gw.mock.served_by(key)).unwrap(),
            "{key}"
        );
        assert_eq!(
            counted.prompt_tokens,
            i64::try_from(served.prompt).unwrap(),
            "{key} prompt"
        );
        assert_eq!(
            counted.completion_tokens,
            i64::try_from(served.candidates + served.thoughts).unwrap(),
            "{key} completion (thinking included)"
        );
        assert_eq!(
            counted.thoughts_tokens,
            i64::try_from(served.thoughts).unwrap(),
            "{key} thoughts"
        );
        assert_eq!(counted.requests_today, counted.requests);
        requests += counted.requests;
    }
    assert_eq!(requests, 11);
    let clients = storage
        .usage_totals(UsageDimension::ClientKey, today)
        .await
        .unwrap();
    assert_eq!(clients.values().map(|t| t.requests).sum::<i64>(), 11);
    assert_eq!(storage.request_log_count().await.unwrap(), 11);

    // A restart reads the same totals, and today's quota counts.
    let day_counts = gw.state.pool.day_counts();
    let (restarted, _) = gw.restart().await;
    let after = restarted
        .storage
        .usage_totals(UsageDimension::UpstreamKey, today)
        .await
        .unwrap();
    assert_eq!(after, totals);
    let mut restored = restarted.pool.day_counts();
    let mut expected = day_counts;
    restored.sort_by(|a, b| (&a.project, &a.model).cmp(&(&b.project, &b.model)));
    expected.sort_by(|a, b| (&a.project, &a.model).cmp(&(&b.project, &b.model)));
    assert_eq!(restored, expected);
}

#[tokio::test]
async fn a_stream_abandoned_by_its_client_is_still_counted() {
    let mut setup = Setup::with_keys(&[("k1", "A")]);
    setup.mock.stream_events = 20;
    let gw = Harness::start(setup).await;
    let gate = gw.mock.gate_streams();
    let mut response = gw
        .native(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        )
        .json(&text_request("a long answer is coming"))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    let first: Value = serde_json::from_str(
        std::str::from_utf8(&first)
            .unwrap()
            .trim()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    drop(response);
    let mock = gw.mock.clone();
    assert!(
        eventually(|| {
            gate.add_permits(1);
            mock.streams().cancelled() == 1
        })
        .await
    );
    let storage = gw.state.storage.clone();
    let accountant = gw.state.accountant.clone();
    let mut logged = 0;
    for _ in 0..100 {
        accountant.flush().await;
        logged = storage.request_log_count().await.unwrap();
        if logged == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(logged, 1);
    let today = pool::pacific_day(gw.state.pool.now_ms());
    let totals = storage
        .usage_totals(UsageDimension::UpstreamKey, today)
        .await
        .unwrap();
    let expected_prompt = first["usageMetadata"]["promptTokenCount"].as_i64().unwrap();
    assert_eq!(
        totals[&1].prompt_tokens, expected_prompt,
        "what the upstream reported is counted"
    );
}

#[tokio::test]
async fn per_client_limits_refuse_in_the_client_dialect_without_touching_the_pool() {
    let gw = Harness::start(Setup::with_keys(&[("k1", "A")])).await;
    let limits = pool::ClientLimits {
        rpm: Some(2),
        allowed_models: Some(vec!["gemini-2.5-flash".into()]),
        ..pool::ClientLimits::default()
    };
    gw.state
        .storage
        .set_client_limits(1, &limits)
        .await
        .unwrap();
    gw.state
        .clients
        .replace(gw.state.storage.client_keys().await.unwrap());

    // A model the key may not use: 403 in each dialect, nothing upstream.
    let native = gw.generate("gemini-2.5-pro", text_request("x")).await;
    assert_eq!(native.status(), 403);
    assert_eq!(
        native.json::<Value>().await.unwrap()["error"]["status"],
        "PERMISSION_DENIED"
    );
    let chat = |model: &str| {
        gw.http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    // That refused native request already counted against the per-minute limit of 2.
    let openai = chat("gemini-2.5-pro").await.unwrap();
    assert_eq!(openai.status(), 403);
    assert_eq!(
        openai.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_allowed"
    );
    assert!(gw.mock.requests().is_empty());

    // Over the per-minute limit: 429 with Retry-After, nothing upstream.
    let limited = chat("gemini-2.5-flash").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(gw.mock.requests().is_empty());

    // An expired key is refused as unauthenticated.
    let expired = pool::ClientLimits {
        expires_at_ms: Some(1),
        ..pool::ClientLimits::default()
    };
    gw.state
        .storage
        .set_client_limits(1, &expired)
        .await
        .unwrap();
    gw.state
        .clients
        .replace(gw.state.storage.client_keys().await.unwrap());
    let refused = gw.generate("gemini-2.5-flash", text_request("x")).await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_key_out_of_service_is_probed_with_backoff_and_comes_back_when_healthy() {
    let mut setup = Setup::with_keys(&[("good", "A")]);
    setup.gemini_keys = Some("good@A,flaky@B".into());
    let gw = Harness::start(setup).await;
    // "flaky" is unknown to the mock: its first use holds it back, and the check that follows
    // takes it out of service.
    for _ in 0..10 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("x"))
                .await
                .status(),
            200
        );
        if gw
            .state
            .pool
            .keys()
            .iter()
            .any(|k| k.checking_until_ms() > 0 || !k.is_usable())
        {
            break;
        }
    }
    let state = gw.state.clone();
    assert!(eventually(|| state.pool.keys().iter().any(|k| !k.is_usable())).await);
    // The key's fall is persisted in the background: wait for it, or it could land after the
    // probe's recovery below.
    let mut persisted = false;
    for _ in 0..200 {
        if gw
            .state
            .storage
            .upstream_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.out_of_service.is_some())
        {
            persisted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(persisted);
    let prober = server::service::probe::Prober::new(
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
    );
    // Still invalid: probed, not restored, and not probed again before its backoff.
    assert_eq!(
        prober.round(&gw.state.relay).await,
        server::service::probe::ProbeRound {
            probed: 1,
            restored: 0
        }
    );
    assert_eq!(
        prober.round(&gw.state.relay).await,
        server::service::probe::ProbeRound {
            probed: 0,
            restored: 0
        }
    );
    let probes = gw
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1beta/models" && r.api_key.as_deref() == Some("flaky"))
        .count();
    // The check that confirmed the key error, and this round's.
    assert_eq!(probes, 2);

    // The key works again upstream: the next due probe brings it back, persistently.
    gw.mock.add_key(mock_gemini::MockKey::new("flaky", "B"));
    let due_now = server::service::probe::Prober::new(
        std::time::Duration::ZERO,
        std::time::Duration::from_secs(3600),
    );
    assert_eq!(
        due_now.round(&gw.state.relay).await,
        server::service::probe::ProbeRound {
            probed: 1,
            restored: 1
        }
    );
    assert!(gw.state.pool.keys().iter().all(|k| k.is_usable()));
    let stored = gw.state.storage.upstream_keys().await.unwrap();
    assert!(stored.iter().all(|k| k.out_of_service.is_none()));
}
