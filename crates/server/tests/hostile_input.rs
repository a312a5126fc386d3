//! A corpus of malformed and hostile requests, sent as raw bytes: each gets the right 4xx in the
//! dialect of its route, none reaches the upstream, none breaks the process, and the database
//! keeps its tables and rows whatever SQL-looking text reaches the management API.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::{CLIENT_KEY, Harness, Setup};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "hostile-admin-password";
const JWT_SECRET: &str = "hostile-input-test-jwt-secret-0123456789abcdef";

/// Which error shape the answer must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"error": {"message", "type", …}}`
    OpenAi,
    /// `{"error": {"code": <number>, "message", "status"}}`
    Gemini,
    /// `{"error": {"code": "<text>", "message"}}`
    Admin,
    /// Refused by the HTTP layer before any route: only the status is checked.
    Http,
}

struct Case {
    name: String,
    method: &'static str,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    status: &'static [u16],
    shape: Shape,
}

fn case(name: &str, method: &'static str, target: &str) -> Case {
    Case {
        name: name.to_owned(),
        method,
        target: target.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
        status: &[400],
        shape: Shape::OpenAi,
    }
}

impl Case {
    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
    fn expect(mut self, status: &'static [u16], shape: Shape) -> Self {
        self.status = status;
        self.shape = shape;
        self
    }
    fn openai(self) -> Self {
        self.header("authorization", format!("Bearer {CLIENT_KEY}"))
    }
    fn gemini(self) -> Self {
        let shape = self.shape;
        let status = self.status;
        self.header("x-goog-api-key", CLIENT_KEY).expect(
            status,
            if shape == Shape::OpenAi {
                Shape::Gemini
            } else {
                shape
            },
        )
    }
    fn admin(self, token: &str) -> Self {
        let status = self.status;
        self.header("authorization", format!("Bearer {token}"))
            .expect(status, Shape::Admin)
    }
}

/// Sends raw bytes; returns the status and the body.
async fn send(addr: std::net::SocketAddr, case: &Case) -> (u16, Vec<u8>) {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nhost: {addr}\r\n",
        case.method, case.target
    )
    .into_bytes();
    for (name, value) in &case.headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            case.body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(&case.body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A server may answer and close before reading a large body: that is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{}: no answer", case.name));
    let head = String::from_utf8_lossy(&response[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
    body
}

/// `None` when the body has the error shape of the case's dialect; else what is wrong.
fn shape_problem(case: &Case, body: &[u8]) -> Option<String> {
    if case.shape == Shape::Http {
        return None;
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Some(format!(
            "{}: not JSON: {}",
            case.name,
            String::from_utf8_lossy(body)
        ));
    };
    let error = &json["error"];
    let ok = match case.shape {
        Shape::OpenAi => error["message"].is_string() && error["type"].is_string(),
        Shape::Gemini => {
            error["code"].is_u64() && error["message"].is_string() && error["status"].is_string()
        }
        Shape::Admin => error["code"].is_string() && error["message"].is_string(),
        Shape::Http => true,
    };
    (!ok).then(|| {
        format!(
            "{}: not the {:?} error shape: {json}",
            case.name, case.shape
        )
    })
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

fn chat_with_message(message: Value) -> Value {
    json!({"model": "gemini-2.5-flash", "messages": [message]})
}

fn openai_cases() -> Vec<Case> {
    let post = |name: &str| case(name, "POST", "/v1/chat/completions").openai();
    let mut cases = vec![
        post("empty body"),
        post("broken JSON").body("{\"model\": "),
        post("a JSON array").body("[]"),
        post("JSON null").body("null"),
        post("a JSON string").body("\"hello\""),
        post("an empty object").json(&json!({})),
        post("no model").json(&json!({"messages": [{"role": "user", "content": "hi"}]})),
        post("no messages").json(&json!({"model": "gemini-2.5-flash"})),
        post("messages is a string").json(&chat(json!({"messages": "hi"}))),
        post("messages is empty").json(&chat(json!({"messages": []}))),
        post("a message is a number").json(&chat(json!({"messages": [1]}))),
        post("unknown role").json(&chat_with_message(json!({"role": "wizard", "content": "hi"}))),
        post("no role").json(&chat_with_message(json!({"content": "hi"}))),
        post("content is a number").json(&chat_with_message(json!({"role": "user", "content": 42}))),
        post("unknown content part").json(&chat_with_message(
            json!({"role": "user", "content": [{"type": "hologram", "hologram": "x"}]}),
        )),
        post("image part without url").json(&chat_with_message(
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
        )),
        post("image data URL with bad base64").json(&chat_with_message(json!({"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!not-base64!!!"}}]}))),
        post("image URL that is not a URL").json(&chat_with_message(json!({"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "not a url at all"}}]}))),
        post("temperature is a string").json(&chat(json!({"temperature": "hot"}))),
        post("temperature out of range").json(&chat(json!({"temperature": 5}))),
        post("top_p out of range").json(&chat(json!({"top_p": 2}))),
        post("n is zero").json(&chat(json!({"n": 0}))),
        post("max_tokens negative").json(&chat(json!({"max_tokens": -5}))),
        post("max_tokens a float").json(&chat(json!({"max_tokens": 1.5}))),
        post("stream is a string").json(&chat(json!({"stream": "yes"}))),
        post("tools is an object").json(&chat(json!({"tools": {"type": "function"}}))),
        post("tool without a name").json(&chat(
            json!({"tools": [{"type": "function", "function": {"parameters": {}}}]}),
        )),
        post("tool_choice unknown").json(&chat(json!({"tool_choice": "sometimes"}))),
        post("response_format unknown type").json(&chat(json!({"response_format": {"type": "yaml"}}))),
        post("json_schema without its object").json(&chat(
            json!({"response_format": {"type": "json_schema"}}),
        )),
        post("stop is a number").json(&chat(json!({"stop": 7}))),
        post("seed is a string").json(&chat(json!({"seed": "abc"}))),
        post("frequency_penalty out of range").json(&chat(json!({"frequency_penalty": 10}))),
        post("top_logprobs too many").json(&chat(json!({"logprobs": true, "top_logprobs": 100}))),
        post("tool message without tool_call_id").json(&chat_with_message(
            json!({"role": "tool", "content": "result"}),
        )),
        post("tool call arguments not a string").json(&chat_with_message(json!({"role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}))),
        post("model is empty").json(&chat(json!({"model": ""}))),
        post("model with a path").json(&chat(json!({"model": "../../v1beta/files"}))),
        post("model with a query").json(&chat(json!({"model": "gemini-2.5-flash?key=x"}))),
        post("invalid UTF-8").body(b"{\"model\": \"gemini\xff\xfe\", \"messages\": []}".to_vec()),
        post("NaN is not JSON").body("{\"model\": \"gemini-2.5-flash\", \"temperature\": NaN, \"messages\": []}"),
        post("a number out of range").body("{\"model\": \"gemini-2.5-flash\", \"temperature\": 1e999, \"messages\": []}"),
        post("nesting 10,000 deep").body(format!(
            "{{\"model\": \"gemini-2.5-flash\", \"messages\": {}}}",
            nested(10_000)
        )),
        post("trailing garbage").body(format!("{}garbage", chat(json!({})))),
        post("reasoning_effort unknown").json(&chat(json!({"reasoning_effort": "maximal"}))),
        post("audio modality unsupported").json(&chat(json!({"modalities": ["smell"]}))),
        case("embeddings without input", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "gemini-embedding-001"})),
        case("embeddings input a number", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "gemini-embedding-001", "input": 5})),
        case("embeddings input empty", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "gemini-embedding-001", "input": []})),
        case("embeddings model with a path", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "../files/x", "input": "hi"})),
        case("embeddings negative dimensions", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "gemini-embedding-001", "input": "hi", "dimensions": -1})),
        case("embeddings unknown encoding", "POST", "/v1/embeddings")
            .openai()
            .json(&json!({"model": "gemini-embedding-001", "input": "hi", "encoding_format": "hex"})),
        case("chat with GET", "GET", "/v1/chat/completions")
            .openai()
            .expect(&[404, 405], Shape::OpenAi),
        case("unknown OpenAI route", "POST", "/v1/completions/legacy")
            .openai()
            .json(&json!({}))
            .expect(&[404], Shape::OpenAi),
        // Authentication.
        case("no key", "POST", "/v1/chat/completions")
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("unknown key", "POST", "/v1/chat/completions")
            .header("authorization", "Bearer not-a-client-key")
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("empty bearer", "POST", "/v1/chat/completions")
            .header("authorization", "Bearer ")
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("basic auth", "POST", "/v1/chat/completions")
            .header("authorization", "Basic dXNlcjpwYXNz")
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("a 10 KB key", "POST", "/v1/chat/completions")
            .header("authorization", format!("Bearer {}", "k".repeat(10_000)))
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("the key with SQL in it", "POST", "/v1/chat/completions")
            .header("authorization", format!("Bearer {CLIENT_KEY}' OR '1'='1"))
            .json(&chat(json!({})))
            .expect(&[401], Shape::OpenAi),
        case("header injection in a header value", "POST", "/v1/chat/completions")
            .header("authorization", format!("Bearer {CLIENT_KEY}\rx-injected: 1"))
            .json(&chat(json!({})))
            .expect(&[400, 401], Shape::Http),
        case("a NUL in a header", "POST", "/v1/chat/completions")
            .header("x-api-key", b"abc\0def".to_vec())
            .json(&chat(json!({})))
            .expect(&[400, 401], Shape::Http),
        case("a header name with a space", "POST", "/v1/chat/completions")
            .header("x bad", "1")
            .openai()
            .json(&chat(json!({})))
            .expect(&[400], Shape::Http),
    ];
    // A body over the limit (140 MiB) is refused without being read whole.
    cases.push(
        post("a body over the size limit")
            .body(vec![b' '; 141 * 1024 * 1024])
            .expect(&[413], Shape::OpenAi),
    );
    cases
}

fn gemini_cases() -> Vec<Case> {
    let generate = |name: &str| {
        case(
            name,
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
        )
        .gemini()
    };
    vec![
        generate("broken JSON")
            .body("{\"contents\": [")
            .expect(&[400], Shape::Gemini),
        generate("a JSON array")
            .body("[]")
            .expect(&[400], Shape::Gemini),
        generate("invalid UTF-8")
            .body(b"{\"contents\": \"\xff\"}".to_vec())
            .expect(&[400], Shape::Gemini),
        generate("nesting 10,000 deep")
            .body(format!("{{\"contents\": {}}}", nested(10_000)))
            .expect(&[400], Shape::Gemini),
        generate("empty body").expect(&[400], Shape::Gemini),
        generate("a body over the size limit")
            .body(vec![b' '; 141 * 1024 * 1024])
            .expect(&[413], Shape::Gemini),
        case(
            "an empty method on a model",
            "POST",
            "/v1beta/models/gemini-2.5-flash:",
        )
        .gemini()
        .json(&json!({}))
        .expect(&[400, 404], Shape::Gemini),
        case(
            "no key",
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
        )
        .json(&json!({"contents": []}))
        .expect(&[401], Shape::Gemini),
        case(
            "unknown key in the query",
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent?key=nope",
        )
        .json(&json!({"contents": []}))
        .expect(&[401], Shape::Gemini),
        case("dot-dot in the path", "GET", "/v1beta/../api/keys")
            .gemini()
            .expect(&[400, 404], Shape::Gemini),
        case(
            "encoded dots",
            "GET",
            "/v1beta/models/%2e%2e/%2e%2e/api/keys",
        )
        .gemini()
        .expect(&[400, 404], Shape::Gemini),
        case("encoded slash", "GET", "/v1beta/models%2F..%2Fapi")
            .gemini()
            .expect(&[400, 404], Shape::Gemini),
        case(
            "double slash to another host",
            "GET",
            "/v1beta//evil.example/models",
        )
        .gemini()
        .expect(&[400, 404], Shape::Gemini),
        case(
            "an at-sign host trick",
            "GET",
            "/v1beta/@evil.example/models",
        )
        .gemini()
        .expect(&[400, 404], Shape::Gemini),
        case("a backslash", "GET", "/v1beta/models\\..\\..\\api")
            .gemini()
            .expect(&[400, 404], Shape::Http),
        case("CONNECT to another host", "CONNECT", "evil.example:443")
            .gemini()
            .expect(&[400, 404, 405], Shape::Http),
        case("invalid UTF-8 in the path", "GET", "/v1beta/models/%ff%fe")
            .gemini()
            .expect(&[400, 404], Shape::Gemini),
        case(
            "a 16 KB path",
            "GET",
            &format!("/v1beta/models/{}", "a".repeat(16_000)),
        )
        .gemini()
        .expect(&[414, 431], Shape::Http),
        case("unknown API surface", "GET", "/v1beta/projects/p/secrets")
            .gemini()
            .expect(&[404], Shape::Gemini),
        case(
            "a file name with dots",
            "GET",
            "/v1beta/files/..%2F..%2Fetc",
        )
        .gemini()
        .expect(&[400, 404], Shape::Gemini),
        case("an encoded NUL", "GET", "/v1beta/models/gemini%00x")
            .gemini()
            .expect(&[400, 404], Shape::Gemini),
        case("upload without a key", "POST", "/upload/v1beta/files")
            .header("x-goog-upload-protocol", "resumable")
            .header("x-goog-upload-command", "start")
            .json(&json!({"file": {"display_name": "x"}}))
            .expect(&[401], Shape::Gemini),
        case(
            "upload chunk of an unknown session",
            "POST",
            "/upload/v1beta/files?upload_id=forged-session",
        )
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body("data")
        .expect(&[401, 404], Shape::Gemini),
    ]
}

fn admin_cases(token: &str) -> Vec<Case> {
    let login = |name: &str| case(name, "POST", "/api/auth/login").expect(&[400], Shape::Admin);
    let expired = sign(
        &json!({"sub": "admin", "iat": now_secs() - 7200, "exp": now_secs() - 3600}),
        JWT_SECRET,
    );
    let wrong_secret = sign(
        &json!({"sub": "admin", "iat": now_secs(), "exp": now_secs() + 3600}),
        "another-secret-another-secret-another-secret",
    );
    let other_user = sign(
        &json!({"sub": "mallory", "iat": now_secs(), "exp": now_secs() + 3600}),
        JWT_SECRET,
    );
    let parts: Vec<&str> = token.split('.').collect();
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64url(
            json!({"sub": "admin", "iat": now_secs(), "exp": now_secs() + 999_999})
                .to_string()
                .as_bytes()
        ),
        parts[2]
    );
    let unauthorized = |name: &str, bearer: &str| {
        case(name, "GET", "/api/keys")
            .header("authorization", format!("Bearer {bearer}"))
            .expect(&[401], Shape::Admin)
    };
    let authed = |name: &str, method: &'static str, target: &str| {
        case(name, method, target)
            .expect(&[400], Shape::Admin)
            .admin(token)
    };
    vec![
        login("login with broken JSON").body("{\"username\":"),
        login("login without a password").json(&json!({"username": "admin"})),
        login("login with a number for a name").json(&json!({"username": 1, "password": "x"})),
        login("login with invalid UTF-8").body(b"{\"username\": \"\xff\", \"password\": \"x\"}".to_vec()),
        login("login nested 10,000 deep").body(nested(10_000)),
        case("login with SQL in the name", "POST", "/api/auth/login")
            .json(&json!({"username": "admin' OR '1'='1", "password": "x"}))
            .expect(&[401], Shape::Admin),
        case("login with SQL in the password", "POST", "/api/auth/login")
            .json(&json!({"username": "admin", "password": "' OR 1=1 --"}))
            .expect(&[401], Shape::Admin),
        case("login with a 1 MB password", "POST", "/api/auth/login")
            .json(&json!({"username": "admin", "password": "p".repeat(1_000_000)}))
            .expect(&[400, 401, 413], Shape::Http),
        unauthorized("a token that is not a JWT", "not-a-token"),
        unauthorized("an expired token", &expired),
        unauthorized("a token signed with another secret", &wrong_secret),
        unauthorized("a token for another user", &other_user),
        unauthorized("an unsigned alg=none token", &unsigned),
        unauthorized("a token with a tampered payload", &tampered),
        case("no token", "GET", "/api/stats").expect(&[401], Shape::Admin),
        case("the session cookie without the CSRF header", "POST", "/api/keys")
            .header("cookie", format!("gemini_pool_session={token}"))
            .json(&json!({"key": "AIzaSyNew-key-0000000000000000000000"}))
            .expect(&[401, 403], Shape::Admin),
        authed("a key with SQL in it", "POST", "/api/keys")
            .json(&json!({"key": "'; DROP TABLE upstream_keys; --"})),
        authed("a project with SQL in it", "POST", "/api/keys").json(
            &json!({"key": "AIzaSyValid-looking-key-00000000000000", "project": "p'); DELETE FROM upstream_keys; --"}),
        ),
        authed("keys as an array", "POST", "/api/keys").json(&json!(["a", "b"])),
        authed("keys with broken JSON", "POST", "/api/keys").body("{\"key\": "),
        authed("keys with invalid UTF-8", "POST", "/api/keys").body(b"{\"key\": \"\xff\"}".to_vec()),
        authed("keys nested 10,000 deep", "POST", "/api/keys").body(nested(10_000)),
        authed("a key id that is SQL", "PATCH", "/api/keys/1%20OR%201=1").json(&json!({"enabled": false})),
        authed("a key id that is not a number", "DELETE", "/api/keys/abc"),
        authed("enabled as a string", "PATCH", "/api/keys/1").json(&json!({"enabled": "no"})),
        authed("a client key name that is not text", "POST", "/api/client-keys").json(&json!({"name": 5})),
        authed("a client key with a negative limit", "POST", "/api/client-keys")
            .json(&json!({"name": "x", "rpm_limit": -1})),
        authed("a client key with an unknown model list", "POST", "/api/client-keys")
            .json(&json!({"name": "x", "allowed_models": "all"})),
        authed("logs with a SQL status", "GET", "/api/logs?status=500%20OR%201=1"),
        authed("logs with a negative page size", "GET", "/api/logs?per_page=-1"),
        authed("logs with an unknown parameter", "GET", "/api/logs?drop=table"),
        authed("keys with an unknown status filter", "GET", "/api/keys?status=DROP"),
        authed("stats over 100,000 days", "GET", "/api/stats?days=100000"),
        authed("settings with a wrong type", "PATCH", "/api/settings").json(&json!({"default_rpm_limit": "many"})),
        authed("settings with a zero limit", "PATCH", "/api/settings").json(&json!({"default_rpm_limit": 0})),
        authed("settings with an unknown field", "PATCH", "/api/settings").json(&json!({"root": true})),
        authed("settings that are not an object", "PATCH", "/api/settings").json(&json!([1])),
        authed("settings for a model id with a path", "PATCH", "/api/settings")
            .json(&json!({"model_limits": {"../x": {"rpm": 1}}})),
    ]
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_its_4xx_and_nothing_reaches_the_upstream() {
    let mut setup = Setup::with_keys(&[("AIzaSyHostile-key-000000000000000000", "proj")]);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    setup.env.push(("JWT_SECRET", JWT_SECRET.to_owned()));
    let gw = Harness::start(setup).await;
    let token = common::admin::login_with(&gw, PASSWORD).await;
    let keys_before = gw.state.storage.upstream_keys().await.unwrap().len();

    let cases: Vec<Case> = openai_cases()
        .into_iter()
        .chain(gemini_cases())
        .chain(admin_cases(&token))
        .collect();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    eprintln!("{} hostile requests", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, body) = send(gw.addr, case).await;
        if !case.status.contains(&status) {
            wrong.push(format!(
                "{}: {status} (expected {:?}) {}",
                case.name,
                case.status,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
            continue;
        }
        wrong.extend(shape_problem(case, &body));
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        gw.mock.requests().is_empty(),
        "bad input reached the upstream: {:?}",
        gw.mock
            .requests()
            .iter()
            .map(|r| format!(
                "{} {} {}",
                r.method,
                &r.path[..r.path.len().min(80)],
                r.body
                    .as_ref()
                    .map(|b| b.to_string().chars().take(80).collect::<String>())
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
    );

    // The process still serves, and the tables are whole.
    assert_eq!(
        gw.generate("gemini-2.5-flash", common::text_request("still there?"))
            .await
            .status(),
        200
    );
    assert_eq!(
        gw.state.storage.upstream_keys().await.unwrap().len(),
        keys_before
    );
    let name = "x'); DROP TABLE client_keys; --";
    let created = gw
        .http
        .post(gw.url("/api/client-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let listed: Value = gw
        .http
        .get(gw.url("/api/client-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name),
        "the name is stored as text, not run"
    );
    let logs: Value = gw
        .http
        .get(gw.url("/api/logs?model=%27%20OR%201%3D1%20--"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["total"], 0);
}
