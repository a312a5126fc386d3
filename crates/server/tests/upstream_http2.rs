//! HTTP/2 to the upstream (`UPSTREAM_H2C`): many streams share few connections, and a new
//! connection opens when one carries its hundred, instead of requests queueing behind them.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::{Harness, Setup, text_request};
use reqwest::Method;

/// More than the mock's HTTP/2 server allows on one connection (hyper's default, 200): with one
/// connection the last 50 would wait for the first to end, which they never do here.
const STREAMS: usize = 250;

#[tokio::test]
async fn streams_beyond_one_connections_limit_open_new_connections() {
    let mut setup = Setup::with_keys(&[("pool-key-a", "p1"), ("pool-key-b", "p2")]);
    setup.mock.stream_events = 3;
    setup.env.push(("UPSTREAM_H2C", "true".to_owned()));
    let gw = Harness::start(setup).await;
    // Every event after the first waits until the test releases it: all streams stay open.
    let gate = gw.mock.gate_streams();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let request = gw
                .native(
                    Method::POST,
                    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                )
                .json(&text_request(&format!("stream {i}")));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.text().await.unwrap()
            })
        })
        .collect();
    let all_started = common::eventually(|| gw.mock.streams().started() == STREAMS as u64).await;
    assert!(
        all_started,
        "only {} of {STREAMS} streams reached the upstream",
        gw.mock.streams().started()
    );
    // 100 streams per connection: three connections, every stream counted on one.
    assert_eq!(gw.state.upstream.lanes_in_use(), (3, STREAMS));
    let metrics = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_upstream_http2_connections 3")
            && metrics.contains(&format!("gateway_upstream_http2_streams {STREAMS}")),
        "{metrics}"
    );

    gate.add_permits(2 * STREAMS);
    for task in tasks {
        let body = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body.matches("data: ").count(), 3, "{body}");
        assert!(body.contains(r#""finishReason":"STOP""#), "{body}");
    }
    // Every stream gave its place back when its body ended.
    assert!(common::eventually(|| gw.state.upstream.lanes_in_use() == (0, 0)).await);
    let requests = gw.mock.requests();
    assert_eq!(requests.len(), STREAMS);
    assert!(
        requests.iter().all(|r| r.version == "HTTP/2.0"),
        "{:?}",
        requests.iter().map(|r| &r.version).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn without_h2c_a_plain_http_upstream_is_spoken_to_in_http_1_1() {
    let gw = Harness::start(Setup::with_keys(&[("pool-key-a", "p1")])).await;
    let response = gw.generate("gemini-2.5-flash", text_request("hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gw.mock.requests()[0].version, "HTTP/1.1");
    assert_eq!(gw.state.upstream.lanes_in_use(), (0, 0));
}
