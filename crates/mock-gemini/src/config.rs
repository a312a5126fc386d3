//! How the mock behaves: the keys it knows, its limits and pacing, and the failures and outages
//! a test injects.

use std::time::Duration;

use serde_json::Value;

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
