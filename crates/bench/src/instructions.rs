//! `bench instructions`: the instructions a request costs each entrant, counted by callgrind.
//!
//! Why: this machine's speed moves from hour to hour (S3's CPU per request doubled between two
//! runs of one build on one day), which hides a change of a few percent. Callgrind counts
//! instructions, not time: the same build and requests give the same count whatever else the
//! machine does, so two builds can be compared to the percent. It says nothing of cache misses,
//! waits or wake-ups; S1 and S3 remain the record of time.
//!
//! Each entrant is started twice under `valgrind --tool=callgrind`, sent [`SHORT`] and then
//! [`LONG`] requests one at a time, and stopped with SIGTERM; the difference of the two totals
//! over the difference of the counts leaves out start-up and shutdown. What runs on a timer
//! (the accounting flush, once a second) is counted as it happens in the longer run's extra
//! seconds.

use std::path::Path;
use std::time::Duration;

use crate::load::{Call, client, sequential};
use crate::procs::Server;
use crate::rig::{FOUR_KEYS, MODEL, binaries, gateway_env, native, openai};

/// The gate CI holds the gateway's translated chat to, in instructions per request against the
/// hyper floor's: generous (1.95× when it was set), so that only a gross regression fails.
const GATE: f64 = 3.0;

/// Requests in the shorter run.
const SHORT: usize = 50;
/// Requests in the longer run.
const LONG: usize = 550;

/// One entrant: what it is, how to start it (program and arguments after valgrind's), and
/// which call it is sent.
struct Entrant {
    what: &'static str,
    program: Vec<String>,
    env: Vec<(&'static str, String)>,
    call: fn(&str) -> Call,
}

/// Runs the count for the gateway (OpenAI chat, native) and the hyper floor (native), prints a
/// table, and says whether the translated chat is within [`GATE`] of the floor.
pub async fn run() -> Result<bool, String> {
    let valgrind = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|e| format!("valgrind: {e} (Debian's package valgrind installs it)"))?;
    if !valgrind.status.success() {
        return Err("valgrind --version failed".to_owned());
    }
    let bin = binaries()?;
    let data =
        std::env::temp_dir().join(format!("gemini-pool-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let _folder = crate::nginx::Folder(data.clone());
    let mock = Server::start(&bin.join("mock-gemini"), &["--fast"], &[], Some(0))?;
    let gateway = bin.join("gemini-pool").display().to_string();
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let floor_args = vec![
        me.display().to_string(),
        "floor".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--upstream".to_owned(),
        mock.url.clone(),
    ];
    let entrants = [
        Entrant {
            what: "gateway, OpenAI chat (translated)",
            program: vec![gateway.clone()],
            env: gateway_env(&data, &mock.url, FOUR_KEYS, "chat", &[]),
            call: |base| openai(base, false, 16),
        },
        Entrant {
            what: "gateway, native generateContent",
            program: vec![gateway],
            env: gateway_env(&data, &mock.url, FOUR_KEYS, "native", &[]),
            call: |base| native(base, false, crate::rig::CLIENT_KEY, 16),
        },
        Entrant {
            what: "hyper floor, native generateContent",
            program: floor_args,
            env: Vec::new(),
            call: |base| native(base, false, "k", 16),
        },
    ];
    let mut table = format!(
        "Instructions per request (callgrind, {LONG} against {SHORT} requests one at a time, \
         {MODEL}, 16-byte prompt)\n\n| entrant | instructions per request | × hyper floor |\n|---|---|---|\n"
    );
    let mut counted = Vec::new();
    for entrant in &entrants {
        let short = total(entrant, &data, SHORT).await?;
        let long = total(entrant, &data, LONG).await?;
        let per_request = long.saturating_sub(short) as f64 / (LONG - SHORT) as f64;
        counted.push((entrant.what, per_request));
    }
    let floor = counted.last().map_or(0.0, |(_, per_request)| *per_request);
    let chat = counted.first().map_or(0.0, |(_, per_request)| *per_request);
    let within = floor > 0.0 && chat <= GATE * floor;
    for (what, per_request) in &counted {
        table.push_str(&format!(
            "| {what} | {:.1}k | {:.2}× |\n",
            per_request / 1000.0,
            per_request / floor.max(1.0)
        ));
    }
    table.push_str(&format!(
        "\nGate: the translated chat at most {GATE}× the hyper floor: {}\n",
        if within { "met" } else { "**not met**" }
    ));
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{table}");
    }
    Ok(within)
}

/// The instructions `entrant` ran, from its start to its exit, having answered `requests`.
async fn total(entrant: &Entrant, data: &Path, requests: usize) -> Result<u64, String> {
    let out = data.join(format!("callgrind-{requests}.out"));
    let _ = std::fs::remove_file(&out);
    let mut args = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    args.extend(entrant.program.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(Path::new("valgrind"), &args, &entrant.env, Some(1))?;
    let sample = sequential(&client(), &(entrant.call)(&server.url), requests, false).await;
    if sample.errors > 0 {
        return Err(format!(
            "{}: {} of {requests} answers were wrong",
            entrant.what, sample.errors
        ));
    }
    // Callgrind writes its counts as the program exits: asked to stop, not killed.
    server.stop(Duration::from_secs(60))?;
    let counts = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    counts
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|total| total.trim().parse().ok())
        .ok_or_else(|| format!("{}: no totals line", out.display()))
}
