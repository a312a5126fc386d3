//! `/metrics`: Prometheus text, no secrets, and no label that grows with what clients send.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashSet;

use common::{CLIENT_KEY, Harness, Setup, text_request};
use serde_json::json;

const METRICS_TOKEN: &str = "metrics-test-token-0123";

#[tokio::test]
async fn metrics_are_prometheus_text_without_secrets_or_unbounded_labels() {
    let secret_key = "AIzaSyMetricsSecretKey0000000000000000";
    // Without METRICS_TOKEN, /metrics is public and names no Google project (the registry is
    // one per process, so this runs first).
    let public = Harness::start(Setup::with_keys(&[(secret_key, "public-project")])).await;
    assert_eq!(
        public
            .generate("gemini-2.5-flash", text_request("hi"))
            .await
            .status(),
        200
    );
    let response = public
        .http
        .get(public.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "no credentials needed without a token"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("gateway_requests_total"));
    assert!(!text.contains("project="), "{text}");
    assert!(!text.contains("public-project"));

    let mut setup = Setup::with_keys(&[(secret_key, "metrics-project")]);
    setup.env.push(("DEFAULT_RPM_LIMIT", "1000".into()));
    setup.env.push(("METRICS_TOKEN", METRICS_TOKEN.into()));
    let gw = Harness::start(setup).await;
    assert_eq!(
        gw.generate("gemini-2.5-flash", text_request("hi"))
            .await
            .status(),
        200
    );
    let chat = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    chat.bytes().await.unwrap();
    // A client sending hundreds of model names and scanning paths must not add label values.
    for i in 0..150 {
        gw.generate(&format!("gemini-made-up-{i}"), text_request("x"))
            .await
            .bytes()
            .await
            .unwrap();
        gw.http
            .get(gw.url(&format!("/scan/{i}?key={CLIENT_KEY}")))
            .send()
            .await
            .unwrap();
    }

    for wrong in [None, Some("metrics-test-token-0124"), Some("metrics")] {
        let mut request = gw.http.get(gw.url("/metrics"));
        if let Some(token) = wrong {
            request = request.bearer_auth(token);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 401, "{wrong:?}");
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    }
    let response = gw
        .http
        .get(gw.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the token opens it");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for secret in [secret_key, CLIENT_KEY, "key="] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    let sample = regex_like_sample_line;
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with("# HELP ") || line.starts_with("# TYPE ") || sample(line),
            "not Prometheus text: {line}"
        );
    }
    assert!(
        text.contains(r#"gateway_requests_total{route="/v1beta/{*path}",status_class="2xx"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_requests_total{route="/v1/chat/completions",status_class="2xx"}"#)
    );
    assert!(text.contains(r#"gateway_keys{state="usable"} 1"#));
    assert!(text.contains(r#"gateway_upstream_attempts_total{outcome="success"}"#));
    assert!(text.contains("gateway_time_to_first_byte_seconds_bucket"));
    assert!(text.contains(r#"gateway_quota_remaining{project="metrics-project",model="gemini-2.5-flash",window="minute"}"#));
    let routes: HashSet<&str> = label_values(&text, "route");
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("scan") && !r.contains("gemini-made-up")),
        "{routes:?}"
    );
    let models = label_values(&text, "model");
    assert!(models.len() <= 65, "{} model label values", models.len());
    assert!(models.contains("other"));
}

/// `name{labels} value` or `name value`.
fn regex_like_sample_line(line: &str) -> bool {
    let (series, value) = match line.rsplit_once(' ') {
        Some(parts) => parts,
        None => return false,
    };
    let name = series.split('{').next().unwrap_or("");
    value.parse::<f64>().is_ok()
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && (!series.contains('{') || series.ends_with('}'))
}

fn label_values<'a>(text: &'a str, label: &str) -> HashSet<&'a str> {
    let marker = format!("{label}=\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let start = l.find(&marker)? + marker.len();
            let end = start + l[start..].find('"')?;
            Some(&l[start..end])
        })
        .collect()
}
