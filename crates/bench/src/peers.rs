//! Peers on the same rig (`-- peers`, after `scripts/peers.sh`): LiteLLM's proxy and Portkey's
//! gateway, each pinned to the gateway's core and pointed at the same mock, measured beside
//! gemini-pool and the floor: added latency one at a time, time to first byte of a stream,
//! requests per second and CPU per request in a closed loop, memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::load::{Call, Sample, added, checked, client, closed_loop, interleaved, sequential};
use crate::procs::Server;
use crate::report::{environment, us};
use crate::rig::{MODEL, binaries, chat_body, native, openai, rig};

/// LiteLLM's admin key (it refuses to start without one).
const LITELLM_MASTER_KEY: &str = "sk-bench-master-key-0123456789abcdef";

fn peers_dir() -> Result<PathBuf, String> {
    let dir = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join("target/peers");
    if !dir.join("venv/bin/litellm").exists()
        || !dir
            .join("node_modules/@portkey-ai/gateway/build/start-server.js")
            .exists()
    {
        return Err("the peers are not installed: run ./scripts/peers.sh first".to_owned());
    }
    Ok(dir)
}

fn portkey(dir: &Path) -> Result<Server, String> {
    let script = dir.join("node_modules/@portkey-ai/gateway/build/start-server.js");
    Server::start_on_free_port(
        Path::new("node"),
        |port| {
            vec![
                script.display().to_string(),
                format!("--port={port}"),
                "--headless".to_owned(),
            ]
        },
        &[
            ("NODE_ENV", "production".to_owned()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ],
        Some(1),
        "/",
    )
}

fn litellm(dir: &Path, data: &Path, mock: &str) -> Result<Server, String> {
    let config = data.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: gemini/{MODEL}\n      api_key: bench-key\n      api_base: {mock}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    Server::start_on_free_port(
        &dir.join("venv/bin/litellm"),
        |port| {
            vec![
                "--config".to_owned(),
                config.display().to_string(),
                "--host".to_owned(),
                "127.0.0.1".to_owned(),
                "--port".to_owned(),
                port.to_string(),
            ]
        },
        &[
            ("LITELLM_MASTER_KEY", LITELLM_MASTER_KEY.to_owned()),
            ("LITELLM_LOG", "ERROR".to_owned()),
            // Loopback only: the model price list bundled with the package, no telemetry.
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True".to_owned()),
            ("LITELLM_TELEMETRY", "False".to_owned()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ],
        Some(1),
        "/health/liveliness",
    )
}

fn chat(url: &str, stream: bool, headers: Vec<(&'static str, String)>) -> Call {
    Call {
        url: format!("{url}/v1/chat/completions"),
        body: chat_body(16, stream),
        headers,
        expect: if stream {
            "chat.completion.chunk"
        } else {
            "chat.completion"
        },
    }
}

fn portkey_call(url: &str, mock: &str, stream: bool) -> Call {
    chat(
        url,
        stream,
        vec![
            ("content-type", "application/json".to_owned()),
            ("authorization", "Bearer bench-key".to_owned()),
            ("x-portkey-provider", "google".to_owned()),
            ("x-portkey-custom-host", format!("{mock}/v1beta")),
        ],
    )
}

fn litellm_call(url: &str, stream: bool) -> Call {
    chat(
        url,
        stream,
        vec![
            ("content-type", "application/json".to_owned()),
            ("authorization", format!("Bearer {LITELLM_MASTER_KEY}")),
        ],
    )
}

/// Runs the peers' comparison and writes `results/peers.md` and `results/peers.json`.
pub async fn run() -> Result<bool, String> {
    let dir = peers_dir()?;
    let machine = environment();
    let rig = rig(binaries()?).await?;
    let portkey = portkey(&dir)?;
    let litellm = litellm(&dir, &rig.data, &rig.mock.url)?;
    let http = client();
    let mock = rig.mock.url.clone();
    // The columns of the table, in order; the floor passes a native request through.
    let entrants: [&Server; 4] = [&rig.gateway, &portkey, &litellm, &rig.floor];
    let calls = |stream: bool| {
        [
            openai(&rig.gateway.url, stream, 16),
            portkey_call(&portkey.url, &mock, stream),
            litellm_call(&litellm.url, stream),
            native(&rig.floor.url, stream, "k", 16),
        ]
    };
    for call in calls(false).iter().chain(calls(true).iter()) {
        checked(
            &sequential(&http, call, 50, false).await,
            &format!("warm-up of {}", call.url),
        )?;
    }

    // One at a time, interleaved in rounds: straight to the mock, then each entrant.
    let [ours, pk, ll, floor] = calls(false);
    let [direct, s1 @ ..] = interleaved(
        &http,
        &[native(&mock, false, "k", 16), ours, pk, ll, floor],
        2000,
        false,
    )
    .await;
    let [ours, pk, ll, floor] = calls(true);
    let [direct_ttfb, s4 @ ..] = interleaved(
        &http,
        &[native(&mock, true, "k", 16), ours, pk, ll, floor],
        500,
        true,
    )
    .await;
    for sample in std::iter::once(&direct).chain(&s1) {
        checked(sample, "peers S1")?;
    }
    for sample in std::iter::once(&direct_ttfb).chain(&s4) {
        checked(sample, "peers S4")?;
    }

    // Closed loop, 64 at a time, 4 s each: requests per second and CPU per request.
    let mut capacity = Vec::new();
    for (server, call) in entrants.iter().zip(calls(false)) {
        let before = server.cpu_time();
        let run = closed_loop(&http, &call, 64, Duration::from_secs(4)).await;
        let cpu = server.cpu_time().saturating_sub(before);
        checked(&run, "peers S3")?;
        capacity.push((
            run.rate(),
            cpu.as_secs_f64() * 1e6 / run.micros.len().max(1) as f64,
        ));
    }

    let columns = |f: &dyn Fn(usize) -> String| -> [String; 4] { [f(0), f(1), f(2), f(3)] };
    let latency = |samples: &[Sample; 4], base: &Sample, p: f64| {
        columns(&|i| us(added(&samples[i], base, p)))
    };
    let memory = columns(&|i| {
        let (rss, peak) = entrants[i].memory_kib();
        format!("{} MiB ({} MiB)", rss / 1024, peak / 1024)
    });
    let rows: Vec<(&str, [String; 4])> = vec![
        (
            "added latency p50, one at a time, OpenAI chat",
            latency(&s1, &direct, 50.0),
        ),
        (
            "added latency p99, one at a time, OpenAI chat",
            latency(&s1, &direct, 99.0),
        ),
        (
            "stream time to first byte, added p99",
            latency(&s4, &direct_ttfb, 99.0),
        ),
        (
            "requests per second, closed loop c=64, one core",
            columns(&|i| format!("{:.0}", capacity[i].0)),
        ),
        (
            "CPU per request at c=64",
            columns(&|i| format!("{:.0} µs", capacity[i].1)),
        ),
        ("resident memory after the runs (peak)", memory),
    ];
    let litellm_version = std::process::Command::new(dir.join("venv/bin/pip"))
        .args(["show", "litellm"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|line| line.strip_prefix("Version: ").map(str::to_owned))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let portkey_version =
        std::fs::read_to_string(dir.join("node_modules/@portkey-ai/gateway/package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|package| package["version"].as_str().map(str::to_owned))
            .unwrap_or_default();
    let mut table = format!(
        "# gemini-pool and its peers on one rig\n\nMeasured with `./scripts/peers.sh && cargo run -p bench --release -- peers` on {} ({} cores), commit {}, {}; LiteLLM {litellm_version} (one worker), Portkey gateway {portkey_version} (Node {}).\n\
         Every proxy pinned to the same core, load and the mock on the other; each translates OpenAI chat to Gemini against the same mock (the floor only passes a native request through). \
         \"Added\" is the figure through the proxy minus the same request sent straight to the mock.\n\n\
         | what | gemini-pool | Portkey | LiteLLM | floor |\n|---|---|---|---|---|\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["commit"].as_str().unwrap_or("?"),
        machine["date"].as_str().unwrap_or("?"),
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default(),
    );
    for (what, cells) in &rows {
        table.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            cells[0], cells[1], cells[2], cells[3]
        ));
    }
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{table}");
    }
    std::fs::create_dir_all("results").map_err(|e| e.to_string())?;
    std::fs::write("results/peers.md", &table).map_err(|e| e.to_string())?;
    let report = json!({
        "environment": machine,
        "versions": {"litellm": litellm_version, "portkey_gateway": portkey_version},
        "columns": ["gemini-pool", "Portkey", "LiteLLM", "floor"],
        "rows": rows.iter().map(|(what, cells)| json!({"what": what, "cells": cells})).collect::<Vec<_>>(),
    });
    std::fs::write(
        "results/peers.json",
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(true)
}
