//! Files and cached contents: kept per project, visible only to keys of that project (403 for
//! the others, as Google does), and checked when a request names them.

use axum::response::Response;
use serde_json::{Value, json};

use crate::http::{Caller, Incoming, google_error, json_response};
use crate::state::MockState;
use crate::tokens::{request_texts, word_count};

/// Files and cached contents named in a request must belong to the caller's project.
pub(crate) fn check_references(
    state: &MockState,
    caller: &Caller,
    body: &Value,
) -> Result<(), Response> {
    let ledger = state.ledger();
    for reference in translate_references(body) {
        let owner = if let Some(id) = reference.strip_prefix("files/") {
            ledger
                .files
                .get(&format!("files/{id}"))
                .map(|f| f.project.clone())
        } else {
            ledger
                .cached_contents
                .get(&reference)
                .map(|(project, _)| project.clone())
        };
        if owner.as_deref() != Some(caller.project.as_str()) {
            let kind = if reference.starts_with("files/") {
                "File"
            } else {
                "CachedContent"
            };
            let id = reference.split_once('/').map_or("", |(_, id)| id);
            return Err(google_error(
                403,
                &format!(
                    "You do not have permission to access the {kind} {id} or it may not exist."
                ),
                "PERMISSION_DENIED",
                Vec::new(),
            ));
        }
    }
    Ok(())
}

/// Resource names in a request body (`fileData.fileUri`, `cachedContent`).
fn translate_references(body: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(body, &mut found);
    found
}

fn walk(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (field, child) in map {
                match (field.as_str(), child) {
                    ("fileUri" | "file_uri", Value::String(uri)) => {
                        if let Some(at) = uri.find("files/") {
                            found.push(uri[at..].to_owned());
                        }
                    }
                    ("cachedContent" | "cached_content", Value::String(name)) => {
                        found.push(name.clone());
                    }
                    _ => walk(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
        _ => {}
    }
}

pub(crate) fn create_cached_content(
    state: &MockState,
    incoming: &Incoming,
    caller: &Caller,
) -> Response {
    let body = match incoming.json() {
        Ok(body) => body,
        Err(response) => return response,
    };
    let name = format!("cachedContents/{}", state.fresh_id("c"));
    let tokens = word_count(&request_texts(&body));
    let cached = json!({
        "name": name,
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "createTime": "2026-11-24T00:00:00.000000Z",
        "updateTime": "2026-11-24T00:00:00.000000Z",
        "expireTime": "2026-11-24T01:00:00.000000Z",
        "displayName": body.get("displayName").cloned().unwrap_or(json!("")),
        "usageMetadata": {"totalTokenCount": tokens}
    });
    state
        .ledger()
        .cached_contents
        .insert(name, (caller.project.clone(), cached.clone()));
    json_response(&cached)
}

pub(crate) fn get_cached_content(state: &MockState, caller: &Caller, id: &str) -> Response {
    let name = format!("cachedContents/{id}");
    match state.ledger().cached_contents.get(&name) {
        Some((project, cached)) if *project == caller.project => json_response(cached),
        _ => google_error(
            403,
            &format!("CachedContent not found (or permission denied): {id}"),
            "PERMISSION_DENIED",
            Vec::new(),
        ),
    }
}

pub(crate) fn list_cached_contents(state: &MockState, caller: &Caller) -> Response {
    let cached: Vec<Value> = state
        .ledger()
        .cached_contents
        .values()
        .filter(|(project, _)| *project == caller.project)
        .map(|(_, cached)| cached.clone())
        .collect();
    json_response(&json!({ "cachedContents": cached }))
}

pub(crate) fn delete_cached_content(state: &MockState, caller: &Caller, id: &str) -> Response {
    let name = format!("cachedContents/{id}");
    let mut ledger = state.ledger();
    match ledger.cached_contents.get(&name) {
        Some((project, _)) if *project == caller.project => {
            ledger.cached_contents.remove(&name);
            json_response(&json!({}))
        }
        _ => google_error(
            403,
            &format!("CachedContent not found (or permission denied): {id}"),
            "PERMISSION_DENIED",
            Vec::new(),
        ),
    }
}

pub(crate) fn list_files(state: &MockState, caller: &Caller) -> Response {
    let files: Vec<Value> = state
        .ledger()
        .files
        .values()
        .filter(|file| file.project == caller.project)
        .map(|file| file.metadata.clone())
        .collect();
    json_response(&json!({ "files": files }))
}

fn file_permission_error(id: &str) -> Response {
    google_error(
        403,
        &format!("You do not have permission to access the File {id} or it may not exist."),
        "PERMISSION_DENIED",
        Vec::new(),
    )
}

pub(crate) fn get_file(state: &MockState, caller: &Caller, id: &str) -> Response {
    match state.ledger().files.get(&format!("files/{id}")) {
        Some(file) if file.project == caller.project => json_response(&file.metadata),
        _ => file_permission_error(id),
    }
}

pub(crate) fn delete_file(state: &MockState, caller: &Caller, id: &str) -> Response {
    let name = format!("files/{id}");
    let mut ledger = state.ledger();
    match ledger.files.get(&name) {
        Some(file) if file.project == caller.project => {
            ledger.files.remove(&name);
            json_response(&json!({}))
        }
        _ => file_permission_error(id),
    }
}
