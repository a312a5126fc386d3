//! What a client key holder, or anyone, can do to the gateway: each test is an attack that
//! worked before it was fixed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup, eventually, text_request};
use serde_json::{Value, json};

const KEYS: [(&str, &str); 2] = [
    ("AIzaSySecurity-key-a0000000000000000000", "proj-a"),
    ("AIzaSySecurity-key-b0000000000000000000", "proj-b"),
];

/// Google quotes client text in its errors ("Unknown name \"…\""). Field names and file ids
/// made of Google's key-error words must not take any key out of service: the errors are about
/// the request, go back to the client, and no key is even held back for a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_google_quotes_back_never_take_a_key_out_of_service() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let words = [
        "reported as leaked",
        "api key not valid",
        "has been suspended",
        "API key not valid. Please pass a valid API key.",
        "Your API key was reported as leaked. Please use another API key.",
    ];
    for words in words {
        // A native body with a field named after the words: Google answers 400 quoting it.
        let mut body = text_request("hi");
        body[words] = json!(1);
        let response = gw.generate("gemini-2.5-flash", body).await;
        assert_eq!(response.status(), 400, "{words}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains(words),
            "the client sees Google's words: {text}"
        );
        // A file id of the words, natively and through an OpenAI image part: a 403 quoting it.
        let native = json!({"contents": [{"role": "user", "parts": [
            {"fileData": {"mimeType": "image/png", "fileUri": format!("files/{words}")}}]}]});
        let response = gw.generate("gemini-2.5-flash", native).await;
        assert!(response.status().is_client_error(), "{words}");
        let response = gw
            .http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("https://generativelanguage.googleapis.com/v1beta/files/{}", words.replace(' ', "-"))}}]}]}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{words}");
    }
    // Every key is in service, none is being checked, and requests are served.
    let now = gw.state.pool.now_ms();
    for key in gw.state.pool.keys() {
        assert!(key.is_available(now), "{key:?} was blamed");
        assert!(key.out_of_service_reason().is_none());
    }
    assert_eq!(
        gw.generate("gemini-2.5-flash", text_request("still fine"))
            .await
            .status(),
        200
    );
    assert!(
        gw.state
            .storage
            .upstream_keys()
            .await
            .unwrap()
            .iter()
            .all(|key| key.out_of_service.is_none()),
        "a key was stored as out of service"
    );
    // No probe was even needed: nothing about a key was read from those answers.
    assert!(
        gw.mock
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/models"))
    );
}

/// A real key error still takes its key out of service (after the gateway's own probe agrees),
/// and the healthy key keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_key_error_is_confirmed_by_a_probe_before_the_key_leaves_service() {
    let mut setup = Setup::with_keys(&KEYS[..1]);
    setup.gemini_keys = Some(format!(
        "{}@{},AIzaSyRevoked-key-000000000000000000@proj-r",
        KEYS[0].0, KEYS[0].1
    ));
    let gw = Harness::start(setup).await;
    for _ in 0..8 {
        assert_eq!(
            gw.generate("gemini-2.5-flash", text_request("hi"))
                .await
                .status(),
            200
        );
    }
    let state = gw.state.clone();
    assert!(
        eventually(|| state
            .pool
            .keys()
            .iter()
            .any(|key| key.out_of_service_reason().as_deref() == Some("API_KEY_INVALID")))
        .await
    );
    let probes: Vec<_> = gw
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key.as_deref() == Some("AIzaSyRevoked-key-000000000000000000"))
        .map(|r| r.path)
        .collect();
    assert!(
        probes.iter().any(|path| path.ends_with("/models")),
        "{probes:?}"
    );
}

/// `?%6Bey=` and `?ke%79=` are `key` once decoded: they authenticate, and neither they nor any
/// other credential or caller identity (`access_token`, `quotaUser`) travels upstream; only the
/// Gemini API's own parameters do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_query_credentials_never_travel_upstream() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    for smuggled in [
        format!("%6Bey={CLIENT_KEY}"),
        format!("ke%79={CLIENT_KEY}"),
        format!("key={CLIENT_KEY}&access_token=ya29.secret&quotaUser=victim&%61ccess_token=x"),
    ] {
        let response = gw
            .http
            .post(gw.url(&format!(
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&{smuggled}"
            )))
            .json(&text_request("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{smuggled}");
        let _ = response.text().await;
        let last = gw.mock.requests().pop().unwrap();
        let query = last.query.unwrap_or_default();
        assert_eq!(query, "alt=sse", "{smuggled}");
    }
    let listed = gw
        .http
        .get(gw.url(&format!(
            "/v1beta/models?pageSize=2&pageToken=a%2Bb%2Fc&%6Bey={CLIENT_KEY}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let query = gw.mock.requests().pop().unwrap().query.unwrap_or_default();
    assert_eq!(query, "pageSize=2&pageToken=a%2Bb%2Fc");
    let all: Vec<Value> = gw.mock.requests().iter().map(|r| json!(r.query)).collect();
    assert!(
        !serde_json::to_string(&all).unwrap().contains(CLIENT_KEY),
        "a client key reached the upstream"
    );
}

/// Client-key guessing from one address: after a burst of failures the address gets 429s that
/// say nothing about the keys it tries, a valid key it has not used before included; a key that
/// already worked from it goes on working, and another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_client_keys_backs_the_address_off_without_slowing_its_known_keys() {
    const SECOND: &str = "second-client-key-0002";
    let mut setup = Setup::with_keys(&KEYS);
    setup
        .env
        .push(("CLIENT_API_KEYS", format!("{CLIENT_KEY},{SECOND}")));
    let gw = Harness::start(setup).await;
    let models = |key: &str| {
        gw.http
            .get(gw.url("/v1/models"))
            .bearer_auth(key.to_owned())
            .send()
    };
    assert_eq!(models(CLIENT_KEY).await.unwrap().status(), 200);
    let mut statuses = Vec::new();
    for guess in 0..40 {
        statuses.push(
            models(&format!("guess-{guess:04}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "{statuses:?}"
    );
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let backed_off = models("guess-9999").await.unwrap();
    assert_eq!(backed_off.status(), 429);
    assert!(backed_off.headers().contains_key("retry-after"));
    let body: Value = backed_off.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_failed_authentications");
    // A valid key never used from here gets no verdict either; the known one works.
    assert_eq!(models(SECOND).await.unwrap().status(), 429);
    assert_eq!(models(CLIENT_KEY).await.unwrap().status(), 200);
    // Nothing of this reached the upstream beyond the known key's calls.
    assert!(gw.mock.requests().iter().all(|r| {
        r.api_key
            .as_deref()
            .is_some_and(|k| k.starts_with("AIzaSySecurity"))
    }));
}

/// A client key limited to two requests at once: a third, while two streams are open, is
/// refused at once (429, its own dialect); the places come back when the streams end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keys_requests_in_flight_are_bounded_and_streams_hold_their_place() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let limits = pool::ClientLimits {
        max_concurrent: Some(2),
        ..pool::ClientLimits::default()
    };
    let client = gw.state.storage.client_keys().await.unwrap()[0].id;
    gw.state
        .storage
        .set_client_limits(client, &limits)
        .await
        .unwrap();
    gw.state
        .clients
        .replace(gw.state.storage.client_keys().await.unwrap());
    let gate = gw.mock.gate_streams();
    let stream = || {
        gw.http
            .post(gw.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&text_request("hold"))
            .send()
    };
    let first = stream().await.unwrap();
    let second = stream().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = gw.generate("gemini-2.5-flash", text_request("third")).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests at once")
    );
    // The streams end: their places come back.
    gate.add_permits(100);
    first.text().await.unwrap();
    second.text().await.unwrap();
    assert_eq!(
        gw.generate("gemini-2.5-flash", text_request("after"))
            .await
            .status(),
        200
    );
}
