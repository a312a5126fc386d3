//! Crash safety of the accounting, on the real binary: a SIGTERM during load loses no request
//! row; a `kill -9` loses at most the rows of the last write-behind interval (one second) and
//! the requests in flight, and the gateway starts again on the same database.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mock_gemini::{MockConfig, MockGemini, MockKey};
use serde_json::json;
use tokio::process::Child;

mod common;

const CLIENT_KEY: &str = "crash-client-key-0001";
/// The accounting writer's interval (`accounting::FLUSH_INTERVAL`).
const FLUSH: Duration = Duration::from_secs(1);

async fn start(dir: &std::path::Path, mock: std::net::SocketAddr) -> (Child, String) {
    common::spawn_binary(
        dir,
        &[
            ("GEMINI_API_KEYS", "AIzaCrash-key-0@proj".to_owned()),
            ("GEMINI_BASE_URL", format!("http://{mock}")),
            ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
            ("DEFAULT_RPM_LIMIT", "1000000".to_owned()),
            ("DEFAULT_RPD_LIMIT", "100000000".to_owned()),
        ],
    )
    .await
}

/// Sends requests from 8 clients until `stop`; returns when each answered request finished.
async fn load(base: String, stop: Arc<AtomicBool>) -> Vec<Instant> {
    let http = reqwest::Client::new();
    let clients = (0..8).map(|_| {
        let (http, base, stop) = (http.clone(), base.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(CLIENT_KEY)
                    .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 200 => {
                        if response.bytes().await.is_ok() {
                            answered.push(Instant::now());
                        }
                    }
                    Ok(response) => panic!("unexpected {}", response.status()),
                    // The process is gone or going: stop asking.
                    Err(_) => break,
                }
            }
            answered
        })
    });
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }
    all
}

/// Request rows in the database, read by a fresh gateway on it.
async fn logged_rows(dir: &std::path::Path) -> i64 {
    let url = format!("sqlite://{}/data/gemini-pool.db?mode=rwc", dir.display());
    store::Storage::open(&url)
        .await
        .unwrap()
        .request_log_count()
        .await
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_nothing_and_kill_9_loses_at_most_the_last_second() {
    let (_mock, mock_addr) = MockGemini::start(MockConfig {
        keys: vec![MockKey::new("AIzaCrash-key-0", "proj")],
        record_requests: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();

    // SIGTERM in the middle of the load: in-flight requests finish, every row is written.
    let dir = tempfile::tempdir().unwrap();
    let (mut gateway, base) = start(dir.path(), mock_addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(base, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&gateway, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), gateway.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    stop.store(true, Ordering::Relaxed);
    let answered = running.await.unwrap().len();
    assert!(answered > 50, "too little load: {answered}");
    assert_eq!(
        logged_rows(dir.path()).await,
        i64::try_from(answered).unwrap(),
        "a SIGTERM lost request rows"
    );

    // kill -9 in the middle of the load: what is lost is bounded by the flush interval.
    let dir = tempfile::tempdir().unwrap();
    let (mut gateway, base) = start(dir.path(), mock_addr).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(base, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed_at = Instant::now();
    signal(&gateway, "KILL");
    gateway.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let answered = running.await.unwrap();
    let logged = logged_rows(dir.path()).await;
    let total = i64::try_from(answered.len()).unwrap();
    // Rows answered in the last interval (plus a margin for the write itself) may be lost.
    let recent = answered
        .iter()
        .filter(|at| killed_at.duration_since(**at) <= FLUSH + Duration::from_millis(500))
        .count();
    let lost = total - logged;
    eprintln!(
        "kill -9: {total} answered, {logged} logged, {lost} lost, {recent} in the last interval"
    );
    assert!(logged > 0, "nothing was written before the kill");
    assert!(
        lost <= i64::try_from(recent).unwrap(),
        "lost {lost} rows, more than the {recent} answered in the last interval"
    );

    // It starts again on the same database and serves.
    let (_gateway, base) = start(dir.path(), mock_addr).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "again"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
