//! The upstream side: one shared HTTP client (HTTP/2 in lanes) and the header allowlists. The
//! failover across keys is in `relay`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;
use futures_util::StreamExt;
use pool::PoolKey;

use crate::config::Config;

/// Request headers a client may send upstream. Everything else (credentials, cookies, proxy
/// and forwarding headers, `accept-encoding`) stays at the gateway.
pub static FORWARDED_REQUEST_HEADERS: [HeaderName; 10] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("accept"),
    HeaderName::from_static("user-agent"),
    HeaderName::from_static("x-goog-api-client"),
    HeaderName::from_static("x-goog-upload-protocol"),
    HeaderName::from_static("x-goog-upload-command"),
    HeaderName::from_static("x-goog-upload-offset"),
    HeaderName::from_static("x-goog-upload-header-content-length"),
    HeaderName::from_static("x-goog-upload-header-content-type"),
    HeaderName::from_static("x-goog-upload-file-name"),
];

/// Response headers relayed back to the client. The upload URLs are rewritten on the way.
pub static RELAYED_RESPONSE_HEADERS: [HeaderName; 8] = [
    HeaderName::from_static("content-type"),
    HeaderName::from_static("content-disposition"),
    HeaderName::from_static("retry-after"),
    HeaderName::from_static("x-goog-upload-status"),
    HeaderName::from_static("x-goog-upload-url"),
    HeaderName::from_static("x-goog-upload-control-url"),
    HeaderName::from_static("x-goog-upload-chunk-granularity"),
    HeaderName::from_static("x-goog-upload-size-received"),
];

/// The largest error body read from the upstream (to classify and redact it).
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

/// Copies the allowlisted headers of `from`. The names are `HeaderName`s made once, not text:
/// looked up by text, each name was parsed and hashed afresh, 1 % of a request's instructions.
pub fn allowlisted(from: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in names {
        for value in from.get_all(name) {
            headers.append(name.clone(), detached(value));
        }
    }
    headers
}

/// A copy of `value` that owns its bytes, sensitive as it was. A copy, not a clone: a client's
/// header value is a slice of hyper's read buffer, which would stay allocated, beside the next
/// one, as long as the request waits on the upstream. (A value hyper parsed always copies; one
/// that would not is cloned.)
pub fn detached(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// Streams one HTTP/2 connection carries before the next lane opens another. Google's front
/// ends advertise `SETTINGS_MAX_CONCURRENT_STREAMS` = 100, and hyper's client never opens a
/// second connection to an origin (RFC 9113 §9.1 says a client SHOULD NOT): past the limit,
/// new requests would queue, silently, behind streams that may last minutes.
const STREAMS_PER_LANE: usize = 100;

/// Lanes at most: 25,600 concurrent upstream streams over HTTP/2.
const MAX_LANES: usize = 256;

/// One connection pool of the upstream client, and the requests it carries now.
struct Lane {
    client: reqwest::Client,
    open: Arc<AtomicUsize>,
}

/// A request's place on a lane, given back when its answer has been read to the end or dropped.
struct LaneTicket(Option<Arc<AtomicUsize>>);

impl Drop for LaneTicket {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An upstream answer's body that holds its request's lane ticket.
struct TicketedBody {
    body: reqwest::Body,
    _ticket: LaneTicket,
}

impl http_body::Body for TicketedBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, reqwest::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request to the upstream, ready to send.
pub struct UpstreamRequest {
    builder: reqwest::RequestBuilder,
    ticket: LaneTicket,
}

impl UpstreamRequest {
    /// Sets the body.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        Self {
            builder: self.builder.body(body),
            ticket: self.ticket,
        }
    }
}

/// The shared upstream client and where it points.
///
/// Over HTTP/1.1 one connection pool serves every request (it opens connections as needed).
/// Over HTTP/2 (https with ALPN, or h2c by `UPSTREAM_H2C`) every pool keeps one connection, so
/// the client is a row of lanes, each a pool of its own, opened one by one as the ones before
/// fill up with `STREAMS_PER_LANE` open requests.
pub struct Upstream {
    first_lane: Lane,
    more_lanes: Box<[std::sync::OnceLock<Lane>]>,
    multiplexed: bool,
    h2c: bool,
    proxy: Option<url::Url>,
    /// The upstream origin, parsed once (a URL parsed per request, host and IDNA checks
    /// included, was 3 % of the gateway's CPU time).
    base: url::Url,
    /// Its path without the trailing `/`, which every request path goes below.
    base_path: String,
    timeout: Duration,
    max_retries: std::sync::atomic::AtomicU32,
}

/// Why no usable answer came back.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// No key could be picked; the message says why, truthfully.
    NoUsableKey(String),
    /// The last attempt could not connect.
    Unreachable,
    /// The last attempt timed out before the response head.
    Timeout,
    /// Every project that could serve is out of quota for the model.
    Exhausted {
        /// When the first one frees up.
        retry_after: Duration,
        /// Whether that is the Pacific-midnight reset.
        daily: bool,
        /// The last upstream 429 met on the way, if any (its message is passed on).
        last_answer: Option<Bytes>,
    },
    /// Every project that could serve is cooling after capacity failures (the upstream is
    /// overloaded or throttling); one probe per second goes through.
    Capacity {
        /// When the next probe may go.
        retry_after: Duration,
        /// What the upstream answered (429 or a 5xx).
        status: u16,
    },
    /// Every answer was empty (a 200 with nothing in it).
    Empty,
    /// Every answer was cut short or malformed.
    Malformed,
    /// The upstream answered with an error that is relayed (after redaction).
    Answered {
        /// Its status.
        status: axum::http::StatusCode,
        /// Its allowlisted headers.
        headers: HeaderMap,
        /// Its body, with keys redacted.
        body: Bytes,
    },
}

/// A request to send upstream, with any key.
#[derive(Debug)]
pub struct Outgoing {
    /// HTTP method.
    pub method: Method,
    /// Path and query below the upstream origin, such as `v1beta/models/m:generateContent`.
    pub path_and_query: String,
    /// Allowlisted request headers.
    pub headers: HeaderMap,
    /// The body (buffered, so that another key can be tried).
    pub body: Bytes,
    /// Whether the answer is a stream (bounded by an idle timeout, not a total one).
    pub streaming: bool,
    /// The model the request uses, if any.
    pub model: Option<String>,
    /// Only keys of this project may serve the request.
    pub project: Option<Arc<str>>,
}

/// An upstream success, and the key that got it.
pub struct Committed {
    /// The upstream response; its body is not read yet.
    pub response: reqwest::Response,
    /// The key that served the request.
    pub key: Arc<PoolKey>,
}

impl Upstream {
    /// Builds the upstream client: connection reuse, `TCP_NODELAY`, optional proxy; its first
    /// lane is built now, so that a bad proxy setting fails at start.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            first_lane: Lane {
                client: build_client(config.outbound_proxy.as_ref(), config.upstream_h2c)?,
                open: Arc::default(),
            },
            more_lanes: (1..MAX_LANES).map(|_| std::sync::OnceLock::new()).collect(),
            // https may negotiate HTTP/2 by ALPN; plain http speaks it only when told to.
            multiplexed: config.upstream_h2c || config.upstream_base_url.scheme() == "https",
            h2c: config.upstream_h2c,
            proxy: config.outbound_proxy.clone(),
            base: config.upstream_base_url.clone(),
            base_path: config
                .upstream_base_url
                .path()
                .trim_end_matches('/')
                .to_owned(),
            timeout: config.upstream_timeout,
            max_retries: std::sync::atomic::AtomicU32::new(config.max_retries),
        })
    }

    /// The longest a stream may stay silent, and a non-streaming call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Other keys tried for one request before giving up.
    pub fn max_retries(&self) -> u32 {
        self.max_retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the number of retries while running.
    pub fn set_max_retries(&self, retries: u32) {
        self.max_retries
            .store(retries, std::sync::atomic::Ordering::Relaxed);
    }

    /// A request to `path_and_query` with `key` in `x-goog-api-key` (never in the URL, where it
    /// would end up in logs).
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        key: &PoolKey,
    ) -> UpstreamRequest {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        url.set_path(&format!("{}/{path}", self.base_path));
        url.set_query(query);
        let (client, ticket) = self.lane();
        UpstreamRequest {
            builder: client
                .request(method, url)
                .headers(headers)
                .header("x-goog-api-key", key.secret()),
            ticket,
        }
    }

    /// The first lane with room for one more stream, opened if it is new; with every lane full,
    /// the first (its connection queues the request).
    fn lane(&self) -> (&reqwest::Client, LaneTicket) {
        let first = &self.first_lane;
        if !self.multiplexed {
            // Over HTTP/1.1 the one pool opens as many connections as needed.
            return (&first.client, LaneTicket(None));
        }
        let lanes = std::iter::once(first).chain(self.more_lanes.iter().map(|slot| {
            slot.get_or_init(|| Lane {
                client: build_client(self.proxy.as_ref(), self.h2c)
                    .unwrap_or_else(|_| first.client.clone()),
                open: Arc::default(),
            })
        }));
        for lane in lanes {
            if lane.open.fetch_add(1, Ordering::Relaxed) < STREAMS_PER_LANE {
                return (&lane.client, LaneTicket(Some(Arc::clone(&lane.open))));
            }
            lane.open.fetch_sub(1, Ordering::Relaxed);
        }
        (&first.client, LaneTicket(None))
    }

    /// Connections to the upstream that carry requests now (HTTP/2 lanes in use), and the
    /// requests on them: for the metrics.
    pub fn lanes_in_use(&self) -> (usize, usize) {
        std::iter::once(&self.first_lane)
            .chain(self.more_lanes.iter().filter_map(std::sync::OnceLock::get))
            .map(|lane| lane.open.load(Ordering::Relaxed))
            .filter(|&open| open > 0)
            .fold((0, 0), |(lanes, open), now| (lanes + 1, open + now))
    }

    /// Sends a request whose answer is bounded by the total timeout (non-streaming) or only up
    /// to the response head (streaming, which then has an idle timeout).
    pub async fn send(
        &self,
        request: UpstreamRequest,
        streaming: bool,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        let UpstreamRequest { builder, ticket } = request;
        let result = if streaming {
            tokio::time::timeout(self.timeout, builder.send())
                .await
                .map_err(|_| UpstreamFailure::Timeout)?
        } else {
            builder.timeout(self.timeout).send().await
        };
        let response = result.map_err(|error| {
            tracing::warn!(error = %without_url(&error), "upstream request failed");
            if error.is_timeout() {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::Unreachable
            }
        })?;
        if ticket.0.is_none() || response.version() != reqwest::Version::HTTP_2 {
            return Ok(response);
        }
        // The stream stays open on its lane until its body is read to the end or dropped.
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        let body = reqwest::Body::wrap(TicketedBody {
            body,
            _ticket: ticket,
        });
        Ok(reqwest::Response::from(http::Response::from_parts(
            parts, body,
        )))
    }
}

/// One connection pool to the upstream.
fn build_client(proxy: Option<&url::Url>, h2c: bool) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        // A connection that dies without a word would hold every stream on it until their idle
        // timeouts: HTTP/2 pings find it within 40 s.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gemini-pool/", env!("CARGO_PKG_VERSION")));
    if h2c {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(proxy) = proxy {
        builder = builder.proxy(reqwest::Proxy::all(proxy.as_str())?);
    }
    builder.build()
}

/// A reqwest error's text without its URL (which holds the path, never the key, but is noise).
fn without_url(error: &reqwest::Error) -> String {
    let mut error_text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        if !error_text.is_empty() {
            error_text.push_str(": ");
        }
        error_text.push_str(&current.to_string());
        source = current.source();
    }
    error_text
}

/// Reads an error body (bounded), and hides any key in it.
pub async fn read_error_body(response: reqwest::Response, key: &PoolKey) -> Bytes {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    Bytes::from(crate::service::classify::redact_secrets(
        &text,
        &[key.secret()],
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use pool::KeyId;

    fn upstream(base: &str) -> (Upstream, Arc<PoolKey>) {
        let config = Config::from_lookup(|name| match name {
            "GEMINI_BASE_URL" => Some(base.to_owned()),
            _ => None,
        })
        .unwrap();
        let pool = pool::Pool::new(vec![pool::KeyRecord {
            id: KeyId(1),
            secret: secrecy::SecretString::from("AIzaTest-key-1"),
            project: None,
            enabled: true,
            out_of_service: None,
        }]);
        (Upstream::new(&config).unwrap(), pool.key(KeyId(1)).unwrap())
    }

    fn url_of(upstream: &Upstream, key: &PoolKey, path_and_query: &str) -> String {
        let request = upstream.request(Method::POST, path_and_query, HeaderMap::new(), key);
        request.builder.build().unwrap().url().to_string()
    }

    #[test]
    fn request_urls_go_below_the_base_path_with_their_query() {
        let (plain, key) = upstream("https://generativelanguage.googleapis.com");
        assert_eq!(
            url_of(
                &plain,
                &key,
                "v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            ),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let (prefixed, key) = upstream("http://127.0.0.1:9/gemini/");
        assert_eq!(
            url_of(&prefixed, &key, "v1beta/files?pageSize=10&pageToken=a%2Fb"),
            "http://127.0.0.1:9/gemini/v1beta/files?pageSize=10&pageToken=a%2Fb"
        );
        assert_eq!(
            url_of(&prefixed, &key, "upload/v1beta/files"),
            "http://127.0.0.1:9/gemini/upload/v1beta/files"
        );
    }

    #[test]
    fn plain_http_uses_no_lanes_and_https_counts_its_requests() {
        let (plain, key) = upstream("http://127.0.0.1:9");
        let request = plain.request(Method::GET, "v1beta/models", HeaderMap::new(), &key);
        assert!(request.ticket.0.is_none());
        let (tls, key) = upstream("https://generativelanguage.googleapis.com");
        let held: Vec<_> = (0..STREAMS_PER_LANE + 1)
            .map(|_| tls.request(Method::GET, "v1beta/models", HeaderMap::new(), &key))
            .collect();
        assert_eq!(tls.lanes_in_use(), (2, STREAMS_PER_LANE + 1));
        drop(held);
        assert_eq!(tls.lanes_in_use(), (0, 0));
    }
}
