//! The dashboard's pages and redirects, and the OpenAPI description of the management API:
//! every route is described, and every schema matches what the API answers.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::admin::{PROTECTED, call, gateway, login};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn pages_redirects_and_the_openapi_description_cover_the_api() {
    let gw = gateway().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = no_redirects.get(gw.url("/")).send().await.unwrap();
    assert_eq!(root.headers()["location"], "/login.html");
    let token = login(&gw).await;
    let root = no_redirects
        .get(gw.url("/"))
        .header("cookie", format!("gp_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.headers()["location"], "/management.html");
    for page in ["/login.html", "/management.html"] {
        let response = gw.http.get(gw.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let etag = response.headers()["etag"].clone();
        let again = gw
            .http
            .get(gw.url(page))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    assert_eq!(
        gw.http
            .get(gw.url("/assets/../Cargo.toml"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let spec: Value = gw
        .http
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for (method, path) in PROTECTED.iter().chain(&[
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/logout"),
        ("GET", "/api/settings"),
    ]) {
        let template = path.replace("/1", "/{id}");
        let operation = &paths
            .get(&template)
            .unwrap_or_else(|| panic!("{template} is not described"))[method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not described"
        );
    }
}

/// Every field `/api/keys` (keys, their quota per model, the models overview), `/api/stats`'s
/// pool, `/api/logs` rows and `/api/resources` answer is described in the OpenAPI file, and nothing described is
/// missing from the answers: the description cannot drift from the code unnoticed.
#[tokio::test]
async fn the_openapi_schemas_match_what_the_api_answers() {
    let gw = gateway().await;
    assert_eq!(
        gw.generate("gemini-2.5-flash", common::text_request("hi"))
            .await
            .status(),
        200
    );
    gw.state.accountant.flush().await;
    let token = login(&gw).await;
    let spec: Value = gw
        .http
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &spec["components"]["schemas"];
    let fields = |value: &Value| -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    let described = |schema: &Value| fields(&schema["properties"]);
    let (_, keys) = call(&gw, &token, Method::GET, "/api/keys", None).await;
    let key = &keys["items"][0];
    assert_eq!(fields(key), described(&schemas["Key"]), "Key");
    assert_eq!(
        fields(&key["quota"][0]),
        described(&schemas["ProjectQuota"]),
        "ProjectQuota"
    );
    assert_eq!(
        fields(&keys["models"][0]),
        described(&schemas["ModelNow"]),
        "ModelNow"
    );
    assert_eq!(
        fields(&keys["summary"]),
        described(&schemas["KeyPage"]["properties"]["summary"]),
        "the key summary"
    );
    let statuses: Vec<Value> = schemas["Key"]["properties"]["status"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    for status in keys["summary"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|s| *s != "total")
    {
        assert!(
            statuses.contains(&json!(status)),
            "{status} is not described"
        );
    }
    let (_, stats) = call(&gw, &token, Method::GET, "/api/stats", None).await;
    assert_eq!(
        fields(&stats["pool"]),
        described(&schemas["Stats"]["properties"]["pool"]),
        "the stats' pool"
    );
    let (_, logs) = call(&gw, &token, Method::GET, "/api/logs", None).await;
    let row = fields(&logs["items"][0]);
    for name in described(&schemas["LogPage"]["properties"]["items"]["items"]) {
        assert!(row.contains(&name), "log rows have no {name}");
    }
    let created = gw
        .native(Method::POST, "/v1beta/cachedContents")
        .json(&json!({"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "doc"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // The owner is written behind the request.
    assert!(
        common::eventually_async(async || {
            call(&gw, &token, Method::GET, "/api/resources", None)
                .await
                .1["total"]
                == 1
        })
        .await
    );
    let (_, resources) = call(&gw, &token, Method::GET, "/api/resources", None).await;
    assert_eq!(fields(&resources), described(&schemas["ResourcePage"]));
    assert_eq!(
        fields(&resources["items"][0]),
        described(&schemas["ResourcePage"]["properties"]["items"]["items"]),
        "ResourcePage items"
    );
}
