//! S11, the brown-out: every key answers `503 UNAVAILABLE` ("The model is overloaded") for
//! [`BROWNOUT`] while sixteen clients keep sending OpenAI chat requests; then the upstream
//! recovers. Measured: upstream calls during it (the pool must not multiply the storm), what the
//! clients saw (answers per status, all of them fast), and the time from the upstream's recovery
//! until every request is served again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::Call;
use crate::report::Row;
use crate::rig::{gateway, openai};

/// How long every key is overloaded.
pub(crate) const BROWNOUT: Duration = Duration::from_secs(30);
/// Normal service before and after it.
const CALM: Duration = Duration::from_secs(5);
/// Clients sending one request after another.
const CLIENTS: usize = 16;

/// One client request: when it started and ended (since the scenario began), and its status.
struct Answer {
    started: Duration,
    took: Duration,
    status: u16,
}

/// Runs S11 against a mock of its own and a gateway with four projects.
pub(crate) async fn brownout(
    bin: &std::path::Path,
    data: &std::path::Path,
    http: &reqwest::Client,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    let mock = crate::procs::Server::start(&bin.join("mock-gemini"), &["--fast"], &[], Some(0))?;
    let keys = "brown-key-1@p1,brown-key-2@p2,brown-key-3@p3,brown-key-4@p4";
    let gateway = gateway(bin, data, &mock.url, keys, "s11", &[])?;
    let call = openai(&gateway.url, false, 16);
    let control = |path: &str| format!("{}{path}", mock.url);
    let calls = || async {
        http.get(control("/__mock/calls"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?
            .parse::<u64>()
            .ok()
    };

    let began = Instant::now();
    let stop_at = CALM + BROWNOUT + CALM;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, call) = (http.clone(), call.clone());
            tokio::spawn(async move { client_loop(&http, &call, began, stop_at).await })
        })
        .collect();
    tokio::time::sleep(CALM).await;
    let calls_before = calls().await.ok_or("the mock's call count")?;
    let outage_started = began.elapsed();
    http.post(control("/__mock/outage?mode=overloaded"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(BROWNOUT).await;
    http.post(control("/__mock/outage?mode=off"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let outage_ended = began.elapsed();
    let calls_during = calls().await.ok_or("the mock's call count")? - calls_before;
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.map_err(|e| e.to_string())?);
    }

    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.started >= outage_started && a.started + a.took <= outage_ended)
        .collect();
    let refused = during.iter().filter(|a| a.status != 200).count();
    let slowest_refusal = during
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    // Full service: from the recovery until the start of the first request after which every
    // request succeeded.
    let last_failure_start = answers
        .iter()
        .filter(|a| a.status != 200 && a.started >= outage_ended.saturating_sub(BROWNOUT))
        .map(|a| a.started)
        .max()
        .unwrap_or(outage_ended);
    let to_full_service = last_failure_start.saturating_sub(outage_ended);
    let after_ok = answers
        .iter()
        .filter(|a| a.started > last_failure_start)
        .all(|a| a.status == 200);
    let statuses: std::collections::BTreeMap<u16, usize> =
        during.iter().fold(Default::default(), |mut counts, a| {
            *counts.entry(a.status).or_default() += 1;
            counts
        });
    raw.insert(
        "s11".into(),
        json!({
            "brownout_s": BROWNOUT.as_secs(), "clients": CLIENTS,
            "requests_during": during.len(), "refused_during": refused,
            "statuses_during": statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "upstream_calls_during": calls_during,
            "slowest_refusal_ms": slowest_refusal.as_secs_f64() * 1000.0,
            "to_full_service_ms": to_full_service.as_secs_f64() * 1000.0,
            "all_served_after": after_ok,
        }),
    );
    let per_second = calls_during as f64 / BROWNOUT.as_secs_f64();
    rows.push(Row {
        id: "S11",
        what: format!("brown-out ({} s of 503 on every key, {CLIENTS} clients): time to full service after it", BROWNOUT.as_secs()),
        target: "≤ 2 s".into(),
        ours: format!("{:.0} ms", to_full_service.as_secs_f64() * 1000.0),
        floor: "–".into(),
        ratio: "–".into(),
        nginx: None,
        met: Some(after_ok && to_full_service <= Duration::from_secs(2)),
    });
    rows.push(Row {
        id: "S11",
        what: format!(
            "brown-out: upstream calls during it, for {} client requests",
            during.len()
        ),
        target: "not multiplied".into(),
        ours: format!("{calls_during} ({per_second:.1}/s)"),
        floor: "–".into(),
        ratio: "–".into(),
        nginx: None,
        met: Some((calls_during as usize) < during.len().max(1)),
    });
    rows.push(Row {
        id: "S11",
        what: "brown-out: client answers during it (status: count), slowest refusal".into(),
        target: "honest, fast".into(),
        ours: format!(
            "{}; {:.1} ms",
            statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            slowest_refusal.as_secs_f64() * 1000.0
        ),
        floor: "–".into(),
        ratio: "–".into(),
        nginx: None,
        met: None,
    });
    drop(gateway);
    drop(mock);
    Ok(())
}

/// One client: a request after the other until `stop_at` (since `began`).
async fn client_loop(
    http: &reqwest::Client,
    call: &Call,
    began: Instant,
    stop_at: Duration,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    while began.elapsed() < stop_at {
        let started = began.elapsed();
        let sent = Instant::now();
        let status = match call.request(http).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
            Err(_) => 0,
        };
        answers.push(Answer {
            started,
            took: sent.elapsed(),
            status,
        });
        if status != 200 {
            // A refused client waits a little, as an SDK would (not the whole Retry-After: the
            // point is to see when service comes back).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    answers
}
