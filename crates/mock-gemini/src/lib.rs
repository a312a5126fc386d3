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
mod config;
pub mod fast;
mod http;
mod models;
mod resources;
mod state;
mod tokens;
mod upload;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::sync::Semaphore;

pub use config::{Fault, Injection, MockConfig, MockKey, Outage};
use state::{Ledger, MockState};
pub use state::{RecordedRequest, ServedUsage, StreamCounters};

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
