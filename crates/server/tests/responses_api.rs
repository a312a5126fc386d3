//! `/v1/responses` and `/v1/completions` through the real router against the mock: the bytes of
//! their streams, their accounting, failover before the stream commits, errors in OpenAI's shape,
//! and the OpenAPI description agreeing with the routes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup};
use mock_gemini::Injection;
use serde_json::{Value, json};

async fn gateway() -> Harness {
    Harness::start(Setup::with_keys(&[
        ("AIzaResponsesKeyA0000000000000000000000", "proj-a"),
        ("AIzaResponsesKeyB0000000000000000000000", "proj-b"),
    ]))
    .await
}

async fn post(gw: &Harness, path: &str, body: Value) -> reqwest::Response {
    gw.http
        .post(gw.url(path))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `(event, data)` pairs of an SSE body.
fn sse_pairs(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (event, data)
        })
        .collect()
}

#[tokio::test]
async fn a_responses_stream_names_each_event_and_ends_without_done() {
    let gw = gateway().await;
    let response = post(
        &gw,
        "/v1/responses",
        json!({"model": "gemini-2.5-flash", "input": "Stream me please", "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let pairs = sse_pairs(&body);
    assert!(!body.contains("[DONE]"), "{body}");
    for (index, (event, data)) in pairs.iter().enumerate() {
        let data: Value = serde_json::from_str(data).unwrap();
        // The SSE event name is the event's own type, as OpenAI's SDKs read it.
        assert_eq!(event.as_deref(), data["type"].as_str(), "{body}");
        assert_eq!(data["sequence_number"], index);
    }
    let last: Value = serde_json::from_str(&pairs.last().unwrap().1).unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        "Echo: Stream me please"
    );
}

#[tokio::test]
async fn both_routes_are_accounted_with_their_tokens_and_in_the_metrics() {
    let gw = gateway().await;
    let response = post(
        &gw,
        "/v1/responses",
        json!({"model": "gemini-2.5-flash", "input": "count me"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let streamed = post(
        &gw,
        "/v1/completions",
        json!({"model": "gemini-2.5-flash", "prompt": ["one two", "three"], "stream": true}),
    )
    .await;
    let body = streamed.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    gw.state.accountant.flush().await;
    let (rows, _) = gw
        .state
        .storage
        .request_logs(&store::LogFilter::default())
        .await
        .unwrap();
    let row = |route: &str| rows.iter().find(|row| row.route == route).unwrap().clone();
    let responses = row("/v1/responses");
    assert_eq!((responses.status, responses.prompt_tokens), (200, 2));
    assert_eq!(responses.model.as_deref(), Some("gemini-2.5-flash"));
    // The two prompts' usage adds up in one row: 2 + 1 prompt words.
    let completions = row("/v1/completions");
    assert_eq!((completions.prompt_tokens, completions.streamed), (3, true));
    assert!(completions.completion_tokens > 0);
    let metrics = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for route in ["/v1/responses", "/v1/completions"] {
        assert!(
            metrics.contains(&format!(
                "gateway_requests_total{{route=\"{route}\",status_class=\"2xx\"}}"
            )),
            "{route} not in the metrics"
        );
    }
}

#[tokio::test]
async fn a_rate_limited_key_moves_the_request_to_another_before_the_stream_commits() {
    let quota = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10",
        "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}});
    for (path, body) in [
        (
            "/v1/responses",
            json!({"model": "gemini-2.5-flash", "input": "hello", "stream": true}),
        ),
        (
            "/v1/completions",
            json!({"model": "gemini-2.5-flash", "prompt": "hello", "stream": true}),
        ),
    ] {
        // The first key tried answers a quota 429 once: the other project's key serves (a
        // fresh gateway each time: the first project is cooling afterwards).
        let gw = gateway().await;
        gw.mock.inject(Injection::status(429, quota.clone(), 1));
        let calls_before = gw.mock.requests().len();
        let response = post(&gw, path, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        let finished = text.contains("event: response.completed") || text.contains("data: [DONE]");
        assert!(finished && text.contains("hello"), "{path}: {text}");
        assert!(
            !text.contains("\"type\":\"error\"") && !text.contains("\"error\":{"),
            "{path}: {text}"
        );
        let calls = &gw.mock.requests()[calls_before..];
        assert_eq!(calls.len(), 2, "{path}");
        assert_ne!(calls[0].api_key, calls[1].api_key, "{path}");
    }
}

#[tokio::test]
async fn errors_come_in_openais_shape_and_bad_requests_never_go_upstream() {
    let gw = gateway().await;
    let before = gw.mock.requests().len();
    for (method, path, body, status, param) in [
        (
            "POST",
            "/v1/responses",
            json!({"model": "gemini-2.5-flash", "input": "x", "background": true}),
            400,
            Some("background"),
        ),
        (
            "POST",
            "/v1/responses",
            json!({"model": "gemini-2.5-flash", "input": "x", "previous_response_id": "resp_missing"}),
            400,
            Some("previous_response_id"),
        ),
        (
            "POST",
            "/v1/responses",
            json!({"model": "gemini-2.5-flash", "input": [{"type": "item_reference", "id": "msg_nowhere"}]}),
            400,
            Some("input[0].id"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": "gemini-2.5-flash", "prompt": "x", "best_of": 3}),
            400,
            Some("best_of"),
        ),
        (
            "POST",
            "/v1/completions",
            json!({"model": "gemini-2.5-flash", "prompt": "x", "logit_bias": {"5": 1}}),
            400,
            Some("logit_bias"),
        ),
        ("GET", "/v1/responses/resp_missing", Value::Null, 404, None),
        (
            "DELETE",
            "/v1/responses/resp_missing",
            Value::Null,
            404,
            None,
        ),
        (
            "GET",
            "/v1/responses/resp_missing/input_items",
            Value::Null,
            404,
            None,
        ),
        ("PUT", "/v1/responses/resp_missing", Value::Null, 404, None),
    ] {
        let mut request = gw
            .http
            .request(method.parse().unwrap(), gw.url(path))
            .bearer_auth(CLIENT_KEY);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
        assert!(error["error"]["type"].is_string(), "{error}");
        assert_eq!(error["error"]["param"].as_str(), param, "{error}");
    }
    assert_eq!(gw.mock.requests().len(), before);
}

#[tokio::test]
async fn input_items_page_in_both_orders() {
    let gw = gateway().await;
    let created: Value = post(
        &gw,
        "/v1/responses",
        json!({"model": "gemini-2.5-flash", "input": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let page = |query: String| {
        let gw = &gw;
        async move {
            gw.http
                .get(gw.url(&format!("/v1/responses/{id}/input_items{query}")))
                .bearer_auth(CLIENT_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let texts = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest = page("?limit=2".to_owned()).await;
    assert_eq!(texts(&newest), ["three", "two"]);
    assert_eq!(newest["has_more"], true);
    let rest = page(format!(
        "?limit=2&after={}",
        newest["last_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(texts(&rest), ["one"]);
    assert_eq!(rest["has_more"], false);
    let oldest = page("?order=asc".to_owned()).await;
    assert_eq!(texts(&oldest), ["one", "two", "three"]);
    assert_eq!(oldest["object"], "list");
    assert_eq!(oldest["first_id"], oldest["data"][0]["id"]);
}

#[tokio::test]
async fn every_openai_route_of_the_openapi_description_is_served() {
    let gw = gateway().await;
    let spec: Value = gw
        .http
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let described: Vec<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/"))
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    // What the OpenAI dispatcher serves (`openai::handle`, `responses::handle`).
    let mut served = vec![
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{id}"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/{id}"),
        ("DELETE", "/v1/responses/{id}"),
        ("GET", "/v1/responses/{id}/input_items"),
        ("POST", "/v1/responses/{id}/cancel"),
    ];
    let mut described_sorted: Vec<(&str, &str)> = described
        .iter()
        .map(|(method, path)| (method.as_str(), path.as_str()))
        .collect();
    described_sorted.sort_unstable();
    served.sort_unstable();
    assert_eq!(described_sorted, served);
    for (method, path) in served {
        let concrete = path
            .replace("/models/{id}", "/models/gemini-2.5-flash")
            .replace("{id}", "resp_unknown");
        let response = gw
            .http
            .request(method.parse().unwrap(), gw.url(&concrete))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("is not an OpenAI-compatible route"),
            "{method} {path} is described but not served: {body}"
        );
    }
}
