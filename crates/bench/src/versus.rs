//! S1, S4 and S3: the gateway beside both floors — the hyper floor (the gateway's own stack doing
//! only the key swap and byte piping) and nginx (where there is one) — every figure with the
//! gateway's ratio to each. The targets and the smoke's gate stay on the hyper floor.

use std::time::Duration;

use serde_json::{Value, json};

use crate::load::{Call, Sample, added, checked, closed_loop, interleaved_beside, sequential};
use crate::procs::Server;
use crate::report::{Row, Versus, ratio, us};
use crate::rig::{CLIENT_KEY, Rig, native, openai};

/// What S1 hands on: the direct sample and the added p99s, for S10 and the smoke's gate.
pub(crate) struct OneAtATime {
    /// Straight to the mock.
    pub(crate) direct: Sample,
    /// Added p99 through the gateway, OpenAI chat translated.
    pub(crate) added_p99: f64,
    /// Added p99 through the hyper floor.
    pub(crate) floor_p99: f64,
}

/// What S4 hands on, for the smoke's gate.
pub(crate) struct FirstByte {
    /// Added p99 to the first byte through the gateway.
    pub(crate) added_p99: f64,
    /// Added p99 to the first byte through the hyper floor.
    pub(crate) floor_p99: f64,
    /// No answer near the 40 ms of the Nagle / delayed-ACK trap.
    pub(crate) no_40ms_mode: bool,
}

/// The native call to nginx, when it runs.
fn nginx_call(rig: &Rig, stream: bool) -> Option<Call> {
    rig.nginx
        .as_ref()
        .ok()
        .map(|nginx| native(nginx.url(), stream, "k", 16))
}

/// Checks `sample` (nginx's, when there is one).
fn checked_if(sample: Option<&Sample>, what: &str) -> Result<(), String> {
    sample.map_or(Ok(()), |sample| checked(sample, what))
}

/// S1: one request at a time, non-streamed, with translation (OpenAI → Gemini).
pub(crate) async fn one_at_a_time(
    rig: &Rig,
    http: &reqwest::Client,
    count: usize,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
) -> Result<OneAtATime, String> {
    let by_nginx = nginx_call(rig, false);
    for call in [
        native(&rig.mock.url, false, "k", 16),
        native(&rig.floor.url, false, "k", 16),
        openai(&rig.gateway.url, false, 16),
    ]
    .iter()
    .chain(&by_nginx)
    {
        sequential(http, call, 200, false).await; // warm-up
    }
    // Interleaved in rounds, so that a slow moment of this shared machine weighs on every
    // entrant alike instead of on whichever ran then.
    let calls = [
        native(&rig.mock.url, false, "k", 16),
        native(&rig.floor.url, false, "k", 16),
        openai(&rig.gateway.url, false, 16),
        native(&rig.gateway.url, false, CLIENT_KEY, 16),
    ];
    let ([direct, floor, ours, ours_native], nginx) =
        interleaved_beside(http, &calls, by_nginx.as_ref(), count, false).await;
    for (sample, what) in [
        (&direct, "S1 direct"),
        (&floor, "S1 floor"),
        (&ours, "S1 gateway"),
        (&ours_native, "S1 native"),
    ] {
        checked(sample, what)?;
    }
    checked_if(nginx.as_ref(), "S1 nginx")?;
    let nginx_added = |p: f64| nginx.as_ref().map(|nginx| added(nginx, &direct, p));
    let (added_p99, floor_p99) = (added(&ours, &direct, 99.0), added(&floor, &direct, 99.0));
    let s1_met = added_p99 <= 100.0 && added_p99 <= 1.5 * floor_p99.max(1.0);
    rows.push(Row {
        id: "S1",
        what: "added latency p99, one at a time, OpenAI chat (translated)".into(),
        target: "≤ 100 µs; ≤ 1.5× floor".into(),
        ours: us(added_p99),
        floor: us(floor_p99),
        ratio: ratio(added_p99, floor_p99),
        nginx: Versus::of(added_p99, nginx_added(99.0), us),
        met: Some(s1_met),
    });
    let (added_p50, floor_p50) = (added(&ours, &direct, 50.0), added(&floor, &direct, 50.0));
    rows.push(Row {
        id: "S1",
        what: "added latency p50, one at a time, OpenAI chat".into(),
        target: "–".into(),
        ours: us(added_p50),
        floor: us(floor_p50),
        ratio: ratio(added_p50, floor_p50),
        nginx: Versus::of(added_p50, nginx_added(50.0), us),
        met: None,
    });
    let native_p99 = added(&ours_native, &direct, 99.0);
    rows.push(Row {
        id: "S1",
        what: "added latency p99, one at a time, native passthrough".into(),
        target: "–".into(),
        ours: us(native_p99),
        floor: us(floor_p99),
        ratio: ratio(native_p99, floor_p99),
        nginx: Versus::of(native_p99, nginx_added(99.0), us),
        met: None,
    });
    let nginx_at = |p: f64| nginx.as_ref().map(|nginx| nginx.percentile(p));
    raw.insert("s1".into(), json!({"direct_p50": direct.percentile(50.0), "direct_p99": direct.percentile(99.0), "floor_p99": floor.percentile(99.0), "nginx_p50": nginx_at(50.0), "nginx_p99": nginx_at(99.0), "gateway_p50": ours.percentile(50.0), "gateway_p99": ours.percentile(99.0), "native_p99": ours_native.percentile(99.0)}));
    Ok(OneAtATime {
        direct,
        added_p99,
        floor_p99,
    })
}

/// S4: time to first byte of a stream.
pub(crate) async fn first_byte(
    rig: &Rig,
    http: &reqwest::Client,
    streams: usize,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
) -> Result<FirstByte, String> {
    let calls = [
        native(&rig.mock.url, true, "k", 16),
        native(&rig.floor.url, true, "k", 16),
        openai(&rig.gateway.url, true, 16),
    ];
    let by_nginx = nginx_call(rig, true);
    let ([direct, floor, ours], nginx) =
        interleaved_beside(http, &calls, by_nginx.as_ref(), streams, true).await;
    for (sample, what) in [
        (&direct, "S4 direct"),
        (&floor, "S4 floor"),
        (&ours, "S4 gateway"),
    ] {
        checked(sample, what)?;
    }
    checked_if(nginx.as_ref(), "S4 nginx")?;
    let (added_p99, floor_p99) = (added(&ours, &direct, 99.0), added(&floor, &direct, 99.0));
    let no_40ms_mode = ours.percentile(99.0) < 30_000.0;
    rows.push(Row {
        id: "S4",
        what: "stream time to first byte, added p99 (OpenAI stream)".into(),
        target: "≤ 250 µs; no 40 ms mode".into(),
        ours: us(added_p99),
        floor: us(floor_p99),
        ratio: ratio(added_p99, floor_p99),
        nginx: Versus::of(
            added_p99,
            nginx.as_ref().map(|nginx| added(nginx, &direct, 99.0)),
            us,
        ),
        met: Some(added_p99 <= 250.0 && no_40ms_mode),
    });
    raw.insert("s4".into(), json!({"direct_p99": direct.percentile(99.0), "floor_p99": floor.percentile(99.0), "nginx_p99": nginx.as_ref().map(|nginx| nginx.percentile(99.0)), "gateway_p99": ours.percentile(99.0)}));
    Ok(FirstByte {
        added_p99,
        floor_p99,
        no_40ms_mode,
    })
}

/// A closed loop of `workers` on `call` through `server` for `duration`: the sample and the
/// server's CPU microseconds per request.
async fn loaded(
    http: &reqwest::Client,
    server: &Server,
    call: &Call,
    workers: usize,
    duration: Duration,
    what: &str,
) -> Result<(Sample, f64), String> {
    let before = server.cpu_time();
    let run = closed_loop(http, call, workers, duration).await;
    let cpu = server.cpu_time().saturating_sub(before);
    checked(&run, what)?;
    let per_request = cpu.as_secs_f64() * 1e6 / run.micros.len().max(1) as f64;
    Ok((run, per_request))
}

/// How many times S3 runs each proxy at each concurrency, interleaved (the floor, nginx, the
/// gateway; then again): this machine's speed drifts within minutes, and one run of each could
/// land a proxy in a slow spell. Each figure is the median of its rounds.
const S3_ROUNDS: usize = 3;

/// The median of a few figures.
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}

/// One proxy's S3 rounds at one concurrency: requests per second and CPU µs per request.
#[derive(Default)]
struct Rounds {
    rps: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Rounds {
    fn add(&mut self, (run, cpu_us): (Sample, f64)) {
        self.rps.push(run.rate());
        self.cpu_us.push(cpu_us);
    }

    /// The medians: requests per second, CPU µs per request.
    fn medians(&self) -> (f64, f64) {
        (median(self.rps.clone()), median(self.cpu_us.clone()))
    }
}

/// S3: closed loop, requests per second on one core, CPU per request; at each concurrency
/// `S3_ROUNDS` rounds of the hyper floor, nginx, then the gateway.
pub(crate) async fn capacity(
    rig: &Rig,
    http: &reqwest::Client,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    let duration = Duration::from_secs(4);
    let mut s3 = serde_json::Map::new();
    for workers in [1usize, 16, 64] {
        let floor_call = native(&rig.floor.url, false, "k", 16);
        let gateway_call = openai(&rig.gateway.url, false, 16);
        let (mut floor, mut nginx, mut gateway) =
            (Rounds::default(), Rounds::default(), Rounds::default());
        for _ in 0..S3_ROUNDS {
            floor.add(loaded(http, &rig.floor, &floor_call, workers, duration, "S3 floor").await?);
            if let Ok(server) = &rig.nginx {
                let call = native(server.url(), false, "k", 16);
                nginx.add(
                    loaded(http, server.server(), &call, workers, duration, "S3 nginx").await?,
                );
            }
            gateway.add(
                loaded(
                    http,
                    &rig.gateway,
                    &gateway_call,
                    workers,
                    duration,
                    "S3 gateway",
                )
                .await?,
            );
        }
        let (floor_rps, fl_cpu) = floor.medians();
        let (gateway_rps, gw_cpu) = gateway.medians();
        let (nginx_rps, nginx_cpu) = if nginx.rps.is_empty() {
            (None, None)
        } else {
            let (rps, cpu) = nginx.medians();
            (Some(rps), Some(cpu))
        };
        s3.insert(format!("c{workers}"), json!({"rounds": S3_ROUNDS, "floor_rps": floor_rps, "nginx_rps": nginx_rps, "gateway_rps": gateway_rps, "floor_cpu_us": fl_cpu, "nginx_cpu_us": nginx_cpu, "gateway_cpu_us": gw_cpu, "each_round": {"floor_rps": floor.rps, "nginx_rps": nginx.rps, "gateway_rps": gateway.rps, "floor_cpu_us": floor.cpu_us, "nginx_cpu_us": nginx.cpu_us, "gateway_cpu_us": gateway.cpu_us}}));
        if workers == 64 {
            let met =
                gateway_rps >= 10_000.0 && gateway_rps >= 0.7 * floor_rps && gw_cpu <= 1.5 * fl_cpu;
            rows.push(Row {
                id: "S3",
                what: format!(
                    "requests per second, closed loop c=64, OpenAI chat (median of {S3_ROUNDS} interleaved rounds)"
                ),
                target: "≥ 10k RPS; ≥ 0.7× floor".into(),
                ours: format!("{gateway_rps:.0}"),
                floor: format!("{floor_rps:.0}"),
                ratio: format!("{:.2}×", gateway_rps / floor_rps.max(1.0)),
                nginx: Versus::of(gateway_rps, nginx_rps, |rps| format!("{rps:.0}")),
                met: Some(met),
            });
            rows.push(Row {
                id: "S3",
                what: "CPU per request at c=64".into(),
                target: "≤ 1.5× floor".into(),
                ours: format!("{gw_cpu:.0} µs"),
                floor: format!("{fl_cpu:.0} µs"),
                ratio: ratio(gw_cpu, fl_cpu),
                nginx: Versus::of(gw_cpu, nginx_cpu, |cpu| format!("{cpu:.0} µs")),
                met: Some(gw_cpu <= 1.5 * fl_cpu),
            });
        }
    }
    raw.insert("s3".into(), Value::Object(s3));
    Ok(())
}
