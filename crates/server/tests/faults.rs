//! The real `gemini-pool` binary against a misbehaving upstream: hangs before headers and in
//! the middle of a stream, reset connections, malformed JSON, truncated SSE, a slow drip, and
//! storms of 429s and 5xx. Every client request ends within the configured timeout with a
//! success or a well-formed error in its dialect; one fault with a healthy second key ends in
//! the answer failover gives (or, past a stream's commit point, the first key's answer cut with
//! an error event); retries stay within the retry budget; and after the storm the process is
//! back near idle (memory, open descriptors, upstream streams).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mock_gemini::{Fault, Injection, MockConfig, MockGemini, MockKey};
use serde_json::{Value, json};
use tokio::process::Child;

mod common;

const CLIENT_KEY: &str = "fault-client-key-0001";
/// `UPSTREAM_TIMEOUT_SECS` of the gateway under test.
const TIMEOUT_SECS: u64 = 1;

struct Gateway {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
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
                ("UPSTREAM_TIMEOUT_SECS", TIMEOUT_SECS.to_string()),
                ("DEFAULT_RPM_LIMIT", "1000000".to_owned()),
                ("DEFAULT_RPD_LIMIT", "100000000".to_owned()),
            ],
        )
        .await;
        Self {
            child,
            base,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }
}

/// How a client asks.
#[derive(Debug, Clone, Copy)]
enum Mode {
    OpenAi,
    OpenAiStream,
    Native,
    NativeStream,
}

const MODES: [Mode; 4] = [
    Mode::OpenAi,
    Mode::OpenAiStream,
    Mode::Native,
    Mode::NativeStream,
];

/// What the client got.
#[derive(Debug)]
struct Outcome {
    status: u16,
    body: String,
    took: Duration,
}

async fn ask(http: &reqwest::Client, base: &str, mode: Mode) -> Outcome {
    let started = Instant::now();
    let request = match mode {
        Mode::OpenAi | Mode::OpenAiStream => http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({
                "model": "gemini-2.5-flash",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": matches!(mode, Mode::OpenAiStream),
            })),
        Mode::Native => http
            .post(format!(
                "{base}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]})),
        Mode::NativeStream => http
            .post(format!(
                "{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            ))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]})),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // A body cut by the gateway is a failure of the test, not of the read: keep what came.
    let body = match response.bytes().await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<body cut: {error}>"),
    };
    Outcome {
        status,
        body,
        took: started.elapsed(),
    }
}

/// `None` when the outcome is a success or a well-formed error in the mode's dialect.
fn problem(mode: Mode, outcome: &Outcome) -> Option<String> {
    // SSE lines may end in CRLF (Gemini's) or LF (ours).
    let normalized = outcome.body.replace("\r\n", "\n");
    let outcome = &Outcome {
        status: outcome.status,
        body: normalized,
        took: outcome.took,
    };
    let json_ok = |text: &str| serde_json::from_str::<Value>(text).is_ok();
    let error_shape = |text: &str| {
        serde_json::from_str::<Value>(text).is_ok_and(|v| match mode {
            Mode::OpenAi | Mode::OpenAiStream => v["error"]["message"].is_string(),
            Mode::Native | Mode::NativeStream => {
                v["error"]["code"].is_u64() && v["error"]["status"].is_string()
            }
        })
    };
    let events = |body: &str| -> Vec<String> {
        body.split("\n\n")
            .filter_map(|event| {
                event
                    .lines()
                    .find_map(|line| line.strip_prefix("data: ").or(line.strip_prefix("data:")))
                    .map(|data| data.trim().to_owned())
            })
            .collect()
    };
    let ok = match (mode, outcome.status) {
        (_, status) if status >= 400 => error_shape(&outcome.body),
        (Mode::OpenAi, 200) => serde_json::from_str::<Value>(&outcome.body)
            .is_ok_and(|v| v["choices"][0]["message"]["content"].is_string()),
        (Mode::Native, 200) => json_ok(&outcome.body),
        (Mode::OpenAiStream, 200) => {
            let events = events(&outcome.body);
            // Every event is whole JSON, and the stream ends with [DONE] or an error event.
            let last = events.last().cloned().unwrap_or_default();
            events.iter().filter(|e| *e != "[DONE]").all(|e| json_ok(e))
                && (last == "[DONE]" || error_shape(&last))
                && outcome.body.ends_with("\n\n")
        }
        (Mode::NativeStream, 200) => {
            let events = events(&outcome.body);
            let last = events.last().cloned().unwrap_or_default();
            events.iter().all(|e| json_ok(e))
                && outcome.body.ends_with("\n\n")
                && (last.contains("finishReason") || error_shape(&last))
        }
        _ => false,
    };
    (!ok).then(|| {
        format!(
            "{mode:?}: {} {}",
            outcome.status,
            outcome.body.chars().take(300).collect::<String>()
        )
    })
}

/// Waits (up to 30 s) until `/metrics` shows no project cooling for any model.
async fn wait_until_every_project_serves(http: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let cooling = metrics.lines().any(|line| {
            line.starts_with("gateway_model_projects{")
                && line.contains("state=\"cooling_")
                && line.split_whitespace().last() != Some("0")
        });
        if !cooling {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a project is still cooling after 30 s");
}

/// What a client asking "hi" gets when one upstream answer has `fault` and the other key is
/// healthy.
struct Expected {
    /// The answer's text, put together from every event of a stream.
    text: &'static str,
    /// The stream broke after its first event reached the client (the commit point), so it
    /// ends with an error event instead of moving to the other key.
    cut_after_commit: bool,
}

fn single_fault_answer(fault: Fault, mode: Mode) -> Expected {
    let streamed = matches!(mode, Mode::OpenAiStream | Mode::NativeStream);
    // The mock's own answer to "hi", which the healthy key gives.
    let failover = Expected {
        text: "Echo: hi",
        cut_after_commit: false,
    };
    match fault {
        // Broken or stalled after the mock's first event ("Hello"): a stream has relayed it.
        Fault::HangMidStream | Fault::TruncatedSse if streamed => Expected {
            text: "Hello",
            cut_after_commit: true,
        },
        // A slow but whole stream ("Hello there") is a success of the first key.
        Fault::SlowDrip if streamed => Expected {
            text: "Hello there",
            cut_after_commit: false,
        },
        // Everything else fails before the commit point: hangs, resets and cut bodies, and for
        // one-JSON requests any answer that is not whole JSON (an event stream included).
        _ => failover,
    }
}

/// The data of every event of an SSE body.
fn sse_events(body: &str) -> Vec<Value> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|line| line.strip_prefix("data:"))
                .and_then(|data| serde_json::from_str(data.trim()).ok())
        })
        .collect()
}

/// The answer's text: every text part (or content delta) of the body, in order.
fn answer_text(mode: Mode, body: &str) -> String {
    let native_text = |answer: &Value| -> String {
        answer["candidates"][0]["content"]["parts"]
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|part| part["text"].as_str())
                    .collect()
            })
            .unwrap_or_default()
    };
    match mode {
        Mode::OpenAi => serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
        Mode::Native => serde_json::from_str::<Value>(body)
            .map(|v| native_text(&v))
            .unwrap_or_default(),
        Mode::OpenAiStream => sse_events(body)
            .iter()
            .filter_map(|event| event["choices"][0]["delta"]["content"].as_str())
            .collect(),
        Mode::NativeStream => sse_events(body).iter().map(native_text).collect(),
    }
}

/// Whether a stream's last event is an error.
fn ends_with_error_event(mode: Mode, body: &str) -> bool {
    match mode {
        Mode::OpenAiStream | Mode::NativeStream => sse_events(body)
            .last()
            .is_some_and(|event| event.get("error").is_some()),
        Mode::OpenAi | Mode::Native => false,
    }
}

fn keys(n: usize) -> (Vec<MockKey>, String) {
    let keys: Vec<MockKey> = (0..n)
        .map(|i| MockKey::new(format!("AIzaFault-key-{i:02}"), format!("proj-{i:02}")))
        .collect();
    let list = keys
        .iter()
        .map(|k| format!("{}@{}", k.key, k.project))
        .collect::<Vec<_>>()
        .join(",");
    (keys, list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_ends_well_whatever_the_upstream_does_and_nothing_leaks() {
    let (mock_keys, list) = keys(2);
    let (mock, mock_addr) = MockGemini::start(MockConfig {
        keys: mock_keys,
        record_requests: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gateway = Gateway::start(mock_addr, &list).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Warm up with as many requests at once as the storm below sends, so that the idle figures
    // include the kept-alive connections (client to gateway, gateway to upstream) such a burst
    // leaves; then anything more after the storm was left behind by the faults.
    let warm = join_all((0..240).map(|i| {
        let (http, base) = (&http, &gateway.base);
        async move {
            let mode = MODES[i % 4];
            (mode, ask(http, base, mode).await)
        }
    }))
    .await;
    for (mode, outcome) in &warm {
        assert_eq!(problem(*mode, outcome), None, "a normal answer");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, idle_fds, idle_threads) = (
        gateway.rss_kib(),
        gateway.open_descriptors(),
        gateway.threads(),
    );

    // Each fault, once per mode, on whichever key is picked first.
    let faults = [
        Fault::HangBeforeHeaders,
        Fault::HangMidStream,
        Fault::Reset,
        Fault::MalformedJson,
        Fault::TruncatedSse,
        Fault::SlowDrip,
    ];
    // A hang costs one timeout per key tried; a stream idle for the timeout ends with an error.
    let deadline = Duration::from_secs(TIMEOUT_SECS * 3 + 5);
    let mut problems = Vec::new();
    for fault in faults {
        for mode in MODES {
            // A fault cools its project for a moment: the next case starts once both are back,
            // so that there is a healthy second key to fail over to.
            wait_until_every_project_serves(&http, &gateway.base).await;
            mock.inject(Injection::fault(fault, 1));
            let outcome = ask(&http, &gateway.base, mode).await;
            if let Some(problem) = problem(mode, &outcome) {
                problems.push(format!("{fault:?} {problem}"));
            }
            // One fault and a healthy second key: a well-formed error is not enough, the
            // answer is the one failover (or, past the commit point, the first key) gives.
            let expected = single_fault_answer(fault, mode);
            let text = answer_text(mode, &outcome.body);
            if outcome.status != 200 || text != expected.text {
                problems.push(format!(
                    "{fault:?} {mode:?}: expected 200 {:?}, got {} {text:?}: {}",
                    expected.text,
                    outcome.status,
                    outcome.body.chars().take(300).collect::<String>()
                ));
            }
            if ends_with_error_event(mode, &outcome.body) != expected.cut_after_commit {
                problems.push(format!(
                    "{fault:?} {mode:?}: an error event at the end is expected: {}",
                    expected.cut_after_commit
                ));
            }
            if outcome.took > deadline {
                problems.push(format!("{fault:?} {mode:?}: took {:?}", outcome.took));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The same faults, all at once, 20 of each, mixed with normal requests.
    for fault in faults {
        mock.inject(Injection::fault(fault, 20));
    }
    let outcomes = join_all((0..240).map(|i| {
        let (http, base) = (&http, &gateway.base);
        async move {
            let mode = MODES[i % 4];
            (mode, ask(http, base, mode).await)
        }
    }))
    .await;
    let bad: Vec<String> = outcomes
        .iter()
        .filter_map(|(mode, outcome)| problem(*mode, outcome))
        .collect();
    assert!(
        bad.is_empty(),
        "{} bad outcomes:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| o.took <= deadline + Duration::from_secs(5))
    );

    // Back near idle: every upstream stream ended, descriptors and threads as before, memory
    // within a few MiB of the idle figure.
    tokio::time::sleep(Duration::from_secs(TIMEOUT_SECS + 1)).await;
    let streams = mock.streams();
    assert_eq!(
        streams.started(),
        streams.completed() + streams.cancelled(),
        "an upstream stream was left open"
    );
    let (rss, fds, threads) = (
        gateway.rss_kib(),
        gateway.open_descriptors(),
        gateway.threads(),
    );
    eprintln!(
        "idle: {idle_rss} KiB, {idle_fds} fds, {idle_threads} threads; after: {rss} KiB, {fds} fds, {threads} threads"
    );
    assert!(
        fds <= idle_fds + 8,
        "descriptors leaked: {idle_fds} → {fds}"
    );
    assert!(
        threads <= idle_threads + 2,
        "threads leaked: {idle_threads} → {threads}"
    );
    assert!(
        rss <= idle_rss + 24 * 1024,
        "memory not back near idle: {idle_rss} → {rss} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_429_and_5xx_stay_within_the_retry_budget() {
    let http = reqwest::Client::new();
    let quota = json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}});
    let overloaded = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});

    for (name, body, status) in [("429", quota, 429), ("503", overloaded, 503)] {
        // A fresh pool per storm: what one storm taught must not answer for the next.
        let (mock_keys, list) = keys(20);
        let (mock, mock_addr) = MockGemini::start(MockConfig {
            keys: mock_keys,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let gateway = Gateway::start(mock_addr, &list).await;
        let before = mock.requests().len();
        mock.inject(Injection::status(status, body, 100_000));
        let requests = 300;
        let started = Instant::now();
        let outcomes = join_all((0..requests).map(|i| {
            let (http, base) = (&http, &gateway.base);
            async move {
                let mode = MODES[i % 4];
                (mode, ask(http, base, mode).await)
            }
        }))
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let bad: Vec<String> = outcomes
            .iter()
            .filter_map(|(mode, outcome)| problem(*mode, outcome))
            .collect();
        assert!(bad.is_empty(), "{name}: {}", bad.join("\n"));
        assert!(
            outcomes.iter().all(|(_, o)| o.status == status),
            "{name}: every request ends with the upstream's verdict"
        );
        // The budget: a fifth of a retry per request, ten a second, a hundred saved up.
        let upstream = mock.requests().len() - before;
        let bound = requests + requests / 5 + 100 + (10.0 * seconds.ceil()) as usize;
        eprintln!("{name} storm: {requests} requests, {upstream} upstream calls (bound {bound})");
        assert!(
            upstream <= bound,
            "{name}: {upstream} upstream calls for {requests} requests"
        );
    }
}

/// One event of 80 MiB without a line break, after a normal first event: both stream routes
/// end it with an error event once it passes the 64 MiB limit (the framing is linear, so that
/// takes seconds, not minutes), memory stays bounded, and `/healthz` answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_upstream_event_ends_the_stream_with_an_error_event_and_health_stays_up() {
    let (mock_keys, list) = keys(1);
    let (mock, mock_addr) = MockGemini::start(MockConfig {
        keys: mock_keys,
        record_requests: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let gateway = Gateway::start(mock_addr, &list).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for mode in [Mode::NativeStream, Mode::OpenAiStream] {
        mock.inject(Injection::fault(Fault::HugeEvent, 1));
        let health_base = gateway.base.clone();
        let health = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..20 {
                let started = Instant::now();
                let answered = client
                    .get(format!("{health_base}/healthz"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                assert!(answered, "/healthz did not answer");
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            slowest
        });
        let outcome = ask(&http, &gateway.base, mode).await;
        assert_eq!(outcome.status, 200);
        assert_eq!(problem(mode, &outcome), None);
        assert!(
            outcome.body.contains("larger than 64 MiB"),
            "{mode:?}: {}",
            outcome.body.chars().rev().take(300).collect::<String>()
        );
        let slowest = health.await.unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "{mode:?}: /healthz took {slowest:?}"
        );
        // The stream's buffers are gone once it ended.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            gateway.rss_kib() < 400 * 1024,
            "{mode:?}: {} KiB",
            gateway.rss_kib()
        );
    }
}
