//! The native Gemini passthrough against `mock-gemini`: auth, key swapping, path validation,
//! streaming, cancellation, failover and health.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::{CLIENT_KEY, Harness, Setup, eventually, text_request};
use mock_gemini::{Injection, MockConfig};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn generate_goes_upstream_with_a_pool_key_and_never_the_client_key() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let response = gw
        .native(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:generateContent?key=ignored-too",
        )
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("cookie", "session=abc")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-goog-api-client", "genai-py/1.0")
        .json(&text_request("hello there"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body.pointer("/candidates/0/content/parts/0/text")
            .and_then(Value::as_str),
        Some("Echo: hello there")
    );
    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(upstream.api_key.as_deref(), Some("pool-key-a"));
    assert_eq!(upstream.query, None, "the ?key= of the client is dropped");
    for (name, value) in &upstream.headers {
        assert!(
            !value.contains(CLIENT_KEY),
            "client key leaked in header {name}"
        );
        assert!(!value.contains("ignored-too"));
    }
    let names: Vec<&str> = upstream.headers.iter().map(|(n, _)| n.as_str()).collect();
    for forbidden in ["authorization", "cookie", "x-forwarded-for", "x-api-key"] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} crossed to the upstream"
        );
    }
    assert!(
        names.contains(&"x-goog-api-client"),
        "allowlisted header kept"
    );
}

#[tokio::test]
async fn every_client_key_placement_is_accepted() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let path = "/v1beta/models/gemini-2.5-flash:countTokens";
    let body = text_request("count me");
    let requests = [
        gw.http.post(gw.url(path)).bearer_auth(CLIENT_KEY),
        gw.http
            .post(gw.url(path))
            .header("x-goog-api-key", CLIENT_KEY),
        gw.http.post(gw.url(path)).header("x-api-key", CLIENT_KEY),
        gw.http.post(gw.url(&format!("{path}?key={CLIENT_KEY}"))),
    ];
    for request in requests {
        let response = request.json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["totalTokens"], 2);
    }
    assert_eq!(gw.mock.served_by("pool-key-a"), 4);
}

#[tokio::test]
async fn missing_or_unknown_keys_get_401_in_the_route_dialect_and_reach_nothing() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let native = gw
        .http
        .post(gw.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .json(&text_request("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(native.status(), 401);
    let body: Value = native.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);

    let wrong = gw
        .http
        .get(gw.url("/v1beta/models"))
        .header("x-goog-api-key", "not-a-client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let openai = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("not-a-client-key")
        .json(&json!({"model": "gemini-2.5-flash", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 401);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // The pool key is not a client key either.
    let pool_key = gw
        .http
        .get(gw.url("/v1beta/models"))
        .header("x-goog-api-key", "pool-key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(pool_key.status(), 401);
    assert!(
        gw.mock.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn path_escapes_and_foreign_paths_are_refused_before_the_upstream() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let cases = [
        ("GET /v1beta/models/../../oauth2/token HTTP/1.1", 400),
        ("GET /v1beta/models/%2e%2e/%2e%2e/admin HTTP/1.1", 400),
        ("GET /v1beta/models/x%2F..%2Fy HTTP/1.1", 400),
        ("GET /v1beta//models HTTP/1.1", 400),
        ("GET /v1beta/storage/v1/b HTTP/1.1", 404),
        ("GET /v1beta/https:/evil.example/x HTTP/1.1", 404),
        ("GET /v1/oauth2/token HTTP/1.1", 404),
        ("GET http://evil.example/v1beta/models/../x HTTP/1.1", 400),
    ];
    for (line, expected) in cases {
        assert_eq!(gw.raw_status(line).await, expected, "{line}");
    }
    assert!(
        gw.mock.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn native_v1_models_list_and_paging_pass_through() {
    let mut setup = Setup::with_keys(&[("pool-key-a", "p1")]);
    setup.mock.default_models_page_size = 3;
    let gw = Harness::start(setup).await;
    let first: Value = gw
        .native(Method::GET, "/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["models"].as_array().unwrap().len(), 3);
    let token = first["nextPageToken"].as_str().unwrap();
    let second: Value = gw
        .native(
            Method::GET,
            &format!("/v1beta/models?pageToken={token}&pageSize=100"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(second["models"].as_array().unwrap().len() >= 5);
    let seen = gw.mock.requests();
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(
        seen[1].query.as_deref(),
        Some(&*format!("pageToken={token}&pageSize=100"))
    );
}

#[tokio::test]
async fn a_stream_is_relayed_event_by_event_as_the_upstream_sends_it() {
    let mut setup = Setup::with_keys(&[("pool-key-a", "p1")]);
    setup.mock.stream_events = 4;
    let gw = Harness::start(setup).await;
    // The mock sends each event after the first only when the test releases it, so an event
    // read before its successor is released proves the gateway does not buffer.
    let gate = gw.mock.gate_streams();
    let mut response = gw
        .native(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        )
        .json(&text_request("one two three four five six seven eight"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut received = Vec::new();
    for event in 0..4 {
        if event > 0 {
            gate.add_permits(1);
        }
        let mut pending = Vec::new();
        while !pending.ends_with(b"\r\n\r\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("event {event} did not arrive while the next was held"))
                .unwrap()
                .unwrap();
            pending.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(pending.clone()).unwrap();
        assert_eq!(
            text.matches("data: ").count(),
            1,
            "exactly one event: {text}"
        );
        received.extend(pending);
    }
    assert!(response.chunk().await.unwrap().is_none());
    let text = String::from_utf8(received).unwrap();
    let events: Vec<Value> = text
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(gw.mock.streams().completed(), 1);
}

#[tokio::test]
async fn the_json_array_stream_form_passes_through() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let response = gw
        .native(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        )
        .json(&text_request("array form please"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events: Vec<Value> = response.json().await.unwrap();
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_upstream_stream() {
    let mut setup = Setup::with_keys(&[("pool-key-a", "p1")]);
    setup.mock.stream_events = 50;
    let gw = Harness::start(setup).await;
    let gate = gw.mock.gate_streams();
    let mut response = gw
        .native(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        )
        .json(&text_request("a long answer"))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(response);
    // Let the mock try to send the rest: it must find nobody listening and stop early.
    let mock = gw.mock.clone();
    let stopped = eventually(|| {
        gate.add_permits(1);
        mock.streams().cancelled() == 1
    })
    .await;
    assert!(stopped, "the upstream stream was not cancelled");
    assert_eq!(gw.mock.streams().completed(), 0);
}

#[tokio::test]
async fn rate_limited_and_failing_keys_fail_over_to_another_key() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1"), ("key-b", "p2")])).await;
    let quota =
        serde_json::from_str::<Value>(include_str!("fixtures/error_429_resource_exhausted.json"))
            .unwrap();
    let overloaded = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    // A 503 first (it cools the project for a second at most), then a quota 429 (it cools the
    // project for the RetryInfo's 26 s). Keys are drawn at random, so requests go on until
    // key-a has met its injected failure; every one succeeds.
    for (status, body) in [(503, overloaded), (429, quota)] {
        gw.mock.inject(Injection {
            key: Some("key-a".into()),
            ..Injection::status(status, body, 1)
        });
        let mut met = false;
        for _ in 0..50 {
            let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
            assert_eq!(response.status(), 200);
            if gw.mock.requests().iter().any(|r| r.status == status) {
                met = true;
                break;
            }
        }
        assert!(met, "key-a never met its {status}");
        // Past the capacity cooldown of the 503 (one second at most), p1 serves again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // p1 now cools down for this model (RetryInfo said 26 s): key-a is not used for it.
    let before = gw.mock.requests().len();
    for _ in 0..6 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("hi"))
                .await
                .status(),
            200
        );
    }
    let after: Vec<_> = gw.mock.requests().into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .all(|r| r.api_key.as_deref() == Some("key-b") && r.status == 200)
    );
    // Another model is not cooled.
    let mut used_a = false;
    for _ in 0..30 {
        assert_eq!(
            gw.generate("gemini-2.5-pro", text_request("hi"))
                .await
                .status(),
            200
        );
        used_a |= gw.mock.requests().last().unwrap().api_key.as_deref() == Some("key-a");
    }
    assert!(used_a, "key-a still serves other models");
}

#[tokio::test]
async fn an_invalid_key_is_used_once_then_kept_out_of_service_across_restarts() {
    let mut setup = Setup::with_keys(&[("good-key", "p1")]);
    setup.gemini_keys = Some("revoked-key@p0,good-key@p1".into());
    let gw = Harness::start(setup).await;
    for _ in 0..6 {
        let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
        assert_eq!(response.status(), 200);
    }
    let revoked_uses = |gw: &Harness| {
        gw.mock
            .requests()
            .iter()
            .filter(|r| {
                r.api_key.as_deref() == Some("revoked-key") && r.path.contains("generateContent")
            })
            .count()
    };
    assert!(revoked_uses(&gw) <= 1);
    let state = gw.state.clone();
    assert!(
        eventually(|| state
            .pool
            .keys()
            .iter()
            .any(|k| k.out_of_service_reason().as_deref() == Some("API_KEY_INVALID")))
        .await
    );
    // It left service on the word of a probe of the gateway's own (a models list), not on the
    // client request's answer alone.
    assert!(
        gw.mock.requests().iter().any(|r| {
            r.api_key.as_deref() == Some("revoked-key") && r.path.ends_with("/models")
        })
    );
    // Give the background write a moment, then restart on the same database.
    let storage = gw.state.storage.clone();
    let mut persisted = false;
    for _ in 0..100 {
        if storage
            .upstream_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.out_of_service.is_some())
        {
            persisted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(persisted, "the key's state was not persisted");
    let (restarted, addr) = gw.restart().await;
    assert_eq!(
        restarted
            .pool
            .keys()
            .iter()
            .filter(|k| k.is_usable())
            .count(),
        1
    );
    let before = revoked_uses(&gw);
    for _ in 0..4 {
        let response = gw
            .http
            .post(format!(
                "http://{addr}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&text_request("again"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        revoked_uses(&gw),
        before,
        "the revoked key was used after the restart"
    );
}

#[tokio::test]
async fn retries_stop_at_max_retries_and_relay_the_last_upstream_error() {
    let mut setup = Setup::with_keys(&[("k1", "p1"), ("k2", "p2"), ("k3", "p3"), ("k4", "p4")]);
    setup.env.push(("MAX_RETRIES", "1".into()));
    let gw = Harness::start(setup).await;
    let overloaded = json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}});
    gw.mock.inject(Injection::status(503, overloaded, 100));
    let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert_eq!(gw.mock.requests().len(), 2, "one try and one retry");
}

#[tokio::test]
async fn a_request_error_is_not_retried_on_other_keys() {
    let gw = Harness::start(Setup::with_keys(&[("k1", "p1"), ("k2", "p2")])).await;
    let response = gw.generate("no-such-model", text_request("hi")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    assert_eq!(gw.mock.requests().len(), 1);
}

#[tokio::test]
async fn upstream_messages_never_show_a_pool_key() {
    let mut setup = Setup::with_keys(&[]);
    setup.mock.suspended_keys = vec!["AIzaSySuspendedKey0000000000000000000000".into()];
    setup.gemini_keys = Some("AIzaSySuspendedKey0000000000000000000000@p1".into());
    let gw = Harness::start(setup).await;
    let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(response.status(), 403);
    let text = response.text().await.unwrap();
    assert!(text.contains("[REDACTED_KEY]"), "{text}");
    assert!(!text.contains("SuspendedKey"), "{text}");
    // Taken out of service once a probe confirms it: the next request has no key left.
    let state = gw.state.clone();
    assert!(eventually(|| !state.pool.has_usable_key()).await);
    let next = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(next.status(), 503);
    assert!(next.headers().contains_key("retry-after"));
    let body: Value = next.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 out of service"),
        "{body}"
    );
    let requests = gw.mock.requests();
    assert_eq!(requests.len(), 2, "the request and the probe");
    assert!(requests[1].path.ends_with("/models"));
}

#[tokio::test]
async fn an_unreachable_upstream_gives_a_gemini_502() {
    let mut setup = Setup::with_keys(&[("k1", "p1")]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    setup
        .env
        .push(("GEMINI_BASE_URL", format!("http://{closed_addr}")));
    let gw = Harness::start(setup).await;
    let response = gw.generate("gemini-2.5-flash", text_request("hi")).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert!(
        !body.to_string().contains(&closed_addr.to_string()),
        "no upstream address in errors"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = Harness::start(Setup::with_keys(&[("k1", "p1")])).await;
    let alive = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    let ready: Value = gw
        .http
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "database": true, "usable_keys": 1,
            "accounting": {"writing": true, "failing_since_ms": null, "pending": 0, "dropped": 0}})
    );

    let empty = Harness::start(Setup {
        mock: MockConfig::default(),
        gemini_keys: Some(String::new()),
        env: Vec::new(),
    })
    .await;
    let not_ready = empty.http.get(empty.url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
}

async fn native_stream(gw: &Harness) -> reqwest::Response {
    gw.native(
        reqwest::Method::POST,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    )
    .json(&text_request("hi"))
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn an_error_in_the_first_event_of_a_native_stream_moves_to_another_key() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1"), ("key-b", "p2")])).await;
    let overloaded = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    gw.mock.inject(Injection {
        key: Some("key-a".into()),
        ..Injection::stream(vec![overloaded.clone()], 100)
    });
    // Keys are drawn at random: go on until key-a has been tried; no client ever sees its error.
    let mut streams = 0;
    while streams < 4
        || (!gw
            .mock
            .requests()
            .iter()
            .any(|r| r.api_key.as_deref() == Some("key-a"))
            && streams < 60)
    {
        let response = native_stream(&gw).await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.contains("finishReason"), "{body}");
        assert!(!body.contains("\"error\""), "{body}");
        streams += 1;
    }
    assert!(
        gw.mock
            .requests()
            .iter()
            .any(|r| r.api_key.as_deref() == Some("key-a"))
    );

    // With every key failing so, the client gets the upstream's error as an error status, not
    // a 200 stream.
    gw.mock.inject(Injection {
        key: Some("key-b".into()),
        ..Injection::stream(vec![overloaded], 100)
    });
    let response = native_stream(&gw).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
}
