//! A stand-in for the Gemini API (`generativelanguage.googleapis.com`), faithful to the shapes of
//! the real one, for gemini-pool's tests and benchmarks.
//!
//! It knows a set of keys and their Google Cloud projects, answers unknown keys the way Google
//! does, counts requests per project and model against configurable per-minute and per-day
//! limits (429 with `QuotaFailure` and `RetryInfo`), keeps files and cached contents per project
//! (403 for other projects, as Google does), implements the resumable upload protocol, streams
//! SSE with CRLF framing (or the JSON-array form), and accepts injected failures. Everything it
//! saw is recorded, so a test can assert what reached the upstream.

#![expect(
    clippy::result_large_err,
    reason = "handlers return finished error responses; the mock is a test fixture, not a hot path"
)]

mod answer;
mod api;
pub mod fast;
mod upload;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::Value;
use tokio::sync::Semaphore;

/// A key the mock accepts, and the project whose quota and resources it shares.
#[derive(Debug, Clone)]
pub struct MockKey {
    /// The API key.
    pub key: String,
    /// Its Google Cloud project.
    pub project: String,
}

impl MockKey {
    /// A key of `project`.
    pub fn new(key: impl Into<String>, project: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            project: project.into(),
        }
    }
}

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Keys that work. Any other key gets 400 `API_KEY_INVALID`, unless `accept_any_key`.
    pub keys: Vec<MockKey>,
    /// Keys that answer 403 `CONSUMER_SUSPENDED` (with the key quoted in the message, as Google does).
    pub suspended_keys: Vec<String>,
    /// Accept every key, each as its own project (benchmarks).
    pub accept_any_key: bool,
    /// Requests per minute per project and model for generate/count/embed calls.
    pub rpm_limit: Option<u32>,
    /// Requests per day per project and model.
    pub rpd_limit: Option<u32>,
    /// Events in a streamed answer (at least 1).
    pub stream_events: usize,
    /// Pause between streamed events.
    pub stream_interval: Duration,
    /// Pause before the response head of every API call.
    pub response_delay: Duration,
    /// Record every request (method, path, query, key, header names) for assertions.
    pub record_requests: bool,
    /// Page size of the models list when the client does not give one.
    pub default_models_page_size: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            suspended_keys: Vec::new(),
            accept_any_key: false,
            rpm_limit: None,
            rpd_limit: None,
            stream_events: 3,
            stream_interval: Duration::ZERO,
            response_delay: Duration::ZERO,
            record_requests: true,
            default_models_page_size: 50,
        }
    }
}

/// A failure to answer instead of the normal response.
#[derive(Debug, Clone)]
pub struct Injection {
    /// Only requests whose path contains this (`None`: any API request).
    pub path_contains: Option<String>,
    /// Only requests made with this key (`None`: any key).
    pub key: Option<String>,
    /// How many requests it applies to.
    pub times: usize,
    /// HTTP status to answer.
    pub status: u16,
    /// JSON body to answer.
    pub body: Value,
    /// When not empty: answer 200 with these events as an SSE stream instead (errors inside a
    /// stream, truncated streams).
    pub sse_events: Vec<Value>,
    /// When set: misbehave this way instead (status, body and events are ignored).
    pub fault: Option<Fault>,
}

/// Ways an upstream misbehaves beyond answering an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept the request and never answer (no status line).
    HangBeforeHeaders,
    /// Answer 200 with one SSE event, then go silent with the connection open.
    HangMidStream,
    /// Answer 200 headers, then drop the connection before the body is complete.
    Reset,
    /// Answer 200 with a JSON body cut in the middle.
    MalformedJson,
    /// Answer 200 with an SSE stream that stops in the middle of an event.
    TruncatedSse,
    /// Answer 200 with a normal SSE stream sent a few bytes at a time, slowly.
    SlowDrip,
    /// Answer 200 with one normal SSE event, then an event of 80 MiB that never ends (no line
    /// break at all), sent a mebibyte at a time.
    HugeEvent,
}

impl Injection {
    /// An injected answer for the next `times` API requests.
    pub fn status(status: u16, body: Value, times: usize) -> Self {
        Self {
            path_contains: None,
            key: None,
            times,
            status,
            body,
            sse_events: Vec::new(),
            fault: None,
        }
    }

    /// `fault` for the next `times` API requests.
    pub fn fault(fault: Fault, times: usize) -> Self {
        Self {
            fault: Some(fault),
            ..Self::status(200, Value::Null, times)
        }
    }

    /// A 200 SSE stream of `events` for the next `times` API requests.
    pub fn stream(events: Vec<Value>, times: usize) -> Self {
        Self {
            sse_events: events,
            ..Self::status(200, Value::Null, times)
        }
    }
}

/// A failure mode of the whole upstream, for every generate call (`generateContent` and
/// `streamGenerateContent`) until it is lifted: what Google does on its bad days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outage {
    /// `429 RESOURCE_EXHAUSTED "Resource has been exhausted (e.g. check quota)."` with no
    /// details: shared capacity or the caller's address throttled, not a project's quota.
    Capacity429,
    /// `503 UNAVAILABLE "The model is overloaded. Please try again later."`.
    Overloaded,
    /// `200` with a candidate that has no parts, `finishReason: STOP` and no output tokens
    /// (as one JSON answer, or one first-and-last event of a stream).
    EmptyAnswers,
    /// A quota 429 (`QuotaFailure` and this `RetryInfo.retryDelay` text, verbatim).
    QuotaRetryInfo(String),
}

/// What the mock saw of one request.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// HTTP version, such as `HTTP/2.0`.
    pub version: String,
    /// Path, without the query.
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The `x-goog-api-key` header.
    pub api_key: Option<String>,
    /// Every header, names lower-case, values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// Status the mock answered with.
    pub status: u16,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// Counters of streamed answers.
#[derive(Debug, Default)]
pub struct StreamCounters {
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

impl StreamCounters {
    /// Streams whose body started.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    /// Streams that sent their last event.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    /// Streams dropped before their last event (the client went away).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Tokens the mock reported in its answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServedUsage {
    /// `promptTokenCount`.
    pub prompt: u64,
    /// `candidatesTokenCount`.
    pub candidates: u64,
    /// `thoughtsTokenCount`.
    pub thoughts: u64,
}

/// A file uploaded to the mock.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub project: String,
    pub metadata: Value,
}

/// Mutable state behind one lock: the mock is a test fixture, not a hot path.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub requests: Vec<RecordedRequest>,
    pub injections: Vec<Injection>,
    pub minute_windows: HashMap<(String, String), VecDeque<Instant>>,
    pub day_counts: HashMap<(String, String), u32>,
    pub files: HashMap<String, StoredFile>,
    pub cached_contents: HashMap<String, (String, Value)>,
    pub uploads: HashMap<String, upload::UploadSession>,
    /// Successful generate/count/embed calls per key.
    pub served_by_key: HashMap<String, u64>,
    /// Usage reported in generate answers, per key.
    pub usage_by_key: HashMap<String, ServedUsage>,
    /// Keys made valid while running.
    pub added_keys: Vec<MockKey>,
}

pub(crate) struct MockState {
    pub config: MockConfig,
    pub ledger: Mutex<Ledger>,
    pub streams: StreamCounters,
    pub stream_gate: Mutex<Option<Arc<Semaphore>>>,
    pub next_id: AtomicU64,
    pub outage: Mutex<Option<Outage>>,
}

impl MockState {
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn project_of(&self, key: &str) -> Option<String> {
        if let Some(known) = self.config.keys.iter().find(|k| k.key == key) {
            return Some(known.project.clone());
        }
        if let Some(added) = self.ledger().added_keys.iter().find(|k| k.key == key) {
            return Some(added.project.clone());
        }
        self.config
            .accept_any_key
            .then(|| format!("project-of-{key}"))
    }

    pub fn fresh_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{n:06}{:08x}", rand::random::<u32>())
    }
}

/// A handle on a mock: its router, and what it recorded.
#[derive(Clone)]
pub struct MockGemini {
    state: Arc<MockState>,
}

impl MockGemini {
    /// A mock with `config`.
    pub fn new(config: MockConfig) -> Self {
        Self {
            state: Arc::new(MockState {
                config,
                ledger: Mutex::new(Ledger::default()),
                streams: StreamCounters::default(),
                stream_gate: Mutex::new(None),
                next_id: AtomicU64::new(1),
                outage: Mutex::new(None),
            }),
        }
    }

    /// The axum router serving the Gemini API.
    pub fn router(&self) -> Router {
        api::router(Arc::clone(&self.state))
    }

    /// Serves the mock on `127.0.0.1:0` in a background task; returns its address.
    pub async fn start(config: MockConfig) -> std::io::Result<(Self, SocketAddr)> {
        let mock = Self::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = mock.router();
        // Every event leaves at once, as from Google's front ends (no Nagle).
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            let _ = stream.set_nodelay(true);
        });
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "mock-gemini stopped");
            }
        });
        Ok((mock, addr))
    }

    /// Makes a key valid from now on (a key that was revoked and restored, say).
    pub fn add_key(&self, key: MockKey) {
        self.state.ledger().added_keys.push(key);
    }

    /// Adds a failure to answer instead of the normal response.
    pub fn inject(&self, injection: Injection) {
        self.state.ledger().injections.push(injection);
    }

    /// Starts (`Some`) or lifts (`None`) an outage of every generate call.
    pub fn set_outage(&self, outage: Option<Outage>) {
        *self
            .state
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = outage;
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.ledger().requests.clone()
    }

    /// Successful model calls (generate, stream, count, embed) served with `key`.
    pub fn served_by(&self, key: &str) -> u64 {
        self.state
            .ledger()
            .served_by_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The usage reported in generate answers made with `key`.
    pub fn usage_served_by(&self, key: &str) -> ServedUsage {
        self.state
            .ledger()
            .usage_by_key
            .get(key)
            .copied()
            .unwrap_or_default()
    }

    /// The project a file belongs to, if the file exists.
    pub fn file_project(&self, name: &str) -> Option<String> {
        self.state
            .ledger()
            .files
            .get(name)
            .map(|file| file.project.clone())
    }

    /// Counters of streamed answers.
    pub fn streams(&self) -> &StreamCounters {
        &self.state.streams
    }

    /// From now on every streamed event after the first waits for a permit of the returned
    /// semaphore, so a test decides when each event leaves the mock.
    pub fn gate_streams(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self
            .state
            .stream_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&gate));
        gate
    }
}
