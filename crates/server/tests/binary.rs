//! The real `gemini-pool` binary: start-up errors, defaults, and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::process::Stdio;
use std::time::Duration;

use mock_gemini::{MockConfig, MockGemini, MockKey};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_gemini-pool");

fn gateway(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    gateway_behind(&[], dir, env)
}

/// The binary run by `prefix` (say `taskset -c 0`), or by itself when `prefix` is empty.
fn gateway_behind(prefix: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(BINARY);
            command
        }
        None => Command::new(BINARY),
    };
    command
        .current_dir(dir)
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits for the "listening on http://…" log line and returns the address.
async fn listening_addr(child: &mut Child) -> String {
    listening_addr_and_log(child).await.0
}

/// Waits for the "listening on http://…" log line and returns the address and the lines up to
/// it.
async fn listening_addr_and_log(child: &mut Child) -> (String, Vec<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let find = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            if let Some(at) = line.find("listening on http://") {
                return line[at + "listening on http://".len()..].trim().to_owned();
            }
        }
        panic!("the gateway exited before listening: {seen:?}");
    };
    let addr = tokio::time::timeout(Duration::from_secs(20), find)
        .await
        .unwrap();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (addr, seen)
}

/// A stand-in with one key (`k1` in project `p1`) that answers after `delay`.
async fn mock_answering_after(delay: Duration) -> (MockGemini, std::net::SocketAddr) {
    MockGemini::start(MockConfig {
        keys: vec![MockKey::new("k1", "p1")],
        response_delay: delay,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// Sends SIGTERM to `child` (with `kill`, which every Debian system has).
async fn send_sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
}

/// Waits up to 10 s for `child` to exit, and asserts it exited with success.
async fn assert_exits_cleanly(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = gateway(dir.path(), &[("JWT_SECRET", "short-secret-value")])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("JWT_SECRET: must be at least 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("short-secret-value"));
}

#[tokio::test]
async fn settings_come_from_a_dot_env_file_and_the_database_folder_is_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "# comment\nCLIENT_API_KEYS=from-dot-env-key\nGEMINI_API_KEYS=k1@p1\nGEMINI_BASE_URL=http://127.0.0.1:9\n",
    )
    .unwrap();
    let mut child = gateway(dir.path(), &[]).spawn().unwrap();
    let addr = listening_addr(&mut child).await;
    assert!(dir.path().join("data/gemini-pool.db").exists());
    let http = reqwest::Client::new();
    let ready: serde_json::Value = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["usable_keys"], 1);
    // The client key from .env is accepted (the upstream is down: 502, not 401).
    let response = http
        .get(format!("http://{addr}/v1beta/models"))
        .header("x-goog-api-key", "from-dot-env-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let (_mock, mock_addr) = mock_answering_after(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{mock_addr}");
    let mut child = gateway(
        dir.path(),
        &[
            ("GEMINI_API_KEYS", "k1@p1"),
            ("GEMINI_BASE_URL", &base),
            ("CLIENT_API_KEYS", "client-key-for-shutdown"),
        ],
    )
    .spawn()
    .unwrap();
    let addr = listening_addr(&mut child).await;
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!(
                "http://{addr}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .header("x-goog-api-key", "client-key-for-shutdown")
            .json(&serde_json::json!({"contents": [{"parts": [{"text": "slow"}]}]}))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_sigterm(&child).await;
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the in-flight request finished"
    );
    assert_exits_cleanly(&mut child).await;
}

#[tokio::test]
async fn json_logs_carry_a_request_id_on_every_request_line_and_no_secret() {
    let (_mock, mock_addr) = MockGemini::start(MockConfig {
        keys: vec![MockKey::new("AIzaSyLoggedKeyMustNotAppear0000000000", "p1")],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{mock_addr}");
    let mut child = gateway(
        dir.path(),
        &[
            (
                "GEMINI_API_KEYS",
                "AIzaSyLoggedKeyMustNotAppear0000000000@p1",
            ),
            ("GEMINI_BASE_URL", &base),
            ("CLIENT_API_KEYS", "client-key-in-the-query"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: serde_json::Value = serde_json::from_str(&line).expect("every line is JSON");
        if let Some(message) = event["message"].as_str()
            && let Some(rest) = message.strip_prefix("listening on http://")
        {
            addr = rest.to_owned();
            break;
        }
    }
    let http = reqwest::Client::new();
    // The client key in the query, as some Gemini clients send it.
    let response = http
        .get(format!(
            "http://{addr}/v1beta/models?key=client-key-in-the-query"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let refused = http
        .get(format!("http://{addr}/v1beta/models"))
        .header("x-goog-api-key", "wrong-key-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let mut request_lines = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        for secret in [
            "client-key-in-the-query",
            "AIzaSyLoggedKey",
            "wrong-key-xyz",
            "key=",
        ] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "finished processing request" {
            request_lines += 1;
            assert!(
                event["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| id.len() > 8),
                "{line}"
            );
            assert!(event["span"]["route"].as_str().is_some(), "{line}");
        }
    }
    assert_eq!(request_lines, 2);
    child.wait().await.unwrap();
}

/// Starts the binary with `prefix` in front (say `taskset -c 0`), reads its log up to the
/// "listening on" line, and returns the process, its address and the lines read.
async fn start_logged(
    prefix: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Child, String, Vec<String>) {
    let mut child = gateway_behind(prefix, dir, env)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (addr, seen) = listening_addr_and_log(&mut child).await;
    (child, addr, seen)
}

#[tokio::test]
async fn pinned_to_one_cpu_it_serves_on_one_thread_concurrently_and_shuts_down_cleanly() {
    let (_mock, mock_addr) = mock_answering_after(Duration::from_millis(300)).await;
    let base = format!("http://{mock_addr}");
    let env = [
        ("GEMINI_API_KEYS", "k1@p1"),
        ("GEMINI_BASE_URL", base.as_str()),
        ("CLIENT_API_KEYS", "client-key-one-cpu"),
        ("DEFAULT_RPM_LIMIT", "1000"),
        ("DEFAULT_RPD_LIMIT", "100000"),
    ];
    let dir = tempfile::tempdir().unwrap();
    // Pinned with `taskset` (util-linux, which every Debian system has) to the first CPU this
    // test may use (CI may run it in a cpuset that lacks CPU 0).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let first_cpu = allowed.split([',', '-']).next().unwrap().to_owned();
    let (mut child, addr, log) =
        start_logged(&["taskset", "-c", &first_cpu], dir.path(), &env).await;
    assert!(
        log.iter()
            .any(|line| line.contains("one CPU available: serving on one thread")),
        "{log:?}"
    );
    // Twelve requests at once, each held 300 ms by the upstream, in both dialects and streaming:
    // on one thread they still overlap, so all of them finish in well under twelve times 300 ms.
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let requests = (0..12).map(|n| {
        let http = http.clone();
        let addr = addr.clone();
        async move {
            let request = match n % 3 {
                0 => http
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .json(&serde_json::json!({"model": "gemini-2.5-flash",
                        "messages": [{"role": "user", "content": "hi"}]})),
                1 => http
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .json(
                        &serde_json::json!({"model": "gemini-2.5-flash", "stream": true,
                        "messages": [{"role": "user", "content": "hi"}]}),
                    ),
                _ => http
                    .post(format!(
                        "http://{addr}/v1beta/models/gemini-2.5-flash:generateContent"
                    ))
                    .json(&serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]})),
            };
            let response = request
                .bearer_auth("client-key-one-cpu")
                .header("x-goog-api-key", "client-key-one-cpu")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            (n, status, body)
        }
    });
    for (n, status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "request {n}: {body}");
        if n % 3 == 1 {
            assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
        } else {
            assert!(
                body.contains("candidates") || body.contains("choices"),
                "{body}"
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(12 * 300),
        "the requests ran one after another: {:?}",
        started.elapsed()
    );
    // A burst of 300 new connections at once: more than one accept batch, and more than the
    // accept queue holds (128), every one answered.
    let burst = (0..300).map(|n| {
        let http = reqwest::Client::new();
        let addr = addr.clone();
        async move {
            let response = http
                .post(format!(
                    "http://{addr}/v1beta/models/gemini-2.5-flash:generateContent"
                ))
                .header("x-goog-api-key", "client-key-one-cpu")
                .json(&serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]}))
                .send()
                .await;
            match response {
                Ok(response) => (n, response.status().as_u16(), response.text().await),
                Err(error) => panic!("request {n} of the burst: {error}"),
            }
        }
    });
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(burst),
    )
    .await
    .expect("the burst was not answered within 30 s");
    for (n, status, body) in answered {
        assert_eq!(status, 200, "request {n} of the burst: {body:?}");
    }
    send_sigterm(&child).await;
    assert_exits_cleanly(&mut child).await;

    // Not pinned, it runs one worker thread per CPU this test may use.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let dir = tempfile::tempdir().unwrap();
    let (_child, _addr, log) = start_logged(&[], dir.path(), &env).await;
    let expected = if cpus == 1 {
        "one CPU available: serving on one thread".to_owned()
    } else {
        format!("{cpus} CPUs available: serving on {cpus} worker threads")
    };
    assert!(log.iter().any(|line| line.contains(&expected)), "{log:?}");
}
