//! Resumable uploads (`/upload/v1beta/files`, `/upload/v1/files`).
//!
//! The first request (`X-Goog-Upload-Command: start`) carries the client's key and the file's
//! metadata; the upstream answers with an `X-Goog-Upload-URL` holding an unguessable
//! `upload_id`. That URL is rewritten to point at the gateway, and the upload id is bound to the
//! key that started the session: the chunks that follow carry no API key, and must reach the
//! same upstream key so the finished file lands in that key's project. The session also
//! remembers the client key that started it: when the final chunk's answer names the new file,
//! the file is recorded as that client's, in that key's project (see `ownership`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use crate::http::dialect::query_value;
use crate::http::error::{ApiError, Dialect};
use crate::http::native::{
    buffered_response, client_id, read_body, read_limited, relay_response,
    upstream_failure_response, with_query,
};
use crate::service::accounting::RequestMeter;
use crate::service::upstream::{
    FORWARDED_REQUEST_HEADERS, Outgoing, RELAYED_RESPONSE_HEADERS, allowlisted,
};
use crate::state::{App, AppState};

/// The largest metadata body of an upload's `start` request.
const START_BODY_LIMIT: usize = 1024 * 1024;
/// The largest final answer (the file's JSON) read to learn the file's name.
const FINAL_BODY_LIMIT: usize = 1024 * 1024;

/// Handler for both upload routes.
pub async fn relay(State(state): State<AppState>, request: Request) -> Response {
    let mut meter = RequestMeter::start(
        &state.meter_sinks,
        "/upload/{version}/files",
        client_id(&request),
    );
    let upload_id = request
        .uri()
        .query()
        .and_then(|q| query_value(q, "upload_id"));
    let result = match upload_id {
        Some(upload_id) => relay_chunk(&state, request, upload_id, &mut meter).await,
        None => start_upload(&state, request, &mut meter).await,
    };
    let response = result.unwrap_or_else(|error| error.into_response_for(Dialect::Gemini));
    meter.set_status(response.status().as_u16());
    response
}

fn version_of(path: &str) -> &'static str {
    if path.starts_with("/upload/v1/") {
        "v1"
    } else {
        "v1beta"
    }
}

async fn start_upload(
    app: &App,
    request: Request,
    meter: &mut RequestMeter,
) -> Result<Response, ApiError> {
    let client = client_id(&request);
    let (parts, body) = request.into_parts();
    let version = version_of(parts.uri.path());
    let origin = public_origin(&parts.headers)
        .ok_or_else(|| ApiError::BadRequest("The request has no usable Host header.".to_owned()))?;
    let outgoing = Outgoing {
        method: parts.method.clone(),
        path_and_query: with_query(&format!("upload/{version}/files"), parts.uri.query()),
        headers: allowlisted(&parts.headers, &FORWARDED_REQUEST_HEADERS),
        body: read_body(body, START_BODY_LIMIT).await?,
        streaming: false,
        model: None,
        project: None,
    };
    let committed = match app.relay.send_with_failover(&outgoing).await {
        Ok(committed) => committed,
        Err(failure) => return upstream_failure_response(failure, None),
    };
    meter.set_key(&committed.key);
    let upstream_url = committed
        .response
        .headers()
        .get("x-goog-upload-url")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let Some(upstream_url) = upstream_url else {
        // Not a resumable start (or a non-protocol answer): relay it unchanged.
        return Ok(relay_response(
            committed.response,
            app.relay.stream_ends(),
            None,
            None,
        ));
    };
    let upload_id = url::Url::parse(&upstream_url)
        .ok()
        .and_then(|url| url.query().and_then(|q| query_value(q, "upload_id")))
        .ok_or_else(|| ApiError::Internal("the upstream upload URL has no upload_id".to_owned()))?;
    let rewritten = with_query(
        &format!("{origin}/upload/{version}/files"),
        url::Url::parse(&upstream_url)
            .ok()
            .as_ref()
            .and_then(url::Url::query),
    );
    let rewritten = HeaderValue::from_str(&rewritten).map_err(|_| {
        ApiError::Internal("the rewritten upload URL is not a header value".to_owned())
    })?;
    // The file the session creates belongs to this client key: its chunks carry no key.
    app.pool
        .affinity()
        .bind_upload(&upload_id, committed.key.id(), client);
    Ok(relay_response(
        committed.response,
        app.relay.stream_ends(),
        Some((rewritten.clone(), rewritten)),
        None,
    ))
}

async fn relay_chunk(
    app: &App,
    request: Request,
    upload_id: String,
    meter: &mut RequestMeter,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::NotFound("Upload session not found.".to_owned());
    // Sessions end after a day (see `pool::Affinity`); an ended one is unknown here.
    let session = app.pool.affinity().upload(&upload_id).ok_or_else(unknown)?;
    // The session belongs to this key even if it has since been disabled: another key's
    // project would not know the upload.
    let key = app.pool.key(session.key).ok_or_else(unknown)?;
    meter.set_key(&key);
    let (parts, body) = request.into_parts();
    let version = version_of(parts.uri.path());
    let builder = app
        .upstream
        .request(
            parts.method.clone(),
            &with_query(&format!("upload/{version}/files"), parts.uri.query()),
            allowlisted(&parts.headers, &FORWARDED_REQUEST_HEADERS),
            &key,
        )
        // The chunk streams through: uploads may be up to 2 GB.
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let response = match app.upstream.send(builder, false).await {
        Ok(response) => response,
        Err(failure) => return upstream_failure_response(failure, None),
    };
    let is_final = response
        .headers()
        .get("x-goog-upload-status")
        .is_some_and(|status| status.as_bytes().eq_ignore_ascii_case(b"final"));
    if !is_final {
        return Ok(relay_response(
            response,
            app.relay.stream_ends(),
            None,
            None,
        ));
    }
    app.pool.affinity().finish_upload(&upload_id);
    let status = response.status();
    let headers = allowlisted(response.headers(), &RELAYED_RESPONSE_HEADERS);
    let body: Bytes = read_limited(response, FINAL_BODY_LIMIT).await?;
    if status == StatusCode::OK {
        app.owners.remember_owner_of(&body, &key, session.client);
    }
    Ok(buffered_response(status, headers, body))
}

/// The gateway's address as the client sees it: `X-Forwarded-Proto`/`X-Forwarded-Host` when a
/// reverse proxy sets them, else `Host`. Only host-name characters are accepted.
fn public_origin(headers: &HeaderMap) -> Option<String> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let scheme = match first("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let host = first("x-forwarded-host").or_else(|| first("host"))?;
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_origin_prefers_forwarded_headers_and_refuses_odd_hosts() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(
            public_origin(&headers).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("gw.example.com"),
        );
        assert_eq!(
            public_origin(&headers).as_deref(),
            Some("https://gw.example.com")
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.com/x?y"));
        assert_eq!(public_origin(&headers), None);
    }
}
