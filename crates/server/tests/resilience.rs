//! The real `gemini-pool` binary through Gemini's real failure modes, played by `mock-gemini`:
//! capacity storms (a bare 429 on every key, a 503 overload on every key) and the recovery
//! after them, empty answers, and hostile `RetryInfo` delays. The pool must stay up: refuse
//! fast and honestly while the upstream cannot serve, never blame a key for the upstream's
//! trouble, and serve again within two seconds of the upstream's recovery.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "tests fail loudly and say what they measured"
)]

use std::time::{Duration, Instant};

use mock_gemini::{Injection, MockConfig, MockGemini, MockKey, Outage};
use serde_json::{Value, json};
use tokio::process::Child;

mod common;

const CLIENT_KEY: &str = "resilience-client-key-01";
const PASSWORD: &str = "resilience-admin-password";
const MODEL: &str = "gemini-2.5-flash";

struct Gateway {
    _child: Child,
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(mock: std::net::SocketAddr, keys: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = common::spawn_binary(
            dir.path(),
            &[
                ("GEMINI_API_KEYS", keys.to_owned()),
                ("GEMINI_BASE_URL", format!("http://{mock}")),
                ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
                ("ADMIN_PASSWORD", PASSWORD.to_owned()),
                ("DEFAULT_RPM_LIMIT", "1000000".to_owned()),
                ("DEFAULT_RPD_LIMIT", "100000000".to_owned()),
            ],
        )
        .await;
        Self {
            _child: child,
            _dir: dir,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// An OpenAI chat completion; its status, `Retry-After` and body.
    async fn chat(&self, stream: bool) -> (u16, Option<u64>, String) {
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        Self::parts(response).await
    }

    /// A native generateContent (or its stream); its status, `Retry-After` and body.
    async fn native(&self, stream: bool) -> (u16, Option<u64>, String) {
        let action = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let response = self
            .http
            .post(format!("{}/v1beta/models/{MODEL}:{action}", self.base))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .unwrap();
        Self::parts(response).await
    }

    async fn parts(response: reqwest::Response) -> (u16, Option<u64>, String) {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        (status, retry_after, response.text().await.unwrap())
    }

    async fn admin(&self, path: &str) -> Value {
        let login: Value = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(login["token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    async fn alive(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }
}

fn three_projects() -> (MockConfig, &'static str) {
    (
        MockConfig {
            keys: vec![
                MockKey::new("AIzaStorm-key-a", "proj-a"),
                MockKey::new("AIzaStorm-key-b", "proj-b"),
                MockKey::new("AIzaStorm-key-c", "proj-c"),
            ],
            ..MockConfig::default()
        },
        "AIzaStorm-key-a@proj-a,AIzaStorm-key-b@proj-b,AIzaStorm-key-c@proj-c",
    )
}

/// Generate calls the mock answered with `status`.
fn upstream_answers(mock: &MockGemini, status: u16) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.path.contains("enerateContent") && r.status == status)
        .count()
}

/// A storm of `outage` on every key for `storm`, under a steady load of eight clients; then
/// the upstream recovers. Returns what the clients saw during the storm.
async fn storm_then_recovery(outage: Outage, status: u16) {
    let (config, keys) = three_projects();
    let (mock, addr) = MockGemini::start(config).await.unwrap();
    let gateway = std::sync::Arc::new(Gateway::start(addr, keys).await);
    assert_eq!(gateway.chat(false).await.0, 200);

    mock.set_outage(Some(outage));
    let storm_started = Instant::now();
    let storm = Duration::from_secs(3);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let gateway = std::sync::Arc::clone(&gateway);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while storm_started.elapsed() < storm {
                    let (code, retry_after, body) = if i % 2 == 0 {
                        gateway.chat(i % 4 == 0).await
                    } else {
                        gateway.native(i % 4 == 1).await
                    };
                    seen.push((code, retry_after, body));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();
    let mut during = Vec::new();
    for client in clients {
        during.extend(client.await.unwrap());
    }
    // The dashboard tells the truth while it lasts: every key cooling, for capacity.
    let keys_view = gateway.admin("/api/keys").await;
    let upstream_calls = upstream_answers(&mock, status);
    mock.set_outage(None);
    let recovered_at = Instant::now();

    // Every answer during the storm was the honest status, at once, with a Retry-After.
    assert!(during.len() >= 40, "only {} requests", during.len());
    for (code, retry_after, body) in &during {
        assert_eq!(*code, status, "{body}");
        let retry_after = retry_after.unwrap_or_else(|| panic!("no Retry-After: {body}"));
        assert!(
            (1..=15).contains(&retry_after),
            "Retry-After {retry_after} with {code}: {body}"
        );
        assert!(!body.contains("No usable upstream key"), "{body}");
    }
    assert!(
        during
            .iter()
            .any(|(_, _, body)| body.contains("cooling for capacity")),
        "the gate's own answer says what is going on"
    );
    // The pool did not multiply traffic: far fewer upstream calls than client requests.
    assert!(
        upstream_calls * 2 < during.len() && upstream_calls <= 40,
        "{upstream_calls} upstream calls for {} requests",
        during.len()
    );
    let items = keys_view["items"].as_array().unwrap();
    assert!(
        items.iter().all(|key| key["status"] == "cooling"),
        "{keys_view}"
    );
    assert!(items.iter().all(|key| {
        key["cooldowns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|cooling| cooling["reason"] == "capacity")
    }));

    // Recovery: within two seconds of the storm's end every request is served again.
    let mut first_success = None;
    while recovered_at.elapsed() < Duration::from_secs(2) {
        if gateway.chat(false).await.0 == 200 {
            first_success = Some(recovered_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_success = first_success.expect("not served within 2 s of the recovery");
    eprintln!(
        "{status} storm: first success {first_success:?} after the recovery; {upstream_calls} upstream calls for {} requests",
        during.len()
    );
    for stream in [false, true] {
        for _ in 0..5 {
            assert_eq!(gateway.chat(stream).await.0, 200);
            assert_eq!(gateway.native(stream).await.0, 200);
        }
    }
    // No key was taken out of service, or even checked.
    let keys_view = gateway.admin("/api/keys").await;
    assert!(
        keys_view["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|key| key["status"] == "active"),
        "{keys_view}"
    );
    assert!(gateway.alive().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_of_every_key_refuses_honestly_and_recovers_within_two_seconds() {
    storm_then_recovery(Outage::Capacity429, 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_of_every_key_refuses_honestly_and_recovers_within_two_seconds() {
    storm_then_recovery(Outage::Overloaded, 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answers_are_retried_on_another_key_then_a_502_in_each_dialect() {
    let (config, keys) = three_projects();
    let (mock, addr) = MockGemini::start(config).await.unwrap();
    let gateway = Gateway::start(addr, keys).await;
    let empty = json!({"candidates": [{"content": {"role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}});

    // One empty answer: retried, and the client gets the real answer.
    mock.inject(Injection::status(200, empty.clone(), 1));
    let (code, _, body) = gateway.chat(false).await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        !answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(mock.requests().len(), 2);
    // An empty first-and-last event of a stream, the same.
    mock.inject(Injection::stream(vec![empty.clone()], 1));
    let (code, _, body) = gateway.chat(true).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"content\""), "{body}");
    mock.inject(Injection::stream(vec![empty], 1));
    let (code, _, body) = gateway.native(true).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"text\""), "{body}");

    // Every answer empty: a 502 the SDKs retry on their own, in each dialect.
    mock.set_outage(Some(Outage::EmptyAnswers));
    for stream in [false, true] {
        let (code, _, body) = gateway.chat(stream).await;
        assert_eq!(code, 502, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "upstream_empty_response", "{body}");
        let (code, _, body) = gateway.native(stream).await;
        assert_eq!(code, 502, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["status"], "UNAVAILABLE", "{body}");
    }
    mock.set_outage(None);

    // The request log and the keys keep what happened.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = gateway.admin("/api/logs?per_page=50").await;
    let rows = logs["items"].as_array().unwrap();
    let retried = rows
        .iter()
        .filter(|row| row["status"] == 200 && row["upstream_error"] == "empty_answer")
        .count();
    assert_eq!(retried, 3, "{logs}");
    assert!(
        rows.iter()
            .filter(|row| row["status"] == 502)
            .all(
                |row| row["upstream_error"] == "empty_answer" && row["attempts"].as_u64() > Some(1)
            )
    );
    let keys_view = gateway.admin("/api/keys").await;
    assert!(keys_view["items"].as_array().unwrap().iter().any(|key| {
        key["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("empty answer"))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_retry_info_neither_panics_nor_cools_beyond_the_clamp() {
    for delay in ["1e20s", "-5s", "99999999999s"] {
        let (mock, addr) = MockGemini::start(MockConfig {
            keys: vec![MockKey::new("AIzaHostile-key-a", "proj-a")],
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let gateway = Gateway::start(addr, "AIzaHostile-key-a@proj-a").await;
        mock.set_outage(Some(Outage::QuotaRetryInfo(delay.to_owned())));
        // JSON, then a stream: a quota 429 with a usable Retry-After, never a 500 or a cut.
        let (code, retry_after, body) = gateway.chat(false).await;
        assert_eq!(code, 429, "{delay}: {body}");
        assert!(
            retry_after.is_some_and(|s| (1..=3600).contains(&s)),
            "{delay}: {retry_after:?}"
        );
        let (code, retry_after, body) = gateway.chat(true).await;
        assert_eq!(code, 429, "{delay}: {body}");
        assert!(
            retry_after.is_some_and(|s| (1..=3600).contains(&s)),
            "{delay}: {retry_after:?}"
        );
        let (code, _, body) = gateway.native(true).await;
        assert_eq!(code, 429, "{delay}: {body}");
        assert!(gateway.alive().await, "{delay}: the process died");
        // The cooldown is at most the hour's clamp (a negative delay: until the next minute).
        let keys_view = gateway.admin("/api/keys").await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let until = keys_view["items"][0]["cooldown_until"].as_u64().unwrap();
        let bound_ms = if delay.starts_with('-') {
            61_000
        } else {
            3_601_000
        };
        assert!(
            until > now_ms && until - now_ms <= bound_ms,
            "{delay}: {keys_view}"
        );
        assert_eq!(keys_view["items"][0]["cooldowns"][0]["reason"], "quota");
    }
}
