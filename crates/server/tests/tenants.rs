//! Tenant isolation of files and cached contents: a client key cannot read, use, list or delete
//! what another client key created through the gateway, although both reach the same Google
//! Cloud projects; the admin sees everything.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{CLIENT_KEY, Harness, Setup};
use reqwest::Method;
use serde_json::{Value, json};

/// One project, two keys: the upstream itself would let any client key reach any resource.
const KEYS: [(&str, &str); 2] = [("key-1", "shared"), ("key-2", "shared")];
const PASSWORD: &str = "tenants-admin-password";

/// A gateway with tenant A (`CLIENT_KEY`, from `CLIENT_API_KEYS`) and tenant B (created through
/// the management API); returns B's key and id.
async fn two_tenants() -> (Harness, String, i64) {
    let mut setup = Setup::with_keys(&KEYS);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    let gw = Harness::start(setup).await;
    let token = admin_token(&gw).await;
    let created: Value = gw
        .http
        .post(gw.url("/api/client-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "tenant b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_i64().unwrap();
    (gw, key, id)
}

async fn admin_token(gw: &Harness) -> String {
    common::admin::login_with(gw, PASSWORD).await
}

/// Uploads a small file through the gateway with `client_key` (the resumable protocol: the
/// chunk carries no key); returns the file's JSON.
async fn upload(gw: &Harness, client_key: &str, text: &str) -> Value {
    let start = gw
        .native_as(client_key, Method::POST, "/upload/v1beta/files")
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-type", "text/plain")
        .json(&json!({"file": {"display_name": "notes.txt"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 200);
    let url = start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_owned();
    let done = gw
        .http
        .post(&url)
        .header("x-goog-upload-offset", "0")
        .header("x-goog-upload-command", "upload, finalize")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    body["file"].clone()
}

async fn create_cache(gw: &Harness, client_key: &str) -> String {
    let created: Value = gw
        .native_as(client_key, Method::POST, "/v1beta/cachedContents")
        .json(&json!({"model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "a long document"}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["name"].as_str().unwrap().to_owned()
}

/// Asserts Google's answer for a resource the caller may not see.
async fn assert_denied(response: reqwest::Response, kind: &str, id: &str, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": 403,
            "message": format!("You do not have permission to access the {kind} {id} or it may not exist."),
            "status": "PERMISSION_DENIED",
        }}),
        "{what}"
    );
}

/// Asserts the OpenAI-shaped 403 for the same.
async fn assert_openai_denied(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error", "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("You do not have permission to access the "),
        "{what}: {body}"
    );
}

fn chat(client_key: &str, gw: &Harness, part: Value) -> reqwest::RequestBuilder {
    gw.http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(client_key)
        .json(
            &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Summarise this"}, part
            ]}]}),
        )
}

fn generate_with(part: Value) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Summarise this"}, part]}]})
}

#[tokio::test]
async fn another_client_key_cannot_read_use_or_delete_a_file_and_its_owner_still_can() {
    let (gw, other, _) = two_tenants().await;
    let file = upload(&gw, CLIENT_KEY, "tenant A's secret notes").await;
    let name = file["name"].as_str().unwrap().to_owned();
    let id = name.strip_prefix("files/").unwrap().to_owned();
    let uri = file["uri"].as_str().unwrap().to_owned();
    let upstream_before = gw.mock.requests().len();

    for path in [
        format!("/v1beta/{name}"),
        format!("/v1/{name}"),
        format!("/v1beta/{name}:download"),
    ] {
        let response = gw
            .native_as(&other, Method::GET, &path)
            .send()
            .await
            .unwrap();
        assert_denied(response, "File", &id, &format!("GET {path}")).await;
    }
    let response = gw
        .native_as(&other, Method::DELETE, &format!("/v1beta/{name}"))
        .send()
        .await
        .unwrap();
    assert_denied(response, "File", &id, "DELETE").await;
    for part in [
        json!({"fileData": {"mimeType": "text/plain", "fileUri": uri}}),
        json!({"file_data": {"file_uri": name}}),
    ] {
        let response = gw
            .native_as(
                &other,
                Method::POST,
                "/v1beta/models/gemini-2.5-flash:generateContent",
            )
            .json(&generate_with(part.clone()))
            .send()
            .await
            .unwrap();
        assert_denied(response, "File", &id, &format!("generateContent {part}")).await;
    }
    // Names hidden from a plain byte search by JSON escapes, or behind a field of its own given
    // twice (whichever copy the upstream keeps), are found all the same.
    for body in [
        format!(r#"{{"contents": [{{"parts": [{{"fileData": {{"fileUri": "files\/{id}"}}}}]}}]}}"#),
        format!(
            r#"{{"contents": [{{"parts": [{{"fileData": {{"fileUri": "\u0066iles\u002f{id}"}}}}]}}]}}"#
        ),
        format!(
            r#"{{"contents": [{{"parts": [{{"fileData": {{"fileUri": "{name}", "fileUri": "files/elsewhere"}}}}]}}]}}"#
        ),
    ] {
        let response = gw
            .native_as(
                &other,
                Method::POST,
                "/v1beta/models/gemini-2.5-flash:generateContent",
            )
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_denied(response, "File", &id, &body).await;
    }
    let response = gw
        .native_as(
            &other,
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        )
        .json(&generate_with(json!({"fileData": {"fileUri": uri}})))
        .send()
        .await
        .unwrap();
    assert_denied(response, "File", &id, "streamGenerateContent").await;
    for part in [
        json!({"type": "image_url", "image_url": {"url": uri}}),
        json!({"type": "file", "file": {"file_id": name, "mime_type": "text/plain"}}),
    ] {
        let response = chat(&other, &gw, part.clone()).send().await.unwrap();
        assert_openai_denied(response, &format!("chat {part}")).await;
    }
    assert_eq!(
        gw.mock.requests().len(),
        upstream_before,
        "a refused request reached the upstream"
    );

    // The owner still reads and uses it, natively and through the OpenAI route.
    let response = gw
        .native(Method::GET, &format!("/v1beta/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = gw
        .generate(
            "gemini-2.5-flash",
            generate_with(json!({"fileData": {"mimeType": "text/plain", "fileUri": uri}})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let response = chat(
        CLIENT_KEY,
        &gw,
        json!({"type": "file", "file": {"file_id": name, "mime_type": "text/plain"}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // The client owner is persisted: after a restart the other key is still refused.
    assert!(
        common::eventually_async(async || {
            gw.state
                .storage
                .resource_owners(0, 100)
                .await
                .unwrap()
                .iter()
                .any(|owner| owner.resource == name && owner.client_key_id.is_some())
        })
        .await,
        "the owner was not persisted"
    );
    let (_, addr) = gw.restart().await;
    let after_restart = gw
        .http
        .get(format!("http://{addr}/v1beta/{name}"))
        .header("x-goog-api-key", &other)
        .send()
        .await
        .unwrap();
    assert_denied(after_restart, "File", &id, "GET after a restart").await;

    let deleted = gw
        .native(Method::DELETE, &format!("/v1beta/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
}

#[tokio::test]
async fn another_client_key_cannot_read_use_or_delete_a_cached_content() {
    let (gw, other, _) = two_tenants().await;
    let name = create_cache(&gw, CLIENT_KEY).await;
    let id = name.strip_prefix("cachedContents/").unwrap().to_owned();
    let upstream_before = gw.mock.requests().len();

    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let mut request = gw.native_as(&other, method.clone(), &format!("/v1beta/{name}"));
        if method == Method::PATCH {
            request = request.json(&json!({"ttl": "7200s"}));
        }
        let response = request.send().await.unwrap();
        assert_denied(response, "CachedContent", &id, method.as_str()).await;
    }
    let response = gw
        .native_as(
            &other,
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:generateContent",
        )
        .json(&json!({"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": "question"}]}]}))
        .send()
        .await
        .unwrap();
    assert_denied(response, "CachedContent", &id, "generateContent").await;
    let response = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&other)
        .json(&json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "question"}],
            "extra_body": {"google": {"cached_content": name}}}))
        .send()
        .await
        .unwrap();
    assert_openai_denied(response, "chat with cached_content").await;
    assert_eq!(
        gw.mock.requests().len(),
        upstream_before,
        "a refused request reached the upstream"
    );

    // The owner still can.
    let response = gw
        .generate(
            "gemini-2.5-flash",
            json!({"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": "question"}]}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    for method in [Method::GET, Method::DELETE] {
        let response = gw
            .native(method.clone(), &format!("/v1beta/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
    }
}

/// The names in a native listing.
async fn listed(gw: &Harness, client_key: &str, path: &str) -> Vec<String> {
    let response = gw
        .native_as(client_key, Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    let collection = path.rsplit('/').next().unwrap();
    let mut names: Vec<String> = body[collection]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| entry["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn listings_show_each_client_key_only_its_own_files_and_cached_contents() {
    let (gw, other, _) = two_tenants().await;
    let file_a = upload(&gw, CLIENT_KEY, "a").await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let file_b = upload(&gw, &other, "b").await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let cache_a = create_cache(&gw, CLIENT_KEY).await;
    let cache_b = create_cache(&gw, &other).await;
    // A file made straight at the upstream: the gateway has no owner for it, so it is nobody's.
    let start = gw
        .http
        .post(format!("http://{}/upload/v1beta/files", gw.mock_addr))
        .header("x-goog-api-key", KEYS[0].0)
        .header("x-goog-upload-command", "start")
        .send()
        .await
        .unwrap();
    let url = start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_owned();
    let outside = gw
        .http
        .post(url)
        .header("x-goog-upload-command", "upload, finalize")
        .body("outside")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 200);
    // The upstream lists all three files to either key.
    let everything: Value = gw
        .http
        .get(format!("http://{}/v1beta/files", gw.mock_addr))
        .header("x-goog-api-key", KEYS[1].0)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(everything["files"].as_array().unwrap().len(), 3);

    for version in ["v1beta", "v1"] {
        assert_eq!(
            listed(&gw, CLIENT_KEY, &format!("/{version}/files")).await,
            [file_a.as_str()]
        );
        assert_eq!(
            listed(&gw, &other, &format!("/{version}/files")).await,
            [file_b.as_str()]
        );
        assert_eq!(
            listed(&gw, CLIENT_KEY, &format!("/{version}/cachedContents")).await,
            [cache_a.as_str()]
        );
        assert_eq!(
            listed(&gw, &other, &format!("/{version}/cachedContents")).await,
            [cache_b.as_str()]
        );
    }
}

#[tokio::test]
async fn an_admin_sees_every_client_keys_files_and_cached_contents() {
    let (gw, other, other_id) = two_tenants().await;
    let file_a = upload(&gw, CLIENT_KEY, "a").await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let cache_b = create_cache(&gw, &other).await;
    let token = admin_token(&gw).await;
    let get = async |path: &str| -> Value {
        let response = gw
            .http
            .get(gw.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    };
    // Owners are written behind the request.
    assert!(
        common::eventually_async(async || get("/api/resources").await["total"] == 2).await,
        "{}",
        get("/api/resources").await
    );
    let page = get("/api/resources").await;
    let items = page["items"].as_array().unwrap();
    // Newest first.
    assert_eq!(items[0]["resource"], cache_b.as_str());
    assert_eq!(items[0]["client_key_id"], other_id);
    assert_eq!(items[0]["client_name"], "tenant b");
    assert_eq!(items[0]["project"], "shared");
    assert_eq!(items[1]["resource"], file_a.as_str());
    assert_eq!(items[1]["client_name"], "from CLIENT_API_KEYS");
    assert!(items[1]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        (page["page"].clone(), page["per_page"].clone()),
        (json!(1), json!(50))
    );

    let only_b = get(&format!("/api/resources?client_key_id={other_id}")).await;
    assert_eq!(only_b["total"], 1);
    assert_eq!(only_b["items"][0]["resource"], cache_b.as_str());
    let second_page = get("/api/resources?page=2&per_page=1").await;
    assert_eq!(second_page["items"][0]["resource"], file_a.as_str());

    let response = gw
        .http
        .get(gw.url("/api/resources?client=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "unknown parameters are refused");
}
