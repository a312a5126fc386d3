//! The OpenAI routes in process against `mock-gemini`: the streaming commit point, errors inside
//! streams, cancellation and error shapes. (The full client behaviour is tested with the real
//! `openai` SDK in tests/python.)

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::{CLIENT_KEY, Harness, Setup, eventually};
use mock_gemini::Injection;
use serde_json::{Value, json};

fn chat(stream: bool) -> Value {
    json!({
        "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": "one two three"}],
        "stream": stream,
    })
}

async fn post_chat(gw: &Harness, body: &Value) -> reqwest::Response {
    gw.http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an OpenAI stream.
async fn payloads(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn text_event(text: &str, finish: Option<&str>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": [{"text": text}]}});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    json!({"candidates": [candidate], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}, "responseId": "r1"})
}

#[tokio::test]
async fn an_error_in_the_first_stream_event_moves_to_another_key() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1"), ("key-b", "p2")])).await;
    let quota = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}});
    for key in ["key-a", "key-b"] {
        gw.mock.inject(Injection {
            key: Some(key.into()),
            ..Injection::stream(vec![quota.clone()], 1)
        });
    }
    // Whichever key comes first fails inside its stream; the other one fails too; a third
    // attempt (same keys are not retried) is impossible, so the client gets a 429 before any
    // byte of a stream.
    let response = post_chat(&gw, &chat(true)).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(gw.mock.requests().len(), 2);

    // Both projects now cool down: the next request is refused at once, with nothing sent.
    let refused = post_chat(&gw, &chat(true)).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(gw.mock.requests().len(), 2);
}

#[tokio::test]
async fn a_key_failing_inside_every_stream_is_invisible_to_clients() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1"), ("key-b", "p2")])).await;
    let overloaded = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    // With one key failing in every stream, each stream is served by the other key, and the
    // client never sees the failure.
    gw.mock.inject(Injection {
        key: Some("key-a".into()),
        ..Injection::stream(vec![overloaded], 100)
    });
    // Keys are drawn at random: go on until key-a has been tried (at least four streams).
    let tried_a = |gw: &Harness| {
        gw.mock
            .requests()
            .iter()
            .filter(|r| r.api_key.as_deref() == Some("key-a"))
            .count()
    };
    let mut streams = 0;
    while streams < 4 || (tried_a(&gw) == 0 && streams < 60) {
        let served = post_chat(&gw, &chat(true)).await;
        assert_eq!(served.status(), 200);
        let events = payloads(served).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events.iter().all(|e| !e.contains("\"error\"")));
        streams += 1;
    }
    let failed_on_a = tried_a(&gw);
    assert!(failed_on_a >= 1, "key-a was never tried");
}

#[tokio::test]
async fn an_error_after_the_first_event_becomes_an_error_event_without_done() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1")])).await;
    gw.mock.inject(Injection::stream(
        vec![
            text_event("Hello", None),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ],
        1,
    ));
    let response = post_chat(&gw, &chat(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let events = payloads(response).await;
    assert!(events.iter().any(|e| e.contains("\"content\":\"Hello\"")));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_unavailable");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_not_a_silent_cut() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1")])).await;
    gw.mock
        .inject(Injection::stream(vec![text_event("partial", None)], 1));
    let events = payloads(post_chat(&gw, &chat(true)).await).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn an_openai_stream_is_relayed_as_events_arrive_and_cancelled_with_the_client() {
    let mut setup = Setup::with_keys(&[("key-a", "p1")]);
    setup.mock.stream_events = 40;
    let gw = Harness::start(setup).await;
    let gate = gw.mock.gate_streams();
    let mut response = post_chat(&gw, &chat(true)).await;
    assert_eq!(response.status(), 200);
    // The role chunk and the first content chunk arrive while the mock holds the second event.
    let mut received = String::new();
    while received.matches("data: ").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("the first event was held back")
            .unwrap()
            .unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(received.contains("\"role\":\"assistant\""));
    drop(response);
    let mock = gw.mock.clone();
    assert!(
        eventually(|| {
            gate.add_permits(1);
            mock.streams().cancelled() == 1
        })
        .await,
        "the upstream stream was not cancelled"
    );
    assert_eq!(gw.mock.streams().completed(), 0);
}

#[tokio::test]
async fn openai_errors_have_openai_shape_and_never_reach_the_upstream_when_local() {
    let gw = Harness::start(Setup::with_keys(&[("key-a", "p1")])).await;
    let cases = [
        (
            json!({"model": "gemini-2.5-flash", "messages": "not a list"}),
            "messages",
        ),
        (
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "../files/x", "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (json!({"messages": [{"role": "user", "content": "x"}]}), "."),
    ];
    for (body, param) in cases {
        let response = post_chat(&gw, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error");
        if param != "." {
            assert_eq!(error["error"]["param"], param, "{body}");
        }
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
    }
    let unknown_route = gw
        .http
        .get(gw.url("/v1/assistants"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_route.status(), 404);
    assert!(gw.mock.requests().is_empty());
}
