//! Gemini's resumable upload protocol (`/upload/v1beta/files`).
//!
//! `start` (with a key) opens a session and answers with `X-Goog-Upload-URL`, which carries an
//! unguessable `upload_id`; the chunks then go to that URL, with `X-Goog-Upload-Offset` and the
//! command `upload`, `upload, finalize` or `finalize`. The finished file belongs to the project
//! of the key that started the session. The real API needs no key on the chunks; the mock
//! refuses a chunk sent with a *different* key, so a gateway that loses the binding is caught.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{Incoming, authenticate, google_error};
use crate::state::{MockState, StoredFile, UploadSession};

pub(crate) fn handle(state: &MockState, incoming: &Incoming) -> Response {
    let command = incoming
        .header("x-goog-upload-command")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if command.contains("start") {
        return start(state, incoming);
    }
    let Some(upload_id) = incoming.query("upload_id") else {
        return google_error(
            400,
            "Only resumable uploads are supported by this mock.",
            "INVALID_ARGUMENT",
            Vec::new(),
        );
    };
    let mut ledger = state.ledger();
    let Some(session) = ledger.uploads.get_mut(upload_id) else {
        return google_error(404, "Upload session not found.", "NOT_FOUND", Vec::new());
    };
    if let Some(key) = incoming.api_key()
        && key != session.key
    {
        return google_error(
            403,
            "The upload session was started with another API key.",
            "PERMISSION_DENIED",
            Vec::new(),
        );
    }
    if command.contains("query") {
        return status_response("active", Some(session.data.len()));
    }
    if command.contains("cancel") {
        ledger.uploads.remove(upload_id);
        return status_response("cancelled", None);
    }
    if command.contains("upload") {
        let offset = incoming
            .header("x-goog-upload-offset")
            .and_then(|offset| offset.parse::<usize>().ok())
            .unwrap_or(0);
        if offset != session.data.len() {
            return google_error(
                400,
                &format!(
                    "Upload offset {offset} does not match the {} bytes received.",
                    session.data.len()
                ),
                "INVALID_ARGUMENT",
                Vec::new(),
            );
        }
        session.data.extend_from_slice(&incoming.body);
    }
    if !command.contains("finalize") {
        return status_response("active", Some(session.data.len()));
    }
    let Some(session) = ledger.uploads.remove(upload_id) else {
        return google_error(404, "Upload session not found.", "NOT_FOUND", Vec::new());
    };
    let id = state.fresh_id("f");
    let name = format!("files/{id}");
    let metadata = json!({
        "name": name,
        "displayName": session.display_name.unwrap_or_default(),
        "mimeType": session.mime_type,
        "sizeBytes": session.data.len().to_string(),
        "createTime": "2026-11-24T00:00:00.000000Z",
        "updateTime": "2026-11-24T00:00:00.000000Z",
        "expirationTime": "2026-11-26T00:00:00.000000Z",
        "sha256Hash": "bW9jaw==",
        // Real file URIs always name Google's host, whatever address the client used.
        "uri": format!("https://generativelanguage.googleapis.com/v1beta/{name}"),
        "state": "ACTIVE",
        "source": "UPLOADED",
    });
    ledger.files.insert(
        name,
        StoredFile {
            project: session.project,
            metadata: metadata.clone(),
        },
    );
    let body = serde_json::to_string_pretty(&json!({ "file": metadata })).unwrap_or_default();
    (
        StatusCode::OK,
        [
            ("content-type", "application/json; charset=UTF-8"),
            ("x-goog-upload-status", "final"),
        ],
        body,
    )
        .into_response()
}

fn start(state: &MockState, incoming: &Incoming) -> Response {
    let project = match authenticate(state, incoming.api_key()) {
        Ok(project) => project,
        Err(response) => return response,
    };
    let metadata: Value = if incoming.body.is_empty() {
        Value::Null
    } else {
        match incoming.json() {
            Ok(metadata) => metadata,
            Err(response) => return response,
        }
    };
    let file = metadata.get("file").unwrap_or(&metadata);
    let mime_type = incoming
        .header("x-goog-upload-header-content-type")
        .map(str::to_owned)
        .or_else(|| {
            file.get("mimeType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let upload_id = state.fresh_id("upload-");
    let host = incoming.header("host").unwrap_or("localhost");
    let version = if incoming.path.starts_with("/upload/v1/") {
        "v1"
    } else {
        "v1beta"
    };
    let url = format!(
        "http://{host}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
    );
    state.ledger().uploads.insert(
        upload_id,
        UploadSession {
            key: incoming.api_key().unwrap_or_default().to_owned(),
            project,
            display_name: file
                .get("displayName")
                .and_then(Value::as_str)
                .map(str::to_owned),
            mime_type,
            data: Vec::new(),
        },
    );
    (
        StatusCode::OK,
        [
            ("x-goog-upload-url", url.as_str()),
            ("x-goog-upload-status", "active"),
            ("x-goog-upload-chunk-granularity", "8388608"),
            ("x-goog-upload-control-url", url.as_str()),
        ],
    )
        .into_response()
}

fn status_response(status: &str, received: Option<usize>) -> Response {
    let mut response = (StatusCode::OK, [("x-goog-upload-status", status)]).into_response();
    if let Some(received) = received
        && let Ok(value) = received.to_string().parse()
    {
        response
            .headers_mut()
            .insert("x-goog-upload-size-received", value);
    }
    response
}
