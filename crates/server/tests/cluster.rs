//! Two `gemini-pool` processes on one PostgreSQL database, in front of one mock: together they
//! stay within each project's quota, they hear each other's cooldowns and management changes,
//! and their dashboards show the same usage.
//!
//! Needs a PostgreSQL server: `GEMINI_POOL_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); `./scripts/test.sh` starts one if needed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use futures_util::future::join_all;
use mock_gemini::{MockConfig, MockGemini, MockKey};
use serde_json::{Value, json};
use tokio::process::Child;

mod common;

const CLIENT_KEY: &str = "cluster-client-key-0001";
const PASSWORD: &str = "cluster-admin-password";

async fn scratch_database() -> String {
    let server = std::env::var("GEMINI_POOL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    store::testing::create_scratch_postgres(&server)
        .await
        .expect("PostgreSQL must run for this test (./scripts/test.sh starts it)")
}

struct Gateway {
    _child: Child,
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(database: &str, mock: std::net::SocketAddr, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = vec![
            ("DATABASE_URL", database.to_owned()),
            (
                "GEMINI_API_KEYS",
                "AIzaCluster-key-a@proj-a,AIzaCluster-key-b@proj-b".to_owned(),
            ),
            ("GEMINI_BASE_URL", format!("http://{mock}")),
            ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
        ];
        vars.extend(env.iter().map(|(name, value)| (*name, (*value).to_owned())));
        let (child, base) = common::spawn_binary(dir.path(), &vars).await;
        Self {
            _child: child,
            _dir: dir,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn generate(&self) -> u16 {
        self.http
            .post(format!(
                "{}/v1beta/models/gemini-2.5-flash:generateContent",
                self.base
            ))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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
        let token = login["token"].as_str().unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }
}

fn mock_config(rpm: u32) -> MockConfig {
    MockConfig {
        keys: vec![
            MockKey::new("AIzaCluster-key-a", "proj-a"),
            MockKey::new("AIzaCluster-key-b", "proj-b"),
        ],
        rpm_limit: Some(rpm),
        ..MockConfig::default()
    }
}

/// Polls `condition` for up to 5 s.
async fn within_seconds(mut condition: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..50 {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_each_projects_quota_and_show_the_same_usage() {
    const RPM: u32 = 12;
    let (mock, mock_addr) = MockGemini::start(mock_config(RPM)).await.unwrap();
    let database = scratch_database().await;
    let limits = [("DEFAULT_RPM_LIMIT", "12"), ("DEFAULT_RPD_LIMIT", "1000")];
    let (a, b) = tokio::join!(
        Gateway::start(&database, mock_addr, &limits),
        Gateway::start(&database, mock_addr, &limits)
    );

    // 80 requests at once, half through each instance, against 2 projects × 12 per minute.
    let statuses: Vec<u16> = join_all((0..80).map(|i| {
        let gateway = if i % 2 == 0 { &a } else { &b };
        gateway.generate()
    }))
    .await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "served {served}, refused {refused} of 80 (limit {} in all)",
        2 * RPM
    );
    assert_eq!(served + refused, 80, "{statuses:?}");
    assert!(
        served <= 2 * RPM as usize,
        "the instances together sent more than the limit: {served}"
    );
    assert!(
        served + 2 >= 2 * RPM as usize,
        "quota left unused: {served} served"
    );
    let upstream = mock.requests();
    assert!(
        upstream.iter().all(|r| r.status != 429),
        "the upstream had to refuse a request"
    );
    for key in ["AIzaCluster-key-a", "AIzaCluster-key-b"] {
        assert!(
            mock.served_by(key) <= u64::from(RPM),
            "{key} over its limit"
        );
    }

    // Each instance writes its own rows; both dashboards read the same totals.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let stats_a = a
        .admin(reqwest::Method::GET, "/api/stats?days=1", None)
        .await;
    let stats_b = b
        .admin(reqwest::Method::GET, "/api/stats?days=1", None)
        .await;
    assert_eq!(stats_a["today"]["requests"], 80, "{stats_a}");
    assert_eq!(stats_a["today"]["errors"].as_u64().unwrap(), refused as u64);
    for field in [
        "today",
        "hourly",
        "daily",
        "by_model",
        "by_client_key",
        "by_upstream_key",
    ] {
        assert_eq!(stats_a[field], stats_b[field], "{field} differs");
    }
    let logs_a = a
        .admin(reqwest::Method::GET, "/api/logs?per_page=200", None)
        .await;
    let logs_b = b
        .admin(reqwest::Method::GET, "/api/logs?per_page=200", None)
        .await;
    assert_eq!(logs_a["total"], 80);
    assert_eq!(logs_a, logs_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_and_management_changes_reach_the_other_instance_within_seconds() {
    // The upstream allows 2 a minute per project; the gateways think 100: they learn by 429.
    let (mock, mock_addr) = MockGemini::start(mock_config(2)).await.unwrap();
    let database = scratch_database().await;
    let limits = [("DEFAULT_RPM_LIMIT", "100"), ("DEFAULT_RPD_LIMIT", "1000")];
    let a = Gateway::start(&database, mock_addr, &limits).await;
    let b = Gateway::start(&database, mock_addr, &limits).await;

    // Through `a` until both projects answered 429 and cooled down there.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(a.generate().await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(*statuses.last().unwrap(), 429);
    let upstream_calls = mock.requests().len();

    // `b` hears of both cooldowns and refuses without asking the upstream.
    assert!(
        within_seconds(async || {
            let keys = b.admin(reqwest::Method::GET, "/api/keys", None).await;
            keys["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|key| key["status"] == "cooling")
        })
        .await,
        "the cooldowns did not reach the other instance"
    );
    assert_eq!(b.generate().await, 429);
    assert_eq!(mock.requests().len(), upstream_calls);

    // A key added through `a`'s dashboard serves requests on `b`.
    mock.add_key(MockKey::new("AIzaCluster-key-c", "proj-c"));
    a.admin(
        reqwest::Method::POST,
        "/api/keys",
        Some(json!({"keys": "AIzaCluster-key-c@proj-c"})),
    )
    .await;
    assert!(
        within_seconds(async || b.generate().await == 200).await,
        "the new key did not reach the other instance"
    );
    assert_eq!(mock.served_by("AIzaCluster-key-c"), 1);

    // A client key disabled on `b` stops working on `a`.
    let clients = b
        .admin(reqwest::Method::GET, "/api/client-keys", None)
        .await;
    let id = clients["items"][0]["id"].as_i64().unwrap();
    b.admin(
        reqwest::Method::PATCH,
        &format!("/api/client-keys/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert!(
        within_seconds(async || a.generate().await == 401).await,
        "the disabled client key still works on the other instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_learn_a_limit_with_at_most_one_wasted_call_per_project() {
    // The upstream allows 2 a minute per project and says so in its 429 (`quotaValue`); the
    // gateways assume 10.
    let (mock, mock_addr) = MockGemini::start(mock_config(2)).await.unwrap();
    let database = scratch_database().await;
    let limits = [("DEFAULT_RPM_LIMIT", "10"), ("DEFAULT_RPD_LIMIT", "1000")];
    let (a, b) = tokio::join!(
        Gateway::start(&database, mock_addr, &limits),
        Gateway::start(&database, mock_addr, &limits)
    );
    // Requests alternate between the instances, 100 ms apart (news travels in milliseconds).
    let mut statuses = Vec::new();
    for i in 0..14 {
        let gateway = if i % 2 == 0 { &a } else { &b };
        statuses.push(gateway.generate().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    // At most one upstream call per project met the limit: the first 429 stopped both
    // instances.
    for key in ["AIzaCluster-key-a", "AIzaCluster-key-b"] {
        let wasted = mock
            .requests()
            .iter()
            .filter(|r| r.api_key.as_deref() == Some(key) && r.status == 429)
            .count();
        assert!(wasted <= 1, "{key}: {wasted} calls met the limit");
    }
    // Both instances hold the learned limit, and the database keeps it.
    for gateway in [&a, &b] {
        let keys = gateway.admin(reqwest::Method::GET, "/api/keys", None).await;
        for key in keys["items"].as_array().unwrap() {
            let quota = key["quota"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["model"] == "gemini-2.5-flash")
                .unwrap_or_else(|| panic!("{keys}"));
            assert_eq!(quota["minute_limit"], 2, "{keys}");
            assert_eq!(quota["learned"]["rpm"], 2, "{keys}");
        }
    }
}

/// A stored response made on one instance is continued, read and deleted through the other;
/// after the deletion neither serves it (the one holding it in memory hears of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_is_shared_by_the_instances_and_deleted_on_both() {
    let database = scratch_database().await;
    let (mock, mock_addr) = MockGemini::start(mock_config(1000)).await.unwrap();
    let first = Gateway::start(&database, mock_addr, &[]).await;
    let second = Gateway::start(&database, mock_addr, &[]).await;
    let post = |gateway: &Gateway, body: Value| {
        gateway
            .http
            .post(format!("{}/v1/responses", gateway.base))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
    };
    let created: Value = post(
        &first,
        json!({"model": "gemini-2.5-flash", "input": "first turn"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // The second instance finds it in the database (written in the background).
    let continued = post(
        &second,
        json!({"model": "gemini-2.5-flash", "input": "second turn", "previous_response_id": id}),
    )
    .await
    .unwrap();
    assert_eq!(continued.status(), 200);
    let continued: Value = continued.json().await.unwrap();
    assert_eq!(
        continued["output"][0]["content"][0]["text"],
        "Echo: second turn"
    );
    let body = mock.requests().last().unwrap().body.clone().unwrap();
    let history = &body["contents"];
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");

    let get = |gateway: &Gateway| {
        gateway
            .http
            .get(format!("{}/v1/responses/{id}", gateway.base))
            .bearer_auth(CLIENT_KEY)
            .send()
    };
    assert_eq!(get(&first).await.unwrap().status(), 200);
    let deleted = second
        .http
        .delete(format!("{}/v1/responses/{id}", second.base))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(get(&second).await.unwrap().status(), 404);
    // The first instance held it in memory: the news reaches it within moments.
    assert!(within_seconds(async || get(&first).await.unwrap().status() == 404).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_contents_owning_client_key_reaches_the_other_instance() {
    const OTHER_CLIENT_KEY: &str = "cluster-client-key-0002";
    let (mock, mock_addr) = MockGemini::start(mock_config(1000)).await.unwrap();
    let database = scratch_database().await;
    let clients = format!("{CLIENT_KEY},{OTHER_CLIENT_KEY}");
    let env = [
        ("CLIENT_API_KEYS", clients.as_str()),
        ("DEFAULT_RPM_LIMIT", "1000"),
    ];
    let (a, b) = tokio::join!(
        Gateway::start(&database, mock_addr, &env),
        Gateway::start(&database, mock_addr, &env)
    );
    let get = async |gateway: &Gateway, client_key: &str, path: &str| {
        let response = gateway
            .http
            .get(format!("{}{path}", gateway.base))
            .header("x-goog-api-key", client_key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or_default())
    };

    // Created through `a` by the first client key.
    let created: Value = a
        .http
        .post(format!("{}/v1beta/cachedContents", a.base))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&json!({"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "doc"}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    let id = name.strip_prefix("cachedContents/").unwrap();
    let gateway_refusal =
        format!("You do not have permission to access the CachedContent {id} or it may not exist.");

    // `b` refuses it to the other client key in the gateway's own words once the news is in
    // (the upstream words its refusal of another project differently).
    assert!(
        within_seconds(async || {
            let (status, body) = get(&b, OTHER_CLIENT_KEY, &format!("/v1beta/{name}")).await;
            status == 403 && body["error"]["message"] == gateway_refusal.as_str()
        })
        .await,
        "the owning client key did not reach the other instance"
    );
    let upstream_calls = mock.requests().len();
    for _ in 0..4 {
        let (status, _) = get(&b, CLIENT_KEY, &format!("/v1beta/{name}")).await;
        assert_eq!(status, 200, "the owner, through its project's keys");
    }
    let (status, _) = get(&b, OTHER_CLIENT_KEY, &format!("/v1beta/{name}")).await;
    assert_eq!(status, 403);
    assert_eq!(
        mock.requests().len(),
        upstream_calls + 4,
        "the refusal reached the upstream"
    );
}
