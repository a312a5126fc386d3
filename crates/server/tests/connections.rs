//! Client connections on the real binary: half a request, a silent connection or an idle
//! keep-alive connection is closed after the header timeout; HTTP/2 with prior knowledge is
//! served beside HTTP/1; connections past the cap get a 503 as soon as they ask, are read until
//! they close (no reset), and `/healthz` keeps answering; and on SIGTERM a stream still open at the end of the grace period ends with
//! an error event in its dialect and its request row is written.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use mock_gemini::{Fault, Injection, MockConfig, MockGemini, MockKey};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

mod common;

const CLIENT_KEY: &str = "connections-client-key-01";

async fn gateway(
    dir: &std::path::Path,
    mock: std::net::SocketAddr,
    extra: &[(&str, &str)],
) -> (Child, String) {
    let mut env = vec![
        ("GEMINI_API_KEYS", "AIzaConnections-key-0@proj".to_owned()),
        ("GEMINI_BASE_URL", format!("http://{mock}")),
        ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
        ("DEFAULT_RPM_LIMIT", "1000000".to_owned()),
        ("DEFAULT_RPD_LIMIT", "100000000".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    common::spawn_binary(dir, &env).await
}

async fn mock() -> (MockGemini, std::net::SocketAddr) {
    MockGemini::start(MockConfig {
        keys: vec![MockKey::new("AIzaConnections-key-0", "proj")],
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); returns what came and when
/// the close came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return (seen, Some(started.elapsed())),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (seen, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_and_an_idle_keep_alive_connection_are_closed_after_the_header_timeout() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(
        dir.path(),
        mock_addr,
        &[("CLIENT_HEADER_TIMEOUT_SECS", "1")],
    )
    .await;

    // Slowloris: a request line and one header, then nothing.
    let mut slow = TcpStream::connect(address(&base)).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    let closed = closed.expect("half a request kept its connection");
    assert!(closed >= Duration::from_millis(900), "{closed:?}");

    // A connection that says nothing, or only the start of HTTP/2's preface, is closed too.
    for opening in [&b""[..], b"PRI * HTTP/2"] {
        let mut silent = TcpStream::connect(address(&base)).await.unwrap();
        silent.write_all(opening).await.unwrap();
        let (answer, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
        let closed = closed.expect("a silent connection stayed open");
        assert!(closed >= Duration::from_millis(900), "{closed:?}");
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }

    // A whole request is answered; the connection, idle after it, is closed too.
    let mut idle = TcpStream::connect(address(&base)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        closed.is_some(),
        "an idle keep-alive connection stayed open"
    );
}

/// A streamed OpenAI chat completion through the gateway at `base`.
async fn streamed_chat(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Sends `first` a byte at a time, then `rest`, on a new connection; returns the answer.
async fn slowly(base: &str, first: &[u8], rest: &[u8]) -> String {
    let mut stream = TcpStream::connect(address(base)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for byte in first {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream.write_all(rest).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_2_with_prior_knowledge_and_http_1_arriving_a_byte_at_a_time_are_both_served() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(dir.path(), mock_addr, &[]).await;

    // h2c with prior knowledge (a client or proxy that speaks HTTP/2 without TLS): health and a
    // streamed chat completion.
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let health = http2.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        (health.version(), health.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    let stream = streamed_chat(&http2, &base).await;
    assert_eq!(stream.version(), reqwest::Version::HTTP_2);
    assert_eq!(stream.status().as_u16(), 200);
    let events = stream.text().await.unwrap();
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    // HTTP/1 sent a byte at a time ("G" tells it apart at once); then one whose first bytes are
    // also the preface's ("P"): the gateway waits for the byte that tells them apart.
    let answer = slowly(
        &base,
        b"GET /h",
        b"ealthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = slowly(
        &base,
        b"PO",
        b"ST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    // /healthz is GET only: a 405 is hyper and the router answering, which is what is checked.
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // HTTP/2's preface in two pieces: the gateway waits for the rest, then answers in HTTP/2
    // (its first frame is its SETTINGS, type 4).
    let mut preface = TcpStream::connect(address(&base)).await.unwrap();
    preface.set_nodelay(true).unwrap();
    preface.write_all(b"PRI * HTTP/2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    preface.write_all(b".0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    preface
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame_head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), preface.read_exact(&mut frame_head))
        .await
        .expect("no answer to HTTP/2's preface")
        .unwrap();
    assert_eq!(frame_head[3], 4, "{frame_head:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_does_not_wait_for_a_connection_that_has_sent_nothing() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = gateway(dir.path(), mock_addr, &[("SHUTDOWN_GRACE_SECS", "20")]).await;
    // Silent, and the start of HTTP/2's preface: neither has asked anything yet.
    let mut silent = TcpStream::connect(address(&base)).await.unwrap();
    let mut started = TcpStream::connect(address(&base)).await.unwrap();
    started.write_all(b"PRI * HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().unwrap();
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    assert!(
        exited.is_ok(),
        "still running 10 s after SIGTERM (header timeout 30 s, grace 20 s)"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    for stream in [&mut silent, &mut started] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(1)).await;
        assert!(closed.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_s_request_id_comes_back_and_an_overlong_one_is_replaced() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(dir.path(), mock_addr, &[]).await;
    let http = reqwest::Client::new();
    let echoed = |id: &str| {
        let request = http
            .get(format!("{base}/healthz"))
            .header("x-request-id", id);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(echoed("trace-42").await, "trace-42");
    let overlong = "x".repeat(129);
    let replaced = echoed(&overlong).await;
    assert!(
        !replaced.is_empty() && replaced != overlong && replaced.len() < 40,
        "{replaced}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_ends_before_its_declared_length_is_a_400_in_the_route_s_dialect() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(dir.path(), mock_addr, &[]).await;
    for (path, auth, shape) in [
        (
            "/v1/chat/completions",
            format!("authorization: Bearer {CLIENT_KEY}"),
            "\"type\":\"invalid_request_error\"",
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            format!("x-goog-api-key: {CLIENT_KEY}"),
            "\"status\":\"INVALID_ARGUMENT\"",
        ),
    ] {
        let mut stream = TcpStream::connect(address(&base)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{auth}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The rest never comes: the client closes its side.
        stream.shutdown().await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains(shape), "{path}: {answer}");
        assert!(
            answer.contains("ended before its declared length"),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_a_503_at_once_and_health_answers_again_after() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(dir.path(), mock_addr, &[("MAX_CONNECTIONS", "20")]).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address(&base)).await.unwrap();
        // Half a request: the connection is taken and stays so (30 s header timeout).
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(address(&base)).await.unwrap();
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut refused, Duration::from_secs(3)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(closed.is_some());
    // Room again once connections close: /healthz answers at once.
    held.clear();
    let http = reqwest::Client::new();
    let mut healthy = false;
    // The gateway may not have seen every close yet when the first try comes: such a try is
    // refused (and counted) like the one above.
    let mut refused_while_closing = 0;
    for _ in 0..50 {
        match http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(response) if response.status() == 200 => {
                healthy = true;
                break;
            }
            Ok(response) if response.status() == 503 => refused_while_closing += 1,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused_total = 1 + refused_while_closing;
    assert!(
        metrics.contains(&format!(
            "gateway_connections_refused_total {refused_total}\n"
        )),
        "{metrics}"
    );
}

/// A refused connection hears its 503 only after it has asked, and the gateway keeps reading
/// until the client closes: bytes the client is still sending never meet a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_answered_after_its_request_and_never_reset_while_it_writes() {
    let (_mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = gateway(dir.path(), mock_addr, &[("MAX_CONNECTIONS", "1")]).await;
    let mut held = TcpStream::connect(address(&base)).await.unwrap();
    held.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut refused = TcpStream::connect(address(&base)).await.unwrap();
    let mut buffer = [0u8; 4096];
    // Nothing asked, nothing answered.
    let early = tokio::time::timeout(Duration::from_millis(200), refused.read(&mut buffer)).await;
    assert!(early.is_err(), "answered before the request: {early:?}");

    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    loop {
        let read = tokio::time::timeout(Duration::from_secs(3), refused.read(&mut buffer))
            .await
            .expect("the answer and the gateway's end of the connection")
            .expect("no reset while reading the answer");
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    // The client writes on after the answer (a pipelined request): the gateway reads and throws
    // it away until the client closes. A socket closed with those bytes unread would answer them
    // with a reset, and the second write would fail.
    for _ in 0..2 {
        refused
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("the refused connection is still read");
        // Well within the gateway's one second for a refusal, from its accept to its close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_stream_still_open_after_the_grace_period_ends_with_an_error_event() {
    let (mock, mock_addr) = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = gateway(dir.path(), mock_addr, &[("SHUTDOWN_GRACE_SECS", "1")]).await;
    // Two streams whose upstream goes silent after its first event: one native, one OpenAI.
    mock.inject(Injection::fault(Fault::HangMidStream, 2));
    let http = reqwest::Client::new();
    let native = http
        .post(format!(
            "{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        ))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    let openai = streamed_chat(&http, &base).await;
    assert_eq!(
        (native.status().as_u16(), openai.status().as_u16()),
        (200, 200)
    );
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let (native, openai) = tokio::join!(native.text(), openai.text());
    let (native, openai) = (native.unwrap(), openai.unwrap());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        native.contains("\"UNAVAILABLE\"") && native.contains("shutting down"),
        "{native}"
    );
    assert!(openai.contains("gateway_shutting_down"), "{openai}");
    let mut child = child;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Both rows were written before the process exited.
    let database = dir.path().join("data/gemini-pool.db");
    let storage = store::Storage::open(&format!("sqlite://{}?mode=rw", database.display()))
        .await
        .unwrap();
    let (logs, _) = storage
        .request_logs(&store::LogFilter::default())
        .await
        .unwrap();
    assert_eq!(
        logs.iter().filter(|row| row.streamed).count(),
        2,
        "{logs:?}"
    );
}
