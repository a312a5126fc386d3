//! What the mock keeps while it runs: the requests it saw, the files, cached contents and
//! upload sessions it holds, quota windows, and counters of what it served.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::{Injection, MockConfig, MockKey, Outage};

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
    pub(crate) started: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
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
    pub uploads: HashMap<String, UploadSession>,
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

/// A resumable upload in progress: the key and project that started it, and what arrived.
#[derive(Debug)]
pub(crate) struct UploadSession {
    pub key: String,
    pub project: String,
    pub display_name: Option<String>,
    pub mime_type: String,
    pub data: Vec<u8>,
}
