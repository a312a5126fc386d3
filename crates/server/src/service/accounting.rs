//! Accounting: every request's client, key, project, model, route, status, latency and tokens.
//!
//! Nothing is written on the request path: a finished request drops a [`RequestMeter`], which
//! queues one record for a writer task; the writer writes batches (request log rows, daily
//! totals, the scheduler's quota counts) every second, or as soon as [`WRITE_AT`] records wait,
//! and a clean shutdown flushes what is left. A record does not wake the writer (that cost a task
//! switch per request); only the [`WRITE_AT`]th waiting one does.
//!
//! When the database cannot be written (locked, full, gone), records wait in memory and the
//! writer tries again after a backoff (one second, doubling, at most half a minute), keeping at
//! most [`MAX_PENDING_RECORDS`]: past that, new records are dropped and counted, so a bad day costs
//! a bounded amount of memory and never a request. [`Accountant::health`] says what is pending,
//! dropped and failing, for `/readyz`, the dashboard and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem;
use pool::{DayCount, PoolKey};
use tokio::sync::{Notify, mpsc, oneshot};
use translate::gemini::UsageMetadata;
use translate::gemini::sse::SseDecoder;

use store::Storage;

/// How often the writer writes.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How many days request log rows are kept unless the settings say otherwise (daily totals are
/// kept for ever).
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// How often old request log rows are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// When the first deletion comes after a start.
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(2);
/// Records held while the database cannot be written (tens of MiB at most); newer ones are
/// dropped and counted.
pub const MAX_PENDING_RECORDS: usize = 100_000;
/// Records queued between requests and the writer: room for the records that arrive while a
/// batch is written.
const QUEUE: usize = 10_000;
/// How many queued records make the writer write before its next tick.
const WRITE_AT: usize = 1000;
/// The longest wait between two tries of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub use store::{RequestRecord, Tokens};

/// The tokens of one request, as the upstream reported them: thinking counted in the completion
/// (as OpenAI counts reasoning), tool-use prompt tokens in the prompt.
pub fn tokens_of(usage: &UsageMetadata) -> Tokens {
    Tokens {
        prompt: usage.prompt_token_count + usage.tool_use_prompt_token_count,
        completion: usage.candidates_token_count + usage.thoughts_token_count,
        thoughts: usage.thoughts_token_count,
        cached: usage.cached_content_token_count,
    }
}

/// The sending side, shared by all requests.
#[derive(Clone)]
pub struct Accountant {
    /// Records, taken by the writer when it wakes (nothing waits on this channel, so a send
    /// wakes no one).
    records: mpsc::Sender<RequestRecord>,
    /// Wakes the writer when [`WRITE_AT`] records are queued.
    backlog: Arc<Notify>,
    /// Asks the writer to write now, and to say when it has.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    retention_days: Arc<AtomicU32>,
    health: Arc<Health>,
}

/// What the writer reports about itself.
#[derive(Debug, Default)]
struct Health {
    /// The last write failed (and writes are being retried).
    failing: AtomicBool,
    /// Since when (ms since the epoch) writes fail, 0 when they do not.
    failing_since_ms: AtomicU64,
    /// Records waiting to be written.
    pending: AtomicU64,
    /// Records dropped because too many were waiting.
    dropped: AtomicU64,
}

/// The accounting writer's state, as `/readyz` and the dashboard show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountingHealth {
    /// Since when writes fail (ms since the epoch), if they do.
    pub failing_since_ms: Option<u64>,
    /// Records waiting to be written.
    pub pending: u64,
    /// Records dropped since the start because too many were waiting.
    pub dropped: u64,
}

impl Accountant {
    /// Starts the writer task; returns the accountant and the writer's receiver loop future.
    pub fn start(
        storage: Storage,
        day_counts: impl Fn() -> Vec<DayCount> + Send + 'static,
    ) -> Self {
        Self::start_holding(storage, day_counts, MAX_PENDING_RECORDS, FLUSH_INTERVAL)
    }

    /// [`Accountant::start`] holding at most `max_pending` records while writes fail, and
    /// writing every `interval`.
    pub fn start_holding(
        storage: Storage,
        day_counts: impl Fn() -> Vec<DayCount> + Send + 'static,
        max_pending: usize,
        interval: Duration,
    ) -> Self {
        let (records, queued) = mpsc::channel(QUEUE);
        let (flushes, flush_asked) = mpsc::channel(16);
        let backlog = Arc::new(Notify::new());
        let retention_days = Arc::new(AtomicU32::new(DEFAULT_RETENTION_DAYS));
        let health = Arc::new(Health::default());
        tokio::spawn(write_behind(
            storage,
            Inbox {
                records: queued,
                backlog: Arc::clone(&backlog),
                flushes: flush_asked,
            },
            day_counts,
            Arc::clone(&retention_days),
            Arc::clone(&health),
            max_pending,
            interval,
        ));
        Self {
            records,
            backlog,
            flushes,
            retention_days,
            health,
        }
    }

    /// Whether records are being written, and how many wait or were dropped.
    pub fn health(&self) -> AccountingHealth {
        AccountingHealth {
            failing_since_ms: self
                .health
                .failing
                .load(Ordering::Relaxed)
                .then(|| self.health.failing_since_ms.load(Ordering::Relaxed)),
            // Those the writer holds, and those queued for it.
            pending: self.health.pending.load(Ordering::Relaxed)
                + (self.records.max_capacity() - self.records.capacity()) as u64,
            dropped: self.health.dropped.load(Ordering::Relaxed),
        }
    }

    /// How many days request log rows are kept.
    pub fn retention_days(&self) -> u32 {
        self.retention_days.load(Ordering::Relaxed)
    }

    /// Keeps request log rows `days` days from now on (older ones go at the next prune).
    pub fn set_retention_days(&self, days: u32) {
        self.retention_days.store(days, Ordering::Relaxed);
    }

    /// Queues a record, never waiting: when the queue is full (the writer cannot keep up or
    /// the database cannot be written), the record is dropped and counted.
    pub fn record(&self, record: RequestRecord) {
        match self.records.try_send(record) {
            Ok(()) => {
                if self.records.max_capacity() - self.records.capacity() >= WRITE_AT {
                    self.backlog.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                crate::service::metrics::record_accounting_dropped();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the accounting writer has stopped: a request record is lost");
            }
        }
    }

    /// Writes everything queued so far, and waits (at most ten seconds) until it is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), written).await;
        }
    }
}

/// What the writer is sent.
struct Inbox {
    records: mpsc::Receiver<RequestRecord>,
    backlog: Arc<Notify>,
    flushes: mpsc::Receiver<oneshot::Sender<()>>,
}

async fn write_behind(
    storage: Storage,
    mut inbox: Inbox,
    day_counts: impl Fn() -> Vec<DayCount>,
    retention_days: Arc<AtomicU32>,
    health: Arc<Health>,
    max_pending: usize,
    interval: Duration,
) {
    let mut batch: Vec<RequestRecord> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first prune comes soon after the start (once the saved settings are loaded), so a
    // shorter retention set before a restart applies at once.
    let mut next_prune = Instant::now() + FIRST_PRUNE_AFTER;
    let mut backoff = Duration::ZERO;
    let mut next_write = Instant::now();
    let mut waiting_flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let keep = |batch: &mut Vec<RequestRecord>, record: RequestRecord| {
        if batch.len() < max_pending {
            batch.push(record);
        } else {
            health.dropped.fetch_add(1, Ordering::Relaxed);
            crate::service::metrics::record_accounting_dropped();
        }
    };
    loop {
        let mut closed = false;
        tokio::select! {
            asked = inbox.flushes.recv() => match asked {
                Some(done) => waiting_flushes.push(done),
                // Every accountant is gone (the records' senders with them).
                None => closed = true,
            },
            () = inbox.backlog.notified() => {}
            _ = ticker.tick() => {}
        }
        // Flushes first: a flush is asked after its caller's records were queued, so the
        // records taken next include them.
        while let Ok(done) = inbox.flushes.try_recv() {
            waiting_flushes.push(done);
        }
        while let Ok(record) = inbox.records.try_recv() {
            keep(&mut batch, record);
        }
        // A failing database is tried again after the backoff, not at every record; a flush
        // (shutdown) tries at once.
        if Instant::now() >= next_write || !waiting_flushes.is_empty() || closed {
            if write(&storage, &mut batch, &day_counts()).await {
                backoff = Duration::ZERO;
                health.failing.store(false, Ordering::Relaxed);
            } else {
                backoff = (backoff * 2).clamp(FLUSH_INTERVAL, MAX_BACKOFF);
                next_write = Instant::now() + backoff;
                if !health.failing.swap(true, Ordering::Relaxed) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0));
                    health.failing_since_ms.store(now, Ordering::Relaxed);
                }
            }
        }
        health.pending.store(batch.len() as u64, Ordering::Relaxed);
        for done in waiting_flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_INTERVAL;
            let days = u64::from(retention_days.load(Ordering::Relaxed));
            let retention = Duration::from_secs(days * 24 * 3600);
            if let Err(error) = storage.prune_request_logs(retention).await {
                tracing::error!(%error, "could not prune the request log");
            }
            // Stored responses are kept as long as the request log.
            let cutoff_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(retention)
                .as_millis();
            if let Err(error) = storage
                .prune_responses(i64::try_from(cutoff_ms).unwrap_or(i64::MAX))
                .await
            {
                tracing::error!(%error, "could not prune the stored responses");
            }
        }
    }
}

/// Writes `batch` and the day counts; `false` when the database refused (the batch is kept).
async fn write(storage: &Storage, batch: &mut Vec<RequestRecord>, counts: &[DayCount]) -> bool {
    if batch.is_empty() && counts.is_empty() {
        return true;
    }
    // A deleted SQLite file still takes writes through the open connections, and loses them.
    if !storage.file_is_in_place() {
        tracing::error!(
            records = batch.len(),
            "the database file is gone: accounting is held in memory until it is back (restart the gateway)"
        );
        return false;
    }
    match storage.write_accounting(batch, counts).await {
        Ok(()) => {
            batch.clear();
            true
        }
        Err(error) => {
            tracing::error!(%error, records = batch.len(), "could not write accounting: retrying after a pause");
            false
        }
    }
}

/// Where a finished request's record goes: the accounting writer, the pool's token counts (for
/// its tokens-per-minute limits) and the per-client gate (for daily token limits).
#[derive(Clone)]
pub struct MeterSinks {
    /// The accounting writer.
    pub accountant: Accountant,
    /// The key pool.
    pub pool: Arc<pool::Pool>,
    /// Per-client limits in force.
    pub client_gate: Arc<pool::ClientGate>,
}

/// Measures one request; sends its record when dropped, whenever that is: after a whole
/// answer, or in the middle of a stream whose client went away (with the usage seen so far).
pub struct RequestMeter {
    sinks: MeterSinks,
    started: Instant,
    first_byte: Option<Duration>,
    record: RequestRecord,
}

impl RequestMeter {
    /// Starts measuring a request of `client_key_id` on `route`.
    pub fn start(sinks: &MeterSinks, route: &'static str, client_key_id: Option<i64>) -> Self {
        Self {
            sinks: sinks.clone(),
            started: Instant::now(),
            first_byte: None,
            record: RequestRecord {
                at_ms: sinks.pool.now_ms(),
                client_key_id,
                upstream_key_id: None,
                project: None,
                model: None,
                route,
                status: 0,
                latency_ms: 0,
                tokens: Tokens::default(),
                streamed: false,
                attempts: 0,
                upstream_error: None,
            },
        }
    }

    /// The model the request uses.
    pub fn set_model(&mut self, model: &str) {
        self.record.model = Some(model.to_owned());
    }

    /// The key that served the request.
    pub fn set_key(&mut self, key: &PoolKey) {
        self.record.upstream_key_id = Some(key.id().0);
        self.record.project = Some(key.project().to_string());
    }

    /// The status the client got.
    pub fn set_status(&mut self, status: u16) {
        self.record.status = status;
    }

    /// Marks the answer as streamed, and the time its first byte goes out.
    pub fn set_streamed(&mut self) {
        self.record.streamed = true;
        self.first_byte = Some(self.started.elapsed());
    }

    /// What happened upstream: calls made and the last trouble met.
    pub fn set_attempts(&mut self, attempts: &crate::service::relay::Attempts) {
        self.record.attempts = u8::try_from(attempts.tried.len()).unwrap_or(u8::MAX);
        self.record.upstream_error = attempts.trouble;
    }

    /// The upstream's latest (cumulative) usage snapshot.
    pub fn set_usage(&mut self, usage: &UsageMetadata) {
        self.record.tokens = tokens_of(usage);
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.record.latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        crate::service::metrics::record_request(
            self.record.route,
            self.record.status,
            elapsed,
            self.first_byte,
        );
        if let Some(model) = &self.record.model {
            let spent = self.record.tokens;
            crate::service::metrics::record_tokens(
                model,
                self.record.upstream_key_id,
                spent.prompt,
                spent.completion,
                spent.thoughts,
            );
        }
        let tokens = self.record.tokens.prompt + self.record.tokens.completion;
        if let (Some(key), Some(model)) = (self.record.upstream_key_id, &self.record.model) {
            self.sinks
                .pool
                .record_tokens(pool::KeyId(key), model, tokens);
        }
        if let Some(client) = self.record.client_key_id {
            self.sinks
                .client_gate
                .add_tokens(client, tokens, self.sinks.pool.now_ms());
        }
        self.sinks.accountant.record(self.record.clone());
    }
}

/// How a relayed body carries its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// SSE events, each with a cumulative `usageMetadata`.
    Sse,
    /// One JSON answer with `usageMetadata` near its end (or a JSON array of events).
    Json,
    /// No usage to read (file and model calls).
    Other,
}

/// The most of a JSON body kept to find its `usageMetadata` (which comes last).
const JSON_TAIL: usize = 64 * 1024;

/// Reads usage out of a body as it is relayed, without holding the body: SSE events are decoded
/// as they pass; of a JSON answer only the tail is kept.
pub struct UsageTap {
    kind: BodyKind,
    decoder: SseDecoder,
    tail: Vec<u8>,
    meter: RequestMeter,
}

impl UsageTap {
    /// A tap that reports to `meter`.
    pub fn new(kind: BodyKind, meter: RequestMeter) -> Self {
        Self {
            kind,
            decoder: SseDecoder::new(),
            tail: Vec::new(),
            meter,
        }
    }

    fn observe(&mut self, chunk: &[u8]) {
        match self.kind {
            BodyKind::Sse => {
                self.decoder.push(chunk);
                while let Some(event) = self.decoder.next_event() {
                    if memmem::find(event.data.as_bytes(), b"usageMetadata").is_some() {
                        self.take_usage_from(&event.data);
                    }
                }
            }
            BodyKind::Json => {
                self.tail.extend_from_slice(chunk);
                if self.tail.len() > 2 * JSON_TAIL {
                    self.tail.drain(..self.tail.len() - JSON_TAIL);
                }
            }
            BodyKind::Other => {}
        }
    }

    fn take_usage_from(&mut self, json: &str) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct WithUsage {
            usage_metadata: Option<UsageMetadata>,
        }
        if let Ok(WithUsage {
            usage_metadata: Some(usage),
        }) = serde_json::from_str(json)
        {
            self.meter.set_usage(&usage);
        }
    }

    fn finish(&mut self) {
        if self.kind == BodyKind::Json
            && let Some(usage) = usage_in_tail(&self.tail)
        {
            self.meter.set_usage(&usage);
        }
    }

    /// Wraps a body stream: every chunk passes through unchanged, and is looked at on the way.
    /// The meter reports when the stream ends or is dropped.
    pub fn wrap<E: Send + 'static>(
        self,
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static {
        let body = Box::pin(body);
        futures_util::stream::unfold((body, self), |(mut body, mut tap)| async move {
            use futures_util::StreamExt;
            match body.next().await {
                Some(Ok(chunk)) => {
                    tap.observe(&chunk);
                    Some((Ok(chunk), (body, tap)))
                }
                Some(Err(error)) => Some((Err(error), (body, tap))),
                None => {
                    tap.finish();
                    None
                }
            }
        })
    }
}

/// The last `"usageMetadata": {...}` object in a JSON tail.
fn usage_in_tail(tail: &[u8]) -> Option<UsageMetadata> {
    let at = memmem::rfind(tail, b"\"usageMetadata\"")?;
    let open = at + tail[at..].iter().position(|b| *b == b'{')?;
    let mut depth = 0usize;
    for (offset, byte) in tail[open..].iter().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return serde_json::from_slice(&tail[open..=open + offset]).ok();
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64) -> RequestRecord {
        RequestRecord {
            at_ms,
            client_key_id: None,
            upstream_key_id: None,
            project: None,
            model: Some("gemini-2.5-flash".into()),
            route: "/v1/chat/completions",
            status: 200,
            latency_ms: 1,
            tokens: Tokens::default(),
            streamed: false,
            attempts: 1,
            upstream_error: None,
        }
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_written_holds_a_bounded_backlog_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db/accounting.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let storage = Storage::open(&url).await.unwrap();
        let accountant = Accountant::start_holding(storage.clone(), Vec::new, 10, FLUSH_INTERVAL);
        // The file is moved away: the open connections would still take writes, and lose them.
        let aside = dir.path().join("db/aside.db");
        std::fs::rename(&file, &aside).unwrap();
        for at in 0..50 {
            accountant.record(record(at));
        }
        accountant.flush().await;
        let health = accountant.health();
        assert!(health.failing_since_ms.is_some(), "{health:?}");
        assert_eq!((health.pending, health.dropped), (10, 40), "bounded");
        // The file is back: the next try writes what was held, and the writer is healthy.
        std::fs::rename(&aside, &file).unwrap();
        accountant.flush().await;
        let health = accountant.health();
        assert_eq!(
            (health.failing_since_ms, health.pending),
            (None, 0),
            "{health:?}"
        );
        let (rows, total) = storage
            .request_logs(&store::LogFilter::default())
            .await
            .unwrap();
        assert_eq!((total, rows.len()), (10, 10));
    }

    #[tokio::test]
    async fn a_backlog_of_records_is_written_before_the_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let storage = Storage::open(&url).await.unwrap();
        // The first tick comes at the start (at the timer's first turn, which this test's one
        // thread gets to while it sleeps); the next one not within this test.
        let hour = Duration::from_secs(3600);
        let accountant = Accountant::start_holding(storage.clone(), Vec::new, 10_000, hour);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let written = || async {
            let (_, total) = storage
                .request_logs(&store::LogFilter::default())
                .await
                .unwrap();
            total
        };
        let backlog = i64::try_from(WRITE_AT).unwrap();
        for at in 0..backlog {
            accountant.record(record(at.unsigned_abs()));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while written().await < backlog {
            assert!(
                Instant::now() < deadline,
                "not written: {:?}",
                accountant.health()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Fewer than that wait for the tick, or a flush.
        accountant.record(record(0));
        accountant.flush().await;
        assert_eq!(written().await, backlog + 1);
        assert_eq!(accountant.health().pending, 0);
    }

    #[test]
    fn usage_is_found_at_the_end_of_a_pretty_printed_answer() {
        let answer = br#"{
  "candidates": [{"content": {"parts": [{"text": "a {brace} in text"}], "role": "model"}}],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 7,
    "thoughtsTokenCount": 25,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]
  },
  "modelVersion": "gemini-2.5-flash"
}"#;
        let usage = usage_in_tail(answer).unwrap();
        assert_eq!(
            tokens_of(&usage),
            Tokens {
                prompt: 8,
                completion: 32,
                thoughts: 25,
                cached: 0
            }
        );
        assert!(usage_in_tail(b"{\"candidates\": []}").is_none());
    }
}
