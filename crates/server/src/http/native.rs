//! Native Gemini passthrough: `/v1beta/{…}` and the native forms under `/v1/{…}`.
//!
//! The request goes upstream as the client sent it, minus the client's key (removed from the
//! headers and the query) and plus a pool key in `x-goog-api-key`. Only allowlisted headers
//! cross in either direction. The request body is buffered (bounded), so that a failed attempt
//! can be retried on another key and owned resources it names can be found; the response body
//! streams back chunk by chunk as the upstream sends it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use memchr::memmem;
use serde::Deserialize;
use translate::gemini::native::{NativePath, PathError};
use translate::gemini::sse::MAX_EVENT_BYTES;

use crate::http::error::{ApiError, Dialect};
use crate::service::accounting::{BodyKind, RequestMeter, UsageTap};

use crate::service::ownership;
use crate::service::relay::{
    AnswerKind, Attempts, StreamEnds, UpstreamBody, WholeAnswer, read_answer,
};
use crate::service::upstream::UpstreamFailure;
use crate::service::upstream::{
    Committed, FORWARDED_REQUEST_HEADERS, Outgoing, RELAYED_RESPONSE_HEADERS, allowlisted,
};
use crate::state::{App, AppState};

/// The largest request body the gateway reads (inline media may be up to 100 MB decoded,
/// which base64 makes about 134 MB).
pub const REQUEST_BODY_LIMIT: usize = 140 * 1024 * 1024;
/// A request body up to this size is copied out of hyper's read buffer (see [`read_body`]).
const SMALL_BODY: usize = 16 * 1024;
/// The largest upstream answer read whole (translated or checked before it is relayed).
pub const ANSWER_LIMIT: usize = 64 * 1024 * 1024;
/// The longest path relayed.
const MAX_PATH_BYTES: usize = 2048;

/// The largest upstream body buffered to read a created resource's name.
const CREATED_BODY_LIMIT: usize = 1024 * 1024;

/// Handler for every native route.
pub async fn relay(State(state): State<AppState>, request: Request) -> Response {
    let route = if request.uri().path().starts_with("/v1beta/") {
        "/v1beta/{*path}"
    } else {
        "/v1/{*path}"
    };
    let mut meter = Some(RequestMeter::start(
        &state.meter_sinks,
        route,
        client_id(&request),
    ));
    let response = relay_native(&state, request, &mut meter)
        .await
        .unwrap_or_else(|error| error.into_response_for(Dialect::Gemini));
    // Not moved into a relayed body: the request ends here.
    if let Some(mut meter) = meter {
        meter.set_status(response.status().as_u16());
    }
    response
}

/// The id of the client key that authenticated the request.
pub fn client_id(request: &Request) -> Option<i64> {
    crate::http::auth::client_of(request.extensions())
}

async fn relay_native(
    app: &AppState,
    request: Request,
    meter: &mut Option<RequestMeter>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let client = crate::http::auth::client(&parts.extensions);
    // Gemini paths are short; a huge one is an attack or a bug, not a request to relay.
    if parts.uri.path().len() > MAX_PATH_BYTES {
        return Err(ApiError::UriTooLong {
            limit: MAX_PATH_BYTES,
        });
    }
    let (version, rest) = split_version(parts.uri.path())
        .ok_or_else(|| ApiError::NotFound("Unknown route.".to_owned()))?;
    let path = NativePath::parse(rest).map_err(|error| match error {
        PathError::UnknownCollection(_) => ApiError::NotFound(error.to_string()),
        PathError::EmptySegment | PathError::IllegalCharacter => {
            ApiError::BadRequest(format!("Invalid path: {error}."))
        }
    })?;
    if let Some(model) = path.model() {
        crate::http::auth::ensure_model_allowed(client.as_deref(), model)?;
        if let Some(meter) = meter.as_mut() {
            meter.set_model(model);
        }
    }
    let body = read_body(body, REQUEST_BODY_LIMIT).await?;
    check_json_body(&path, &body)?;
    // Before any key is picked: a resource of another client key never reaches the upstream.
    let client = client.map(|client| client.id);
    let project = app
        .owners
        .project_for(client, &ownership::resources_named(&path, &body)?)?;
    let asked = Asked {
        method: parts.method.clone(),
        sse: parts
            .uri
            .query()
            .is_some_and(|query| query.contains("alt=sse")),
        client,
    };
    let outgoing = Outgoing {
        method: parts.method.clone(),
        path_and_query: with_query(&format!("{version}/{}", path.as_str()), parts.uri.query()),
        headers: allowlisted(&parts.headers, &FORWARDED_REQUEST_HEADERS),
        body,
        streaming: path.is_streaming(),
        model: path.model().map(str::to_owned),
        project,
    };
    let mut attempts = Attempts::default();
    let model = outgoing.model.clone();
    // The head goes before the upstream is waited on (see `Asked`).
    drop(parts);
    let result = relay_answer(app, &asked, &path, &outgoing, &mut attempts, meter).await;
    if let Some(meter) = meter.as_mut() {
        meter.set_attempts(&attempts);
    }
    match result {
        Ok(Relayed::Done(response)) => Ok(response),
        Ok(Relayed::Other(committed)) => {
            Ok(relay_other(app, &asked, &path, committed, meter).await)
        }
        Err(failure) => upstream_failure_response(failure, model.as_deref()),
    }
}

/// What the relay needs of the client's request head once the body is read. The head itself is
/// dropped before the upstream is waited on: its URI and header values are slices of hyper's
/// first read buffer, and while one is held hyper reads on into a second buffer, so that a
/// connection waiting on the upstream would hold both (8 KiB more each, 80 MiB with ten
/// thousand streams opening).
struct Asked {
    method: Method,
    /// `alt=sse` in the query: events asked for.
    sse: bool,
    /// The client key's id.
    client: Option<i64>,
}

/// What [`relay_answer`] made of the upstream's answer.
enum Relayed {
    /// A finished response (a one-JSON answer, or a stream past its first event).
    Done(Response),
    /// Any other success, relayed as it comes.
    Other(Committed),
}

/// Sends the request with failover and reads the answer up to its commit point: one-JSON
/// answers whole, event streams up to their first event (see `relay`).
async fn relay_answer(
    app: &AppState,
    asked: &Asked,
    path: &NativePath,
    outgoing: &Outgoing,
    attempts: &mut Attempts,
    meter: &mut Option<RequestMeter>,
) -> Result<Relayed, UpstreamFailure> {
    let mut committed = app
        .relay
        .send_with_failover_after(outgoing, attempts)
        .await?;
    let kind = if path.action() == Some("generateContent") {
        AnswerKind::Content
    } else {
        AnswerKind::Json
    };
    // A one-JSON answer is read whole before anything is relayed. When it is unusable, the next
    // key's answer is judged afresh: a stream asked for may come back as one JSON from one key
    // (the upstream's choice) and as events from the next.
    let mut upstream_sse = content_type_is(committed.response.headers(), "text/event-stream");
    while answers_in_one_json(
        path,
        &asked.method,
        asked.sse,
        upstream_sse,
        &committed.response,
    ) {
        match read_answer(committed, kind, ANSWER_LIMIT).await {
            Ok(whole) => return Ok(Relayed::Done(whole_json(whole, attempts, meter))),
            Err(unusable) => {
                committed = app
                    .relay
                    .after_unusable_answer(outgoing, &unusable.key, attempts, unusable.trouble)
                    .await?;
                upstream_sse = content_type_is(committed.response.headers(), "text/event-stream");
            }
        }
    }
    if path.is_streaming() && upstream_sse && committed.response.status().is_success() {
        let opened = app
            .relay
            .open_first_event(outgoing, committed, attempts)
            .await?;
        let tap = meter.take().map(|mut meter| {
            meter.set_key(&opened.key);
            meter.set_attempts(attempts);
            meter.set_status(opened.status.as_u16());
            meter.set_streamed();
            UsageTap::new(BodyKind::Sse, meter)
        });
        let first = futures_util::stream::once(async move { Ok(opened.read) });
        return Ok(Relayed::Done(relay_parts(
            opened.status,
            opened.headers,
            first.chain(opened.rest).boxed(),
            app.relay.stream_ends(),
            tap,
        )));
    }
    Ok(Relayed::Other(committed))
}

/// The response for a one-JSON answer read whole, metered.
fn whole_json(
    whole: WholeAnswer,
    attempts: &Attempts,
    meter: &mut Option<RequestMeter>,
) -> Response {
    let tap = meter.take().map(|mut meter| {
        meter.set_key(&whole.key);
        meter.set_attempts(attempts);
        meter.set_status(whole.status.as_u16());
        UsageTap::new(BodyKind::Json, meter)
    });
    whole_response(whole, tap)
}

/// Relays any other success (lists, files, operations, uploads' metadata) as it comes.
async fn relay_other(
    app: &AppState,
    asked: &Asked,
    path: &NativePath,
    committed: Committed,
    meter: &mut Option<RequestMeter>,
) -> Response {
    if let Some(meter) = meter.as_mut() {
        meter.set_key(&committed.key);
    }
    let client = asked.client;
    if path.creates_owned_resource(asked.method.as_str()) {
        return remember_created(app, committed, client).await;
    }
    if let Some(collection) = path.lists_owned_resources(asked.method.as_str()) {
        return own_listing(app, committed, client, collection).await;
    }
    if asked.method == Method::DELETE
        && let Some(resource) = path.owned_resource()
    {
        app.owners.forget_resource(resource);
    }
    let kind = match path.action() {
        Some("streamGenerateContent") if asked.sse => BodyKind::Sse,
        Some("generateContent" | "streamGenerateContent") => BodyKind::Json,
        _ => BodyKind::Other,
    };
    let tap = meter.take().map(|mut meter| {
        meter.set_status(committed.response.status().as_u16());
        if path.is_streaming() {
            meter.set_streamed();
        }
        UsageTap::new(kind, meter)
    });
    relay_response(committed.response, app.relay.stream_ends(), None, tap)
}

/// Whether the answer is one JSON document that the client can only use whole (the content
/// methods without streaming): such answers are read before they are relayed.
fn answers_in_one_json(
    path: &NativePath,
    method: &Method,
    asked_sse: bool,
    upstream_sse: bool,
    upstream: &reqwest::Response,
) -> bool {
    *method == Method::POST
        && match path.action() {
            Some("generateContent" | "countTokens" | "embedContent" | "batchEmbedContents") => true,
            // Events asked for (`alt=sse`) that come back as something else are one answer.
            Some("streamGenerateContent") => {
                asked_sse
                    && !upstream_sse
                    && upstream.status().is_success()
                    && content_type_is(upstream.headers(), "application/json")
            }
            _ => false,
        }
}

/// Whether `headers` declare a content type starting with `prefix`.
fn content_type_is(headers: &HeaderMap, prefix: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(prefix))
}

/// A response holding a whole answer, its usage counted on the way out.
fn whole_response(whole: WholeAnswer, tap: Option<UsageTap>) -> Response {
    let body = match tap {
        Some(tap) => Body::from_stream(tap.wrap(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(whole.body)
        }))),
        None => Body::from(whole.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = whole.status;
    *response.headers_mut() = whole.headers;
    response
}

/// How deep a relayed JSON body may nest (serde_json's own limit for typed parsing).
const MAX_JSON_DEPTH: usize = 128;

/// Every Gemini request body is a JSON object in UTF-8, and the content methods need one:
/// anything else is refused here rather than after a round trip. The checks read the bytes and
/// keep nothing: UTF-8, nesting depth (skipping the token, serde_json does not limit depth), then
/// the syntax.
fn check_json_body(path: &NativePath, body: &[u8]) -> Result<(), ApiError> {
    if path.action() == Some("") {
        return Err(ApiError::BadRequest(
            "The path names no method after ':'.".to_owned(),
        ));
    }
    let needs_body = matches!(
        path.action(),
        Some(
            "generateContent"
                | "streamGenerateContent"
                | "countTokens"
                | "embedContent"
                | "batchEmbedContents"
                | "predict"
        )
    );
    if body.is_empty() && !needs_body {
        return Ok(());
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::BadRequest(
            "The request body is not valid UTF-8.".to_owned(),
        ));
    }
    if json_depth(body) > MAX_JSON_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "The request body nests deeper than {MAX_JSON_DEPTH} levels."
        )));
    }
    let is_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|first| *first == b'{');
    let parses = || {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        serde::de::IgnoredAny::deserialize(&mut deserializer)
            .and_then(|_| deserializer.end())
            .map_err(|error| error.to_string())
    };
    match (is_object, parses()) {
        (true, Ok(())) => Ok(()),
        (_, Err(error)) => Err(ApiError::BadRequest(format!(
            "The request body is not valid JSON: {error}."
        ))),
        (false, Ok(())) => Err(ApiError::BadRequest(
            "The request body must be a JSON object.".to_owned(),
        )),
    }
}

/// The deepest nesting of objects and arrays in `json` (brackets inside strings do not count).
fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Splits `/v1beta/rest` or `/v1/rest` into the version and the rest.
fn split_version(path: &str) -> Option<(&'static str, &str)> {
    translate::gemini::native::API_VERSIONS
        .iter()
        .find_map(|version| {
            path.strip_prefix('/')?
                .strip_prefix(version)?
                .strip_prefix('/')
                .map(|rest| (*version, rest))
        })
}

/// Query parameters of the Gemini API that are relayed; everything else stays at the gateway.
/// Credentials (`key`, `access_token`, `oauth_token`) and caller identities (`quotaUser`,
/// `userIp`) above all: a client key must never travel upstream in a URL, and a client must not
/// speak for the gateway's Google project.
const RELAYED_QUERY_PARAMETERS: [&str; 13] = [
    "alt",
    "$alt",
    "pageSize",
    "pageToken",
    "filter",
    "updateMask",
    "force",
    "fields",
    "$fields",
    "prettyPrint",
    "upload_id",
    "upload_protocol",
    "uploadType",
];

/// `path` with the allowlisted parameters of the client's `query`. Names are decoded once
/// before they are compared (`%6Bey` is `key`), and the kept pairs are encoded again.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return path.to_owned();
    };
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if RELAYED_QUERY_PARAMETERS.contains(&name.as_ref()) {
            kept.append_pair(&name, &value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", kept.finish())
    } else {
        path.to_owned()
    }
}

/// Reads a request body up to `limit` bytes, into one buffer.
///
/// A large body that comes in one chunk is kept as it is (no copy); a small one is copied (see
/// [`SMALL_BODY`]). One in several chunks is copied
/// into a buffer made once, of its declared length: gathering the chunks and joining them at the
/// end would hold the body twice at that moment, and a buffer growing by doubling copies it again
/// at each step (a request may carry a hundred megabytes of inline media).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || ApiError::PayloadTooLarge { limit };
    let declared = http_body::Body::size_hint(&body)
        .exact()
        .and_then(|length| usize::try_from(length).ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut chunks = body.into_data_stream();
    // The first chunk while it is the only one; then `joined`.
    let mut only: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(chunk) = chunks.next().await {
        // No length limit sits below this one, so a failed chunk is a body that ended before
        // its declared length, or a connection that failed: nothing about its size.
        let chunk = chunk.map_err(|_| {
            ApiError::BadRequest(
                "The request body could not be read: it ended before its declared length, or the connection failed.".to_owned(),
            )
        })?;
        let read = only.as_ref().map_or(joined.len(), Bytes::len);
        if chunk.len() > limit.saturating_sub(read) {
            return Err(too_large());
        }
        if let Some(first) = only.take() {
            // Sized when the second chunk arrives, not before (a client that declares a large
            // body and sends one chunk holds only that), and to at most `FIRST_RESERVE` beyond
            // what has come (one that sends two small chunks does not hold its whole declared
            // length). The declared length is within the limit; an allocation refused only
            // means the buffer grows as it goes.
            const FIRST_RESERVE: usize = 16 * 1024 * 1024;
            let arrived = first.len() + chunk.len();
            let wanted = declared
                .unwrap_or(0)
                .min(arrived.saturating_add(FIRST_RESERVE))
                .max(arrived);
            let _ = joined.try_reserve_exact(wanted);
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&chunk);
        } else if joined.is_empty() {
            only = Some(chunk);
        } else {
            joined.extend_from_slice(&chunk);
        }
    }
    Ok(match only {
        // A small body that came in one piece is most likely a slice of the read buffer that
        // also held the request head: a copy lets hyper reuse that buffer instead of keeping it
        // beside a new one while the upstream answers (see `Asked`). A large one is kept as it
        // is, since copying it would hold it twice.
        Some(chunk) if chunk.len() <= SMALL_BODY => Bytes::copy_from_slice(&chunk),
        Some(chunk) => chunk,
        None => Bytes::from(joined),
    })
}

/// Relays the creation of a file or cached content, remembering its owner.
async fn remember_created(app: &App, committed: Committed, client: Option<i64>) -> Response {
    let Committed { response, key } = committed;
    let status = response.status();
    let headers = allowlisted(response.headers(), &RELAYED_RESPONSE_HEADERS);
    let body = match read_limited(response, CREATED_BODY_LIMIT).await {
        Ok(body) => body,
        Err(error) => return error.into_response_for(Dialect::Gemini),
    };
    app.owners.remember_owner_of(&body, &key, client);
    buffered_response(status, headers, body)
}

/// Relays a `files` or `cachedContents` listing with only the caller's own entries.
async fn own_listing(
    app: &App,
    committed: Committed,
    client: Option<i64>,
    collection: &str,
) -> Response {
    let response = committed.response;
    let status = response.status();
    let headers = allowlisted(response.headers(), &RELAYED_RESPONSE_HEADERS);
    let body = read_limited(response, ownership::LISTING_LIMIT)
        .await
        .and_then(|body| Ok(app.owners.own_entries_only(client, collection, &body)?));
    match body {
        Ok(body) => buffered_response(status, headers, body),
        Err(error) => error.into_response_for(Dialect::Gemini),
    }
}

/// Reads an upstream body up to `limit` bytes.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::UpstreamUnreachable)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::Internal(format!(
                "an upstream answer was larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A response from a status, headers and a whole body.
pub fn buffered_response(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The client's answer for a failed upstream call about `model`, in Gemini's shape.
pub fn upstream_failure_response(
    failure: UpstreamFailure,
    model: Option<&str>,
) -> Result<Response, ApiError> {
    match failure {
        UpstreamFailure::Answered {
            status,
            mut headers,
            body,
        } => {
            // Every 429 and 503 says when to come back: the upstream's RetryInfo, or a second.
            if matches!(status.as_u16(), 429 | 503) && !headers.contains_key(header::RETRY_AFTER) {
                let wait = translate::gemini::UpstreamError::parse(&body)
                    .retry_delay
                    .unwrap_or(Duration::from_secs(1));
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::http::error::whole_seconds(wait)),
                );
            }
            Ok(buffered_response(status, headers, body))
        }
        UpstreamFailure::Exhausted {
            retry_after,
            daily,
            last_answer,
        } => {
            let seconds = crate::http::error::whole_seconds(retry_after);
            // The last upstream 429 is Gemini's own words; without one, say it in its shape.
            let body = last_answer.unwrap_or_else(|| {
                let scope = if daily { "daily" } else { "per-minute" };
                let model = model.unwrap_or("this model");
                let message = format!(
                    "Every project of {model} has used its {scope} quota until {}; retry in {seconds}s.",
                    crate::http::error::utc_time_after(retry_after)
                );
                Bytes::from(
                    serde_json::json!({"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}})
                        .to_string(),
                )
            });
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(buffered_response(
                StatusCode::TOO_MANY_REQUESTS,
                headers,
                body,
            ))
        }
        UpstreamFailure::Capacity {
            retry_after,
            status,
        } => Err(ApiError::Capacity {
            model: model.map(str::to_owned),
            status,
            retry_after,
        }),
        UpstreamFailure::Empty => Err(ApiError::EmptyAnswer),
        UpstreamFailure::Malformed => Err(ApiError::UpstreamInvalidResponse(
            "cut short or malformed".to_owned(),
        )),
        UpstreamFailure::NoUsableKey(message) => Err(ApiError::NoUsableKey(message)),
        UpstreamFailure::Unreachable => Err(ApiError::UpstreamUnreachable),
        UpstreamFailure::Timeout => Err(ApiError::UpstreamTimeout),
    }
}

/// Streams an upstream response to the client as it arrives: each chunk is written as soon as
/// it is read. When the client goes away the body is dropped, which drops the upstream
/// connection and stops the upstream work. A stream silent for longer than `idle` ends; on an
/// SSE stream, a read failure or that timeout is sent as a final `error` event rather than a
/// silent cut.
pub fn relay_response(
    upstream: reqwest::Response,
    ends: StreamEnds,
    header_override: Option<(HeaderValue, HeaderValue)>,
    tap: Option<UsageTap>,
) -> Response {
    let status = upstream.status();
    let mut headers = allowlisted(upstream.headers(), &RELAYED_RESPONSE_HEADERS);
    if let Some((url, control_url)) = header_override {
        headers.insert("x-goog-upload-url", url);
        headers.insert("x-goog-upload-control-url", control_url);
    }
    relay_parts(status, headers, upstream.bytes_stream().boxed(), ends, tap)
}

/// [`relay_response`] from a status, relayed headers and the body still to come.
fn relay_parts(
    status: StatusCode,
    headers: HeaderMap,
    body: UpstreamBody,
    ends: StreamEnds,
    tap: Option<UsageTap>,
) -> Response {
    let is_sse = content_type_is(&headers, "text/event-stream");
    let relayed = with_ends(body, ends, is_sse);
    let relayed: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> =
        if is_sse {
            Box::pin(whole_events(relayed))
        } else {
            Box::pin(relayed)
        };
    let body = match tap {
        Some(tap) => Body::from_stream(tap.wrap(relayed)),
        None => Body::from_stream(relayed),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Ends `stream` after `ends.idle` without a chunk, or at the shutdown cutoff; with `sse`,
/// failures become a last error event.
fn with_ends(
    stream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    ends: StreamEnds,
    sse: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let stream = Box::pin(stream);
    futures_util::stream::unfold(Some((stream, ends)), move |state| async move {
        let (mut stream, mut ends) = state?;
        let (code, status, message) = match ends.next(&mut stream).await {
            Ok(Some(Ok(chunk))) => return Some((Ok(chunk), Some((stream, ends)))),
            Ok(None) => return None,
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "upstream stream failed");
                (502, "UNAVAILABLE", "The upstream stream failed.".to_owned())
            }
            Err(true) => {
                tracing::warn!("a stream was cut at the end of the shutdown grace period");
                (
                    503,
                    "UNAVAILABLE",
                    "The gateway is shutting down; the stream was ended. Retry the request."
                        .to_owned(),
                )
            }
            Err(false) => {
                let idle = ends.idle.as_secs();
                tracing::warn!(idle_secs = idle, "upstream stream went silent");
                (
                    504,
                    "DEADLINE_EXCEEDED",
                    format!("The upstream stream sent nothing for {idle} s."),
                )
            }
        };
        if !sse {
            return Some((Err(std::io::Error::other(message)), None));
        }
        Some((Ok(error_event(code, status, &message)), None))
    })
}

/// A Gemini error as one SSE event: how a stream that already started reports a failure.
fn error_event(code: u16, status: &str, message: &str) -> Bytes {
    let event = serde_json::json!({"error": {"code": code, "message": message, "status": status}});
    Bytes::from(format!("data: {event}\r\n\r\n"))
}

/// Relays an SSE stream whole event by whole event: each chunk goes out up to its last event
/// boundary at once, and only an unfinished event waits for its end. A stream the upstream
/// ends in the middle of an event, or without its last event (the one with `finishReason`),
/// ends with an error event instead of a silent cut.
fn whole_events(
    stream: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct State<S> {
        stream: std::pin::Pin<Box<S>>,
        pending: Vec<u8>,
        finished: bool,
        events: bool,
        done: bool,
    }
    let state = State {
        stream: Box::pin(stream),
        pending: Vec::new(),
        finished: false,
        events: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if state.done {
                return None;
            }
            match state.stream.next().await {
                Some(Ok(chunk)) => {
                    // Only the new bytes (and the three before them, where a separator may
                    // begin) can hold a new event end: searching the whole buffer again would
                    // make one huge event cost quadratic time.
                    let from = state.pending.len().saturating_sub(3);
                    state.pending.extend_from_slice(&chunk);
                    let Some(end) = last_event_end(&state.pending, from) else {
                        if state.pending.len() > MAX_EVENT_BYTES {
                            state.done = true;
                            tracing::warn!(
                                limit = MAX_EVENT_BYTES,
                                "an upstream event was too large: the stream is ended"
                            );
                            let event = error_event(
                                502,
                                "UNAVAILABLE",
                                &format!(
                                    "An upstream event was larger than {} MiB; the stream was ended.",
                                    MAX_EVENT_BYTES / (1024 * 1024)
                                ),
                            );
                            state.pending = Vec::new();
                            return Some((Ok(event), state));
                        }
                        continue;
                    };
                    let complete: Vec<u8> = state.pending.drain(..end).collect();
                    state.events = true;
                    // A stream ends well with a finish reason or an error of its own.
                    state.finished |= memmem::find(&complete, b"\"finishReason\"").is_some()
                        || memmem::find(&complete, b"data: {\"error\"").is_some();
                    return Some((Ok(Bytes::from(complete)), state));
                }
                Some(Err(error)) => {
                    state.done = true;
                    return Some((Err(error), state));
                }
                None => {
                    state.done = true;
                    let cut = state.pending.iter().any(|b| !b.is_ascii_whitespace())
                        || (state.events && !state.finished);
                    if !cut {
                        return None;
                    }
                    tracing::warn!("the upstream stream ended in the middle of an answer");
                    let event = error_event(
                        502,
                        "UNAVAILABLE",
                        "The upstream stream ended before the answer was complete.",
                    );
                    return Some((Ok(event), state));
                }
            }
        }
    })
}

/// Where the last complete SSE event of `bytes` ends (after its blank line).
fn last_event_end(bytes: &[u8], from: usize) -> Option<usize> {
    let region = &bytes[from.min(bytes.len())..];
    let lf = memmem::rfind(region, b"\n\n").map(|at| from + at + 2);
    let crlf = memmem::rfind(region, b"\r\n\r\n").map(|at| from + at + 4);
    lf.max(crlf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_query_parameters_travel_upstream_decoded_once() {
        assert_eq!(
            with_query(
                "v1beta/models",
                Some("key=secret&pageSize=5&pageToken=a%2Bb")
            ),
            "v1beta/models?pageSize=5&pageToken=a%2Bb"
        );
        assert_eq!(
            with_query("v1beta/models", Some("KEY=secret")),
            "v1beta/models"
        );
        assert_eq!(
            with_query(
                "v1beta/models/m:streamGenerateContent",
                Some("alt=sse&key=k")
            ),
            "v1beta/models/m:streamGenerateContent?alt=sse"
        );
        assert_eq!(with_query("v1/files", None), "v1/files");
        assert_eq!(with_query("v1/files", Some("keyword=x")), "v1/files");
        // Smuggled names are decoded before they are compared; credentials never pass.
        for smuggled in [
            "%6Bey=client-key",
            "ke%79=client-key",
            "%4BEY=client-key",
            "access_token=ya29",
            "quotaUser=someone",
            "%61ccess_token=ya29",
        ] {
            assert_eq!(
                with_query("v1beta/models", Some(&format!("pageSize=2&{smuggled}"))),
                "v1beta/models?pageSize=2",
                "{smuggled}"
            );
        }
    }

    /// A body of `chunks` that declares `declared` bytes (a `content-length`), or nothing.
    struct Chunked {
        chunks: std::collections::VecDeque<Bytes>,
        declared: Option<u64>,
    }

    impl http_body::Body for Chunked {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(
                self.chunks
                    .pop_front()
                    .map(|c| Ok(http_body::Frame::data(c))),
            )
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.declared.map_or_else(
                http_body::SizeHint::default,
                http_body::SizeHint::with_exact,
            )
        }
    }

    fn chunked(chunks: &[&'static [u8]], declared: Option<u64>) -> Body {
        Body::new(Chunked {
            chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(),
            declared,
        })
    }

    #[tokio::test]
    async fn bodies_are_read_whole_within_their_limit() {
        // One chunk, kept as it is; several, joined in order, with or without a declared length.
        let one = read_body(chunked(&[b"{\"a\":1}"], Some(7)), 64).await;
        assert_eq!(one.ok().as_deref(), Some(&b"{\"a\":1}"[..]));
        for declared in [Some(9), None] {
            let joined = read_body(chunked(&[b"abc", b"", b"def", b"ghi"], declared), 9).await;
            assert_eq!(joined.ok().as_deref(), Some(&b"abcdefghi"[..]));
        }
        let empty = read_body(chunked(&[], Some(0)), 9).await;
        assert_eq!(empty.ok().as_deref(), Some(&b""[..]));
        // One byte over the limit, in the first chunk or a later one, declared or not.
        for (chunks, declared) in [
            (&[&b"0123456789"[..]][..], None),
            (&[&b"01234"[..], &b"56789"[..]][..], None),
            (&[&b"01234"[..], &b"5678"[..], &b"9"[..]][..], None),
        ] {
            let refused = read_body(chunked(chunks, declared), 9).await;
            assert!(
                matches!(refused, Err(ApiError::PayloadTooLarge { limit: 9 })),
                "{chunks:?}"
            );
        }
        // A declared length over the limit is refused before a byte is read.
        let declared = read_body(chunked(&[b"0"], Some(10)), 9).await;
        assert!(matches!(
            declared,
            Err(ApiError::PayloadTooLarge { limit: 9 })
        ));
    }

    #[test]
    fn versions_split_off_the_path() {
        assert_eq!(split_version("/v1beta/models"), Some(("v1beta", "models")));
        assert_eq!(split_version("/v1/models/m:x"), Some(("v1", "models/m:x")));
        assert_eq!(split_version("/v2/models"), None);
        assert_eq!(split_version("/v1betamodels"), None);
    }
}
