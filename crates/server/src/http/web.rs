//! The dashboard's pages, embedded in the binary (`web/`; debug builds read them from disk, so
//! edits show without a rebuild). No build step and no CDN: everything is served from here.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::RustEmbed;

use crate::state::AppState;

#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../../web"]
struct Assets;

/// The bytes of an embedded file.
pub fn asset(path: &str) -> Option<Vec<u8>> {
    Assets::get(path).map(|file| file.data.into_owned())
}

/// Only this page's own scripts, styles and API: no inline script, no other origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut response = Response::new(Body::from(file.data.into_owned()));
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        out.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /login.html`.
pub async fn login_page(headers: HeaderMap) -> Response {
    serve("login.html", &headers)
}

/// `GET /management.html`.
pub async fn management_page(headers: HeaderMap) -> Response {
    serve("management.html", &headers)
}

/// `GET /assets/{file}`: scripts, styles, icons.
pub async fn asset_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file.contains("..") || file.contains('\\') {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    }
    serve(&format!("assets/{file}"), &headers)
}

/// `GET /`: the dashboard for a logged-in admin, the login page otherwise.
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Redirect {
    if crate::http::admin::auth::has_session(&state, &headers).await {
        Redirect::to("/management.html")
    } else {
        Redirect::to("/login.html")
    }
}

/// `GET /api/openapi.json`: the OpenAPI description of the management API (a built-in asset).
pub async fn openapi() -> Response {
    match asset("openapi.json") {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        None => {
            crate::http::admin::AdminError::NotFound("No API description is built in.".to_owned())
                .into_response()
        }
    }
}
