//! The SQLite database on bad days, on the real binary: the file and its folder are private to
//! the gateway's user; a damaged file stops the start at once with a clear message; a database
//! folder deleted under a running gateway makes it not ready (instead of losing writes while it
//! reports ready).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use mock_gemini::{MockConfig, MockGemini, MockKey};
use serde_json::{Value, json};

mod common;

const CLIENT_KEY: &str = "storage-client-key-0001";

fn env(mock: std::net::SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("GEMINI_API_KEYS", "AIzaStorage-key-0@proj".to_owned()),
        ("GEMINI_BASE_URL", format!("http://{mock}")),
        ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
    ]
}

async fn mock() -> std::net::SocketAddr {
    MockGemini::start(MockConfig {
        keys: vec![MockKey::new("AIzaStorage-key-0", "proj")],
        ..MockConfig::default()
    })
    .await
    .unwrap()
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_private_and_a_deleted_folder_makes_the_gateway_not_ready() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = common::spawn_binary(dir.path(), &env(mock)).await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("data")), 0o700, "the folder");
    assert_eq!(
        mode(&dir.path().join("data/gemini-pool.db")),
        0o600,
        "the file"
    );

    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        let response = http.get(format!("{base}/readyz")).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    assert_eq!(ready(http.clone(), base.clone()).await.0, 200);
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    // A request still works (accounting waits in memory), but the gateway is not ready.
    let answered = http
        .post(format!(
            "{base}/v1beta/models/gemini-2.5-flash:generateContent"
        ))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let mut last = json!(null);
    let mut not_ready = false;
    for _ in 0..40 {
        let (status, body) = ready(http.clone(), base.clone()).await;
        last = body;
        if status == 503 && last["database"] == false && last["accounting"]["writing"] == false {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_ready, "{last}");
    assert_eq!(last["accounting"]["pending"], 1, "{last}");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "still alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_file_stops_the_start_at_once_with_a_clear_message() {
    let mock = mock().await;
    for damage in [
        &b"this is not a database at all"[..],
        &b"SQLite format 3\0truncated"[..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/gemini-pool.db"), damage).unwrap();
        let started = Instant::now();
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(common::BINARY)
                .current_dir(dir.path())
                .env_clear()
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .envs(env(mock))
                .output(),
        )
        .await
        .expect("the gateway hung on a damaged database")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            stderr.contains("gemini-pool.db") && !stderr.contains("timed out"),
            "{stderr}"
        );
    }
}
