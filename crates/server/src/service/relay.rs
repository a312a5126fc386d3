//! The one failover loop every route uses, and the commit points.
//!
//! A request is sent with a key the pool picks; until the client has seen a byte, a failure
//! another key may not have moves it to the next key (within `MAX_RETRIES` and the shared retry
//! budget), and the pool learns what the failure was about (see `classify`). Two kinds of
//! success still need a look before they are committed:
//!
//! - a one-JSON answer is read whole first ([`Relay::read_whole_answer`]): one cut short,
//!   malformed or empty (Gemini's 200 with no parts) is retried like an error;
//! - a stream is read up to its first event ([`Relay::open_first_event`]): Gemini puts 429s and
//!   overloads in a 200 stream's first event, streams break before it, and an empty
//!   first-and-last event is the same glitch as an empty answer.
//!
//! Past that point the answer is the client's.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use futures_util::StreamExt;
use pool::{Failure, KeyId, PickError, PickRequest, PoolKey};
use translate::gemini::sse::SseDecoder;
use translate::gemini::{AnswerShape, GenerateContentResponse};

use crate::service::classify::{About, classify, redact_secrets};
use crate::service::cluster::Cluster;
use crate::service::upstream::{
    Committed, Outgoing, RELAYED_RESPONSE_HEADERS, Upstream, UpstreamFailure, allowlisted,
    read_error_body,
};

/// An error a 200 stream sent as its first event, as an error answer would have said it.
struct EventError {
    status: u16,
    /// `{"error": …}`, with any key redacted.
    body: String,
    about: About,
}

/// A one-JSON answer read whole.
pub struct WholeAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its allowlisted headers.
    pub headers: HeaderMap,
    /// Its bytes, as the upstream sent them.
    pub body: Bytes,
    /// The key that got it.
    pub key: Arc<PoolKey>,
    /// The body parsed, when it was read as [`AnswerKind::ContentToTranslate`] and is of the
    /// shape the translation reads.
    pub content: Option<GenerateContentResponse>,
}

/// What a one-JSON answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Any JSON (counts, embeddings): only its syntax is checked.
    Json,
    /// A `GenerateContentResponse` relayed as it came: an empty one is an upstream fault.
    Content,
    /// A `GenerateContentResponse` to be translated: judged as [`Self::Content`] is, by the
    /// same parse that the translation reads ([`WholeAnswer::content`]). Parsed once rather
    /// than twice (its shape, then the whole): the second parse was 3 % of the instructions of
    /// a translated chat request.
    ContentToTranslate,
}

/// An event stream past its first event.
pub struct OpenedStream {
    /// The upstream's status.
    pub status: StatusCode,
    /// Its allowlisted headers.
    pub headers: HeaderMap,
    /// The key that serves it.
    pub key: Arc<PoolKey>,
    /// Every byte read so far, for a route that relays the stream unchanged.
    pub read: Bytes,
    /// The first event's data, for a route that translates it.
    pub first_event: String,
    /// The decoder, holding whatever followed the first event.
    pub decoder: SseDecoder,
    /// The rest of the body.
    pub rest: UpstreamBody,
}

/// What happened to one client request upstream: the keys tried, and the last trouble met on
/// the way (for the request log, even when a later key succeeded).
#[derive(Debug, Default)]
pub struct Attempts {
    /// Keys tried, in order.
    pub tried: Vec<KeyId>,
    /// The last failure met (`capacity`, `quota`, `key_error`, `empty_answer`, …).
    pub trouble: Option<&'static str>,
}

/// How a relayed stream ends besides its own end: silent for `idle`, or cut when the shutdown
/// grace period is over (`cutoff`).
#[derive(Debug, Clone)]
pub struct StreamEnds {
    /// The longest the upstream may stay silent.
    pub idle: Duration,
    /// Raised at the end of the shutdown grace period.
    pub cutoff: tokio::sync::watch::Receiver<bool>,
}

impl StreamEnds {
    /// Waits for the next chunk of `body`: `Ok(item)`, or `Err(true)` at the cutoff and
    /// `Err(false)` after `idle` of silence.
    pub async fn next<S: futures_util::Stream + Unpin>(
        &mut self,
        body: &mut S,
    ) -> Result<Option<S::Item>, bool> {
        if *self.cutoff.borrow() {
            return Err(true);
        }
        tokio::select! {
            next = tokio::time::timeout(self.idle, body.next()) => next.map_err(|_| false),
            Ok(_) = self.cutoff.wait_for(|cut| *cut) => Err(true),
        }
    }
}

/// An upstream body as the stream openers read it.
pub type UpstreamBody = futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>;

/// The failover loop and the commit points, with what they need: the pool to pick from and
/// teach, the upstream client, the database (what a key error or a learned limit leaves
/// behind), the other instances, the key checker's queue and the shutdown cutoff.
pub struct Relay {
    pool: Arc<pool::Pool>,
    upstream: Arc<Upstream>,
    storage: store::Storage,
    cluster: Option<Arc<Cluster>>,
    key_checks: tokio::sync::mpsc::Sender<(Arc<PoolKey>, String)>,
    cutoff: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// A relay over these services; keys that meet a key error go to `key_checks`.
    pub fn new(
        pool: Arc<pool::Pool>,
        upstream: Arc<Upstream>,
        storage: store::Storage,
        cluster: Option<Arc<Cluster>>,
        key_checks: tokio::sync::mpsc::Sender<(Arc<PoolKey>, String)>,
    ) -> Self {
        Self {
            pool,
            upstream,
            storage,
            cluster,
            key_checks,
            cutoff: tokio::sync::watch::channel(false).0,
        }
    }

    /// The key pool.
    pub fn pool(&self) -> &Arc<pool::Pool> {
        &self.pool
    }

    /// The upstream client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The database.
    pub fn storage(&self) -> &store::Storage {
        &self.storage
    }

    /// Raised when the shutdown grace period is over: open streams end with an error event.
    pub fn cutoff(&self) -> &tokio::sync::watch::Sender<bool> {
        &self.cutoff
    }

    /// How the streams relayed now end besides their own end.
    pub fn stream_ends(&self) -> StreamEnds {
        StreamEnds {
            idle: self.upstream.timeout(),
            cutoff: self.cutoff.subscribe(),
        }
    }

    /// Teaches the pool what an upstream error answer was about.
    fn learn_from(&self, key: &Arc<PoolKey>, model: Option<&str>, about: &About) {
        match about {
            About::Key { reason } => self.check_key(key, reason),
            About::Quota(quota) => self.learn(key, model, &Failure::Quota(quota.clone())),
            About::Capacity { status } => {
                self.learn(key, model, &Failure::Capacity { status: *status });
            }
            About::Project | About::Request => {}
        }
    }

    /// Teaches the pool a failure, notes it on the key, persists what must survive a restart
    /// and tells the other instances at once.
    pub fn learn(&self, key: &Arc<PoolKey>, model: Option<&str>, failure: &Failure) {
        let now = self.pool.now_ms();
        key.note_failure(now, describe(failure));
        let lesson = self.pool.record_failure(key.id(), model, failure);
        if lesson.out_of_service.is_some()
            && let Failure::KeyInvalid { reason } = failure
        {
            tracing::warn!(key_id = %key.id(), key = %key.masked(), %reason, "upstream key taken out of service");
            let storage = self.storage.clone();
            let (id, reason) = (key.id(), reason.clone());
            tokio::spawn(async move {
                if let Err(error) = storage.mark_key_invalid(id, &reason).await {
                    tracing::error!(%error, "could not persist a key's state");
                }
            });
        }
        if let Some(learned) = lesson.learned {
            tracing::info!(project = %learned.project, model = %learned.model, rpm = ?learned.limits.rpm, rpd = ?learned.limits.rpd, tpm = ?learned.limits.tpm, "learned a limit from the upstream");
            let storage = self.storage.clone();
            tokio::spawn(async move {
                if let Err(error) = storage.save_learned_limits(&learned).await {
                    tracing::error!(%error, "could not persist a learned limit");
                }
            });
        }
        if let Some(cluster) = &self.cluster {
            cluster.publish_soon();
        }
    }

    /// A key error was met: the key is held back and a probe of the gateway's own (a request
    /// carrying no client text) decides whether it leaves service.
    fn check_key(&self, key: &Arc<PoolKey>, reason: &str) {
        key.note_failure(self.pool.now_ms(), format!("key error: {reason}"));
        if self.pool.suspect(key.id())
            && self
                .key_checks
                .try_send((Arc::clone(key), reason.to_owned()))
                .is_err()
        {
            // The check queue is full: the key comes back after the hold and is checked again
            // the next time it fails.
            tracing::warn!(key_id = %key.id(), "key check queue full");
        }
    }

    /// Sends `outgoing` with the first key that succeeds, trying up to `MAX_RETRIES` other keys
    /// after a failure another key may not have.
    pub async fn send_with_failover(
        &self,
        outgoing: &Outgoing,
    ) -> Result<Committed, UpstreamFailure> {
        self.send_with_failover_after(outgoing, &mut Attempts::default())
            .await
    }

    /// [`Relay::send_with_failover`] continuing after the keys in `tried` (which it extends), for
    /// a caller that found a committed answer unusable and moves on to another key.
    pub async fn send_with_failover_after(
        &self,
        outgoing: &Outgoing,
        attempts: &mut Attempts,
    ) -> Result<Committed, UpstreamFailure> {
        let mut last_failure = None;
        let mut lease_deadline = None;
        let tried = &mut attempts.tried;
        if tried.is_empty() {
            self.pool.retry_budget().deposit();
            // A large request freed its body and its parsed copy by now: back to the system
            // before it waits, instead of kept resident through the wait (see `memory`).
            if outgoing.body.len() >= crate::service::memory::GIVE_BACK_FROM {
                crate::service::memory::give_back_freed();
            }
        }
        while tried.len() <= self.upstream.max_retries() as usize {
            // A retry spends from the shared budget, so a storm does not multiply traffic.
            if !tried.is_empty() && !self.pool.retry_budget().try_withdraw(self.pool.now_ms()) {
                tracing::warn!("retry budget spent: not retrying");
                break;
            }
            let pick = self.pool.pick(&PickRequest {
                model: outgoing.model.as_deref(),
                project: outgoing.project.as_deref(),
                tried,
            });
            let key = match pick {
                Ok(key) => key,
                // Several instances share the quota and this one holds no lease for it now:
                // fetch one (a database round trip) and pick again, until the shared quota is
                // found used up (the pick then says so) or the wait runs out.
                Err(PickError::AwaitingLease)
                    if self.cluster.is_some()
                        && *lease_deadline.get_or_insert_with(|| {
                            std::time::Instant::now() + crate::service::cluster::LEASE_WAIT
                        }) > std::time::Instant::now() =>
                {
                    if let Some(cluster) = &self.cluster {
                        cluster.refill_now().await;
                    }
                    continue;
                }
                Err(PickError::AwaitingLease) => {
                    return Err(UpstreamFailure::Exhausted {
                        retry_after: Duration::from_secs(1),
                        daily: false,
                        last_answer: None,
                    });
                }
                Err(PickError::Exhausted { retry_after, daily }) => {
                    let last_answer = match last_failure {
                        Some(UpstreamFailure::Answered { status, body, .. })
                            if status == StatusCode::TOO_MANY_REQUESTS =>
                        {
                            Some(body)
                        }
                        _ => None,
                    };
                    return Err(UpstreamFailure::Exhausted {
                        retry_after,
                        daily,
                        last_answer,
                    });
                }
                Err(PickError::Capacity {
                    retry_after,
                    status,
                }) => {
                    return Err(UpstreamFailure::Capacity {
                        retry_after,
                        status,
                    });
                }
                Err(error) => {
                    return Err(last_failure.unwrap_or_else(|| self.no_usable_key(error, outgoing)));
                }
            };
            let is_retry = !tried.is_empty();
            tried.push(key.id());
            let sent_at = std::time::Instant::now();
            let builder = self
                .upstream
                .request(
                    outgoing.method.clone(),
                    &outgoing.path_and_query,
                    outgoing.headers.clone(),
                    &key,
                )
                .body(outgoing.body.clone());
            let response = match self.upstream.send(builder, outgoing.streaming).await {
                Ok(response) => response,
                Err(failure) => {
                    attempts.trouble = Some("connection");
                    crate::service::metrics::record_attempt("connection", None, is_retry);
                    self.learn(&key, outgoing.model.as_deref(), &Failure::Connection);
                    last_failure = Some(failure);
                    continue;
                }
            };
            let status = response.status();
            let response_time = Some(sent_at.elapsed());
            if status.is_success() {
                crate::service::metrics::record_attempt("success", response_time, is_retry);
                self.pool
                    .record_success(key.id(), outgoing.model.as_deref());
                return Ok(Committed { response, key });
            }
            let headers = allowlisted(response.headers(), &RELAYED_RESPONSE_HEADERS);
            let body = read_error_body(response, &key).await;
            let about = classify(status.as_u16(), &body);
            attempts.trouble = Some(about.outcome());
            crate::service::metrics::record_attempt(about.outcome(), response_time, is_retry);
            self.learn_from(&key, outgoing.model.as_deref(), &about);
            tracing::info!(
                key_id = %key.id(),
                status = status.as_u16(),
                about = about.outcome(),
                "upstream answered with an error"
            );
            let answered = UpstreamFailure::Answered {
                status,
                headers,
                body,
            };
            if !about.retry_on_another_key() {
                return Err(answered);
            }
            last_failure = Some(answered);
        }
        Err(last_failure.unwrap_or_else(|| self.no_usable_key(PickError::AllTried, outgoing)))
    }

    /// Reads a committed one-JSON answer whole (bounded) before anything is relayed, so that
    /// one cut short (a reset connection), malformed, or empty (for content answers) is retried
    /// on another key and never reaches the client as a broken 200. The bytes are the
    /// upstream's, unchanged.
    pub async fn read_whole_answer(
        &self,
        outgoing: &Outgoing,
        mut committed: Committed,
        attempts: &mut Attempts,
        kind: AnswerKind,
        limit: usize,
    ) -> Result<WholeAnswer, UpstreamFailure> {
        loop {
            match read_answer(committed, kind, limit).await {
                Ok(whole) => return Ok(whole),
                Err(Unusable { key, trouble }) => {
                    committed = self
                        .after_unusable_answer(outgoing, &key, attempts, trouble)
                        .await?;
                }
            }
        }
    }

    /// A committed answer turned out unusable (`trouble`: empty or malformed): notes it on the
    /// key, and moves on to another key; when none is left, `trouble` is the answer.
    pub async fn after_unusable_answer(
        &self,
        outgoing: &Outgoing,
        key: &Arc<PoolKey>,
        attempts: &mut Attempts,
        trouble: UpstreamFailure,
    ) -> Result<Committed, UpstreamFailure> {
        let what = match trouble {
            UpstreamFailure::Empty => "an empty answer (no parts, no output tokens)",
            _ => "an answer cut short or malformed",
        };
        tracing::warn!(key_id = %key.id(), "the upstream gave {what}: trying another key");
        key.note_failure(self.pool.now_ms(), what);
        let outcome = match trouble {
            UpstreamFailure::Empty => "empty_answer",
            _ => "malformed_answer",
        };
        attempts.trouble = Some(outcome);
        crate::service::metrics::record_attempt(outcome, None, false);
        if matches!(trouble, UpstreamFailure::Malformed) {
            // A cut connection is the upstream's trouble, not the request's.
            self.learn(key, outgoing.model.as_deref(), &Failure::Connection);
        }
        match self.send_with_failover_after(outgoing, attempts).await {
            Ok(next) => Ok(next),
            // No key left to try: what this answer was is the answer.
            Err(UpstreamFailure::NoUsableKey(_)) => Err(trouble),
            Err(other) => Err(other),
        }
    }

    /// Reads a committed event stream up to its first whole event before anything is relayed
    /// (the stream's commit point). An error event (Gemini sends 429s and overloads that way),
    /// a stream that breaks or stays silent before its first event, and an empty first-and-last
    /// event are retried on another key, as the client has seen nothing yet.
    pub async fn open_first_event(
        &self,
        outgoing: &Outgoing,
        mut committed: Committed,
        attempts: &mut Attempts,
    ) -> Result<OpenedStream, UpstreamFailure> {
        loop {
            let key = Arc::clone(&committed.key);
            let status = committed.response.status();
            let headers = allowlisted(committed.response.headers(), &RELAYED_RESPONSE_HEADERS);
            let mut rest: UpstreamBody = committed.response.bytes_stream().boxed();
            let mut read = Vec::new();
            let mut decoder = SseDecoder::new();
            let first =
                first_sse_event(&mut rest, &mut decoder, &mut read, self.upstream.timeout()).await;
            let model = outgoing.model.as_deref();
            let trouble = match first {
                Some(data) => match self.first_event_error(&key, model, &data, attempts) {
                    None if is_empty_last_event(&data) => UpstreamFailure::Empty,
                    None => {
                        return Ok(OpenedStream {
                            status,
                            headers,
                            key,
                            read: Bytes::from(read),
                            first_event: data,
                            decoder,
                            rest,
                        });
                    }
                    Some(error) => {
                        let answered = UpstreamFailure::Answered {
                            status: StatusCode::from_u16(error.status)
                                .unwrap_or(StatusCode::BAD_GATEWAY),
                            headers: json_headers(),
                            body: Bytes::from(error.body),
                        };
                        if !error.about.retry_on_another_key() {
                            return Err(answered);
                        }
                        tracing::info!(key_id = %key.id(), "the stream's first event was an error: trying another key");
                        match self.send_with_failover_after(outgoing, attempts).await {
                            Ok(next) => {
                                committed = next;
                                continue;
                            }
                            Err(UpstreamFailure::NoUsableKey(_)) => return Err(answered),
                            Err(other) => return Err(other),
                        }
                    }
                },
                // It ended, broke or stayed silent before its first event.
                None => {
                    tracing::info!(key_id = %key.id(), "the stream failed before its first event: trying another key");
                    attempts.trouble = Some("connection");
                    self.learn(&key, model, &Failure::Connection);
                    match self.send_with_failover_after(outgoing, attempts).await {
                        Ok(next) => {
                            committed = next;
                            continue;
                        }
                        Err(UpstreamFailure::NoUsableKey(_)) => {
                            return Err(UpstreamFailure::Unreachable);
                        }
                        Err(other) => return Err(other),
                    }
                }
            };
            committed = self
                .after_unusable_answer(outgoing, &key, attempts, trouble)
                .await?;
        }
    }

    /// Judges the first event of a 200 stream: `None` for an ordinary event; for an error event,
    /// what it says, after the pool has learned from it. Nothing has reached the client yet, so
    /// it counts like an error status.
    fn first_event_error(
        &self,
        key: &Arc<PoolKey>,
        model: Option<&str>,
        data: &str,
        attempts: &mut Attempts,
    ) -> Option<EventError> {
        // Ordinary events never start with `{"error"`: skip parsing them whole.
        if !data.trim_start().starts_with("{\"error\"") && !data.contains("\"error\"") {
            return None;
        }
        let error = serde_json::from_str::<serde_json::Value>(data)
            .ok()?
            .get("error")
            .cloned()?;
        let status = error
            .get("code")
            .and_then(serde_json::Value::as_u64)
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| (400..600).contains(code))
            .unwrap_or(500);
        let body = redact_secrets(
            &serde_json::json!({ "error": error }).to_string(),
            &[key.secret()],
        );
        let about = classify(status, body.as_bytes());
        attempts.trouble = Some(about.outcome());
        crate::service::metrics::record_attempt(about.outcome(), None, false);
        self.learn_from(key, model, &about);
        Some(EventError {
            status,
            body,
            about,
        })
    }

    /// Why no key could be picked, in words that are true: "not configured" only when no key
    /// is.
    fn no_usable_key(&self, error: PickError, outgoing: &Outgoing) -> UpstreamFailure {
        let census = self.pool.census();
        let message = match (&outgoing.project, error) {
            (Some(project), _) => format!(
                "No usable upstream key belongs to the project that owns the file or cached content this request names ({project})."
            ),
            (None, PickError::AllTried) => {
                "Every usable upstream key was tried and failed.".to_owned()
            }
            (None, _) if census.total == 0 => "No upstream key is configured.".to_owned(),
            (None, _) if census.checking > 0 => format!(
                "No upstream key can serve now: {} being checked after a key error, {} out of service, {} disabled.",
                census.checking, census.out_of_service, census.disabled
            ),
            (None, _) => format!(
                "No upstream key can serve: {} out of service (invalid, suspended or leaked) and {} disabled of {}.",
                census.out_of_service, census.disabled, census.total
            ),
        };
        UpstreamFailure::NoUsableKey(message)
    }
}

/// An answer that cannot be relayed, and the key that gave it.
pub struct Unusable {
    /// The key that gave it.
    pub key: Arc<PoolKey>,
    /// Empty or malformed.
    pub trouble: UpstreamFailure,
}

/// Reads `committed` whole (at most `limit` bytes) and checks it is `kind`; for a caller that
/// judges each key's answer afresh, moving on with [`Relay::after_unusable_answer`] (see
/// [`Relay::read_whole_answer`] for one that does not).
pub async fn read_answer(
    committed: Committed,
    kind: AnswerKind,
    limit: usize,
) -> Result<WholeAnswer, Unusable> {
    let key = Arc::clone(&committed.key);
    let status = committed.response.status();
    let headers = allowlisted(committed.response.headers(), &RELAYED_RESPONSE_HEADERS);
    let body = match read_limited(committed.response, limit).await {
        Ok(body) => body,
        Err(()) => {
            return Err(Unusable {
                key,
                trouble: UpstreamFailure::Malformed,
            });
        }
    };
    let (trouble, content) = judge(kind, &body);
    match trouble {
        None => Ok(WholeAnswer {
            status,
            headers,
            body,
            key,
            content,
        }),
        Some(trouble) => Err(Unusable { key, trouble }),
    }
}

/// Why a whole answer read as `kind` cannot be used, if it cannot; and, for
/// [`AnswerKind::ContentToTranslate`], the answer parsed.
fn judge(
    kind: AnswerKind,
    body: &[u8],
) -> (Option<UpstreamFailure>, Option<GenerateContentResponse>) {
    match kind {
        AnswerKind::Json if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            (None, None)
        }
        AnswerKind::Json => (Some(UpstreamFailure::Malformed), None),
        AnswerKind::Content => (content_trouble(body), None),
        AnswerKind::ContentToTranslate => {
            match serde_json::from_slice::<GenerateContentResponse>(body) {
                Ok(answer) if answer.is_empty_answer() => (Some(UpstreamFailure::Empty), None),
                Ok(answer) => (None, Some(answer)),
                // Not of the shape the translation reads: judged as a relayed answer is, so
                // that what is retried on another key, and what is not, stays the same.
                Err(_) => (content_trouble(body), None),
            }
        }
    }
}

/// Why a `GenerateContentResponse` cannot be relayed (empty, or not of its shape), if it cannot.
fn content_trouble(body: &[u8]) -> Option<UpstreamFailure> {
    match AnswerShape::read(body) {
        Some(shape) if !shape.is_empty() => None,
        Some(_) => Some(UpstreamFailure::Empty),
        None => Some(UpstreamFailure::Malformed),
    }
}

/// What a failure was, in a few words for the operator.
fn describe(failure: &Failure) -> String {
    match failure {
        Failure::KeyInvalid { reason } => format!("out of service: {reason}"),
        Failure::Quota(quota) => match quota.window {
            pool::QuotaWindow::Day => "daily quota used up".to_owned(),
            pool::QuotaWindow::Minute => "per-minute quota used up".to_owned(),
        },
        Failure::Capacity { status } => format!("upstream capacity ({status})"),
        Failure::Connection => "no answer from the upstream".to_owned(),
    }
}

/// Whether a stream's first event is also its last and empty: a candidate that finished
/// without parts or output tokens.
fn is_empty_last_event(data: &str) -> bool {
    AnswerShape::read(data.as_bytes()).is_some_and(|shape| shape.is_finished() && shape.is_empty())
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    headers
}

/// Reads an upstream body up to `limit` bytes; `Err` when it breaks or is larger.
async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, ()> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if body.len() + chunk.len() > limit {
            tracing::warn!(limit, "an upstream answer was larger than the limit");
            return Err(());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Reads `body` until its first whole SSE event (or `limit` passes, or it ends or breaks first)
/// and returns that event's data; every byte read is kept in `read`.
async fn first_sse_event(
    body: &mut UpstreamBody,
    decoder: &mut SseDecoder,
    read: &mut Vec<u8>,
    limit: Duration,
) -> Option<String> {
    let first = tokio::time::timeout(limit, async {
        loop {
            if let Some(event) = decoder.next_event() {
                return Some(event.data);
            }
            if decoder.is_overflowed() {
                return None;
            }
            match body.next().await {
                Some(Ok(bytes)) => {
                    decoder.push(&bytes);
                    read.extend_from_slice(&bytes);
                }
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    first.ok().flatten()
}

/// One step of an opened upstream stream, for the routes that translate it.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// An event's data (the first event comes first).
    Data(String),
    /// The upstream ended its stream.
    Finished,
    /// The stream cannot go on.
    Fault(StreamFault),
}

/// Why an upstream stream ended before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// An event was larger than [`translate::gemini::sse::MAX_EVENT_BYTES`].
    Oversized,
    /// The shutdown grace period is over.
    ShuttingDown,
    /// The connection failed, or the upstream went silent too long.
    Broken,
}

impl StreamFault {
    /// What to tell the client.
    pub fn message(self) -> String {
        match self {
            Self::Oversized => format!(
                "An upstream event was larger than {} MiB; the stream was ended.",
                translate::gemini::sse::MAX_EVENT_BYTES / (1024 * 1024)
            ),
            Self::ShuttingDown => {
                "The gateway is shutting down; the stream was ended. Retry the request.".to_owned()
            }
            Self::Broken => "The upstream stream failed or went silent.".to_owned(),
        }
    }
}

/// The events of an opened stream, one at a time as they arrive, ending with `Finished` or a
/// `Fault` (after which nothing follows).
pub fn upstream_events(
    opened: OpenedStream,
    mut ends: StreamEnds,
) -> impl futures_util::Stream<Item = UpstreamEvent> + Send {
    async_stream::stream! {
        let OpenedStream { mut decoder, first_event, mut rest, .. } = opened;
        yield UpstreamEvent::Data(first_event);
        loop {
            match ends.next(&mut rest).await {
                Ok(Some(Ok(bytes))) => {
                    decoder.push(&bytes);
                    while let Some(event) = decoder.next_event() {
                        yield UpstreamEvent::Data(event.data);
                    }
                    if decoder.is_overflowed() {
                        yield UpstreamEvent::Fault(StreamFault::Oversized);
                        break;
                    }
                }
                Ok(None) => {
                    // A last event without its blank line is still an event.
                    let tail = String::from_utf8_lossy(decoder.pending()).trim().to_owned();
                    if let Some(data) = tail.strip_prefix("data:") {
                        yield UpstreamEvent::Data(data.trim_start().to_owned());
                    }
                    yield UpstreamEvent::Finished;
                    break;
                }
                Err(true) => {
                    yield UpstreamEvent::Fault(StreamFault::ShuttingDown);
                    break;
                }
                Ok(Some(Err(_))) | Err(false) => {
                    yield UpstreamEvent::Fault(StreamFault::Broken);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a judgement says, comparable: `None` usable, else the trouble's name.
    fn verdict(trouble: Option<&UpstreamFailure>) -> Option<&'static str> {
        trouble.map(|trouble| match trouble {
            UpstreamFailure::Empty => "empty",
            UpstreamFailure::Malformed => "malformed",
            _ => "other",
        })
    }

    #[test]
    fn an_answer_read_for_translation_is_judged_as_a_relayed_one_and_parsed_when_usable() {
        let cases: [(&str, Option<&str>); 8] = [
            (
                r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}"#,
                None,
            ),
            // No parts, no output tokens, stopped without a reason of its own: empty.
            (
                r#"{"candidates":[{"content":{"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3}}"#,
                Some("empty"),
            ),
            (r#"{"candidates":[]}"#, Some("empty")),
            // Stopped for a reason of its own, or the prompt blocked: a real answer.
            (
                r#"{"candidates":[{"content":{"role":"model"},"finishReason":"MAX_TOKENS"}]}"#,
                None,
            ),
            (
                r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#,
                None,
            ),
            (
                r#"{"candidates":[{"content":{"parts":[{"te"#,
                Some("malformed"),
            ),
            (r#"[1,2]"#, Some("malformed")),
            (r#"{"candidates":"none"}"#, Some("malformed")),
        ];
        for (body, expected) in cases {
            let (relayed, none) = judge(AnswerKind::Content, body.as_bytes());
            assert!(none.is_none(), "{body}");
            let (translated, content) = judge(AnswerKind::ContentToTranslate, body.as_bytes());
            assert_eq!(verdict(relayed.as_ref()), expected, "{body}");
            assert_eq!(verdict(translated.as_ref()), expected, "{body}");
            assert_eq!(content.is_some(), expected.is_none(), "{body}");
        }
        let (_, content) = judge(AnswerKind::ContentToTranslate, cases[0].0.as_bytes());
        let text = content
            .and_then(|answer| answer.candidates.into_iter().next())
            .and_then(|candidate| candidate.content)
            .map(|content| format!("{:?}", content.parts));
        assert!(text.is_some_and(|parts| parts.contains("Hi")));
    }

    #[test]
    fn an_answer_the_translation_cannot_read_but_a_relay_could_is_usable_unparsed() {
        // A part of no kind the translation knows: relayed as it came, it would be usable; for
        // translation it is not parsed here, and the handler answers why (as it did before).
        let body = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":5}]},"finishReason":"STOP"}],"usageMetadata":{"candidatesTokenCount":1}}"#;
        let (relayed, _) = judge(AnswerKind::Content, body.as_bytes());
        let (translated, content) = judge(AnswerKind::ContentToTranslate, body.as_bytes());
        assert!(relayed.is_none());
        assert!(translated.is_none());
        assert!(content.is_none());
        assert!(serde_json::from_slice::<GenerateContentResponse>(body.as_bytes()).is_err());
    }
}
