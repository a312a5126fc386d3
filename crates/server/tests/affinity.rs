//! Resumable uploads and resource affinity: a file or cached content is used only through keys
//! of the project that created it, across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup};
use reqwest::Method;
use serde_json::{Value, json};

const KEYS: [(&str, &str); 4] = [
    ("key-a", "p1"),
    ("key-b", "p2"),
    ("key-c1", "p3"),
    ("key-c2", "p3"),
];

fn project_of(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, p)| *p)
        .unwrap()
}

/// Uploads `data` in `chunks` through the gateway, as the google-genai SDK does; returns the
/// file's JSON.
async fn upload(gw: &Harness, data: &[u8], chunks: usize) -> Value {
    let start = gw
        .native(Method::POST, "/upload/v1beta/files")
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header(
            "x-goog-upload-header-content-length",
            data.len().to_string(),
        )
        .header("x-goog-upload-header-content-type", "text/plain")
        .json(&json!({"file": {"display_name": "notes.txt"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let upload_url = start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        upload_url.starts_with(&format!(
            "http://{}/upload/v1beta/files?upload_id=",
            gw.addr
        )),
        "the upload URL points at the gateway: {upload_url}"
    );
    assert!(!upload_url.contains(&gw.mock_addr.to_string()));
    let size = data.len().div_ceil(chunks);
    let mut last = None;
    for (index, chunk) in data.chunks(size).enumerate() {
        let is_last = (index + 1) * size >= data.len();
        // The SDK sends no API key with the chunks.
        let response = gw
            .http
            .post(&upload_url)
            .header("x-goog-upload-offset", (index * size).to_string())
            .header(
                "x-goog-upload-command",
                if is_last {
                    "upload, finalize"
                } else {
                    "upload"
                },
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "chunk {index}");
        let status = response.headers()["x-goog-upload-status"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(status, if is_last { "final" } else { "active" });
        last = Some(response);
    }
    let file: Value = last.unwrap().json().await.unwrap();
    file["file"].clone()
}

fn keys_used_for(gw: &Harness, path_part: &str) -> Vec<String> {
    gw.mock
        .requests()
        .iter()
        .filter(|r| r.path.contains(path_part))
        .filter_map(|r| r.api_key.clone())
        .collect()
}

#[tokio::test]
async fn an_uploaded_file_is_always_used_through_its_owner_project() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let file = upload(&gw, b"The quick brown fox jumps over the lazy dog.", 3).await;
    let name = file["name"].as_str().unwrap().to_owned();
    let owner = gw.mock.file_project(&name).unwrap();
    // All chunks reached the key that started the upload.
    let upload_keys = keys_used_for(&gw, "/upload/");
    assert_eq!(
        upload_keys.len(),
        4,
        "start and three chunks: {upload_keys:?}"
    );
    assert!(upload_keys.windows(2).all(|w| w[0] == w[1]));

    let request = json!({"contents": [{"role": "user", "parts": [
        {"text": "Summarise this file"},
        {"fileData": {"mimeType": "text/plain", "fileUri": file["uri"]}}
    ]}]});
    for _ in 0..12 {
        let response = gw.generate("gemini-2.5-flash", request.clone()).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    for _ in 0..4 {
        let response = gw
            .native(Method::GET, &format!("/v1beta/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for key in keys_used_for(&gw, ":generateContent")
        .iter()
        .chain(&keys_used_for(&gw, "/files/"))
    {
        assert_eq!(project_of(key), owner, "{key} is not of the owner project");
    }

    // The owner survives a restart (it is persisted in the background); the new gateway
    // routes the same way.
    let mut persisted = false;
    for _ in 0..200 {
        let owners = gw.state.storage.resource_owners(0, 1000).await.unwrap();
        if owners.iter().any(|owner| owner.resource == name) {
            persisted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(persisted, "the file's owner was not persisted");
    let (_, addr) = gw.restart().await;
    for _ in 0..6 {
        let response = gw
            .http
            .post(format!(
                "http://{addr}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .header("x-goog-api-key", CLIENT_KEY)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for key in keys_used_for(&gw, ":generateContent") {
        assert_eq!(project_of(&key), owner);
    }

    // Deleting the file forgets its owner.
    let deleted = gw
        .native(Method::DELETE, &format!("/v1beta/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert!(gw.state.pool.affinity().resource_project(&name).is_none());
}

#[tokio::test]
async fn a_cached_content_is_always_used_through_its_owner_project() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let created: Value = gw
        .native(Method::POST, "/v1beta/cachedContents")
        .json(&json!({"model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "a long document"}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = created["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("cachedContents/"));
    for _ in 0..10 {
        let response = gw
            .generate(
                "gemini-2.5-flash",
                json!({"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": "question"}]}]}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let get = gw
            .native(Method::GET, &format!("/v1beta/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
    }
}

#[tokio::test]
async fn unknown_upload_sessions_are_refused_without_reaching_the_upstream() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let response = gw
        .http
        .post(gw.url("/upload/v1beta/files?upload_id=guessed&upload_protocol=resumable"))
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    // An upload start still needs a client key.
    let anonymous = gw
        .http
        .post(gw.url("/upload/v1beta/files"))
        .header("x-goog-upload-command", "start")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(gw.mock.requests().is_empty());
}

#[tokio::test]
async fn a_request_naming_resources_of_two_projects_is_refused() {
    let gw = Harness::start(Setup::with_keys(&KEYS)).await;
    let affinity = gw.state.pool.affinity();
    affinity.remember_resource("files/one", "p1".into(), None);
    affinity.remember_resource("files/two", "p2".into(), None);
    let response = gw
        .generate(
            "gemini-2.5-flash",
            json!({"contents": [{"role": "user", "parts": [
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/one"}},
                {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/two"}}
            ]}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(gw.mock.requests().is_empty());
}
