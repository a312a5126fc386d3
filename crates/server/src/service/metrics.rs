//! Prometheus metrics, recorded here and served at `/metrics` (`http::metrics`). Labels stay low-cardinality: the route template (never the
//! raw path), a status class, an upstream key's id (never the key), and a model id only when it
//! looks like a Google model and is among the first 64 seen (others are `other`), so a client
//! sending random model names cannot grow the series without bound.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static MODELS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
/// At most this many model labels.
pub(crate) const MAX_MODEL_LABELS: usize = 64;

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Installs the process-wide recorder once (later calls reuse it) and starts its upkeep.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let mut ticker = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        ticker.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "gateway_requests_total",
        "Requests answered, by route template and status class."
    );
    metrics::describe_histogram!(
        "gateway_request_duration_seconds",
        "Time from request to the end of the answer."
    );
    metrics::describe_histogram!(
        "gateway_time_to_first_byte_seconds",
        "Time from request to the first byte of a streamed answer."
    );
    metrics::describe_counter!(
        "gateway_upstream_attempts_total",
        "Upstream calls, by outcome."
    );
    metrics::describe_histogram!(
        "gateway_upstream_response_seconds",
        "Time from an upstream call to its response head."
    );
    metrics::describe_counter!(
        "gateway_retries_total",
        "Upstream calls made on another key after a failure."
    );
    metrics::describe_counter!(
        "gateway_tokens_total",
        "Tokens reported by the upstream, by model and kind."
    );
    metrics::describe_counter!(
        "gateway_key_requests_total",
        "Requests served, by upstream key id."
    );
    metrics::describe_gauge!("gateway_keys", "Upstream keys by state.");
    metrics::describe_gauge!(
        "gateway_upstream_http2_connections",
        "HTTP/2 connections to the upstream carrying requests now."
    );
    metrics::describe_gauge!(
        "gateway_upstream_http2_streams",
        "Requests open on HTTP/2 connections to the upstream."
    );
    metrics::describe_gauge!(
        "gateway_quota_remaining",
        "Requests left per project and model, this minute and today."
    );
}

/// A model id as a label: itself when it looks like a Google model and there is room, else
/// `other`.
pub fn model_label(model: &str) -> String {
    let known_family = [
        "gemini-",
        "gemma-",
        "text-embedding-",
        "embedding-",
        "imagen-",
        "veo-",
        "learnlm-",
    ]
    .iter()
    .any(|prefix| model.starts_with(prefix));
    if !known_family || model.len() > 64 {
        return "other".to_owned();
    }
    let seen = MODELS.get_or_init(|| Mutex::new(HashSet::new()));
    let Ok(mut seen) = seen.lock() else {
        return "other".to_owned();
    };
    if seen.contains(model) || (seen.len() < MAX_MODEL_LABELS && seen.insert(model.to_owned())) {
        model.to_owned()
    } else {
        "other".to_owned()
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        0..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A request record dropped because the accounting could not keep up or write.
pub fn record_accounting_dropped() {
    counter!("gateway_accounting_dropped_total").increment(1);
}

/// A client connection refused because `MAX_CONNECTIONS` were open.
pub fn record_refused_connection() {
    counter!("gateway_connections_refused_total").increment(1);
}

/// Handles of the per-request series, kept by each thread that records them.
///
/// Why: `counter!` with labels builds a key (allocating its labels) and looks it up in the
/// recorder's shared registry on every call; eight of those per request were a visible share of
/// the CPU per request. A handle is looked up once per thread and series, then incremented
/// directly. Bounded: routes and outcomes are `'static` templates, model labels are at most
/// [`MAX_MODEL_LABELS`] (+ `other`), key ids as many as there are keys.
#[derive(Default)]
struct Handles {
    requests: HashMap<(&'static str, &'static str), Counter>,
    durations: HashMap<&'static str, Histogram>,
    first_bytes: HashMap<&'static str, Histogram>,
    attempts: HashMap<&'static str, Counter>,
    upstream_response: Option<Histogram>,
    retries: Option<Counter>,
    /// By the model id as sent (up to [`MAX_CACHED_MODELS`]), each to its label's three series.
    tokens: HashMap<String, [Counter; 3]>,
    key_requests: HashMap<i64, Counter>,
}

/// Model ids whose token series a thread keeps handles for; past that (a client sending random
/// model names, all labelled `other`), the series are looked up per call.
const MAX_CACHED_MODELS: usize = 4 * MAX_MODEL_LABELS;

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Runs `record` with this thread's handles. Nothing is recorded, and so nothing cached, before
/// the recorder is installed: a handle taken then would record nowhere for ever. Nor while the
/// thread is being torn down.
fn with_handles(record: impl FnOnce(&mut Handles)) {
    if !HANDLE.get().is_some_and(Option::is_some) {
        return;
    }
    let _ = HANDLES.try_with(|handles| {
        if let Ok(mut handles) = handles.try_borrow_mut() {
            record(&mut handles);
        }
    });
}

fn token_series(model: &str) -> [Counter; 3] {
    let label = model_label(model);
    [
        counter!("gateway_tokens_total", "model" => label.clone(), "kind" => "prompt"),
        counter!("gateway_tokens_total", "model" => label.clone(), "kind" => "completion"),
        counter!("gateway_tokens_total", "model" => label, "kind" => "thoughts"),
    ]
}

/// Records a finished request.
pub fn record_request(
    route: &'static str,
    status: u16,
    duration: Duration,
    first_byte: Option<Duration>,
) {
    with_handles(|handles| {
        let class = status_class(status);
        handles
            .requests
            .entry((route, class))
            .or_insert_with(
                || counter!("gateway_requests_total", "route" => route, "status_class" => class),
            )
            .increment(1);
        handles
            .durations
            .entry(route)
            .or_insert_with(|| histogram!("gateway_request_duration_seconds", "route" => route))
            .record(duration.as_secs_f64());
        if let Some(first_byte) = first_byte {
            handles
                .first_bytes
                .entry(route)
                .or_insert_with(
                    || histogram!("gateway_time_to_first_byte_seconds", "route" => route),
                )
                .record(first_byte.as_secs_f64());
        }
    });
}

/// Records the tokens of a request.
pub fn record_tokens(
    model: &str,
    key_id: Option<i64>,
    prompt: u64,
    completion: u64,
    thoughts: u64,
) {
    with_handles(|handles| {
        let series = match handles.tokens.get(model) {
            Some(series) => series.clone(),
            None => {
                let series = token_series(model);
                if handles.tokens.len() < MAX_CACHED_MODELS {
                    handles.tokens.insert(model.to_owned(), series.clone());
                }
                series
            }
        };
        let [prompt_series, completion_series, thoughts_series] = series;
        prompt_series.increment(prompt);
        completion_series.increment(completion);
        thoughts_series.increment(thoughts);
        if let Some(id) = key_id {
            handles
                .key_requests
                .entry(id)
                .or_insert_with(
                    || counter!("gateway_key_requests_total", "key_id" => id.to_string()),
                )
                .increment(1);
        }
    });
}

/// Records one upstream call: `success`, `rate_limited`, `key_invalid`, `server_error`,
/// `connection` or `request_error`.
pub fn record_attempt(outcome: &'static str, response_time: Option<Duration>, retry: bool) {
    with_handles(|handles| {
        handles
            .attempts
            .entry(outcome)
            .or_insert_with(|| counter!("gateway_upstream_attempts_total", "outcome" => outcome))
            .increment(1);
        if let Some(time) = response_time {
            handles
                .upstream_response
                .get_or_insert_with(|| histogram!("gateway_upstream_response_seconds"))
                .record(time.as_secs_f64());
        }
        if retry {
            handles
                .retries
                .get_or_insert_with(|| counter!("gateway_retries_total"))
                .increment(1);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        assert_eq!(model_label("gpt-4o"), "other");
        assert_eq!(model_label("gemini-2.5-flash"), "gemini-2.5-flash");
        for i in 0..200 {
            let label = model_label(&format!("gemini-fake-{i}"));
            assert!(label == "other" || label.starts_with("gemini-fake-"));
        }
        let seen = MODELS.get().unwrap().lock().unwrap().len();
        assert!(seen <= MAX_MODEL_LABELS);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
    }
}
