//! The `gemini-pool` binary: read the command line and the configuration, set up logging, serve.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::ExitCode;

use server::cli::{self, Command};
use server::config::Config;
use server::state::AppState;

// mimalloc instead of the system allocator: every request allocates and frees many small
// buffers across threads, where glibc's malloc showed up as a sixth of the gateway's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // With one CPU to run on (a process pinned to one core, or a container limited to one CPU:
    // `available_parallelism` reads the affinity mask and the cgroup quota), a multi-thread
    // runtime still has two threads take turns on that CPU: the main thread driving `serve` and
    // the worker running the connections, with a kernel wake-up each time work passes between
    // them. One thread does the same work without those wake-ups: in the benchmark's S3 on one
    // pinned core, 0.60× nginx's requests per second against 0.56× (four alternating runs each),
    // and a third less CPU per request on a slower machine (120 µs against 180). With 10,000
    // streams opened at once (S6) it held less memory and none of the streams stalled, once the
    // accept loop takes connections in batches (see `serving::ACCEPT_BATCH`).
    let one_cpu = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => fail(&error.to_string()),
    }
}

async fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(error) => return fail(&error),
    };
    match command {
        Command::Help => return say(&cli::help()),
        Command::Version => return say(&format!("gemini-pool {}", env!("CARGO_PKG_VERSION"))),
        Command::HashPassword => return hash_password(),
        Command::Serve | Command::CheckConfig | Command::Healthcheck { .. } => {}
    }
    // The process environment wins over `.env`, which is read without modifying the environment.
    let dotenv: HashMap<String, String> = dotenvy::from_path_iter(".env")
        .map(|entries| entries.filter_map(Result::ok).collect())
        .unwrap_or_default();
    let config = match Config::from_lookup(|name| {
        std::env::var(name)
            .ok()
            .or_else(|| dotenv.get(name).cloned())
    }) {
        Ok(config) => config,
        Err(error) => return fail(&error.to_string()),
    };
    match command {
        Command::CheckConfig => return say(&config.summary()),
        Command::Healthcheck { ready } => {
            return healthcheck(config.listen_addr.port(), ready).await;
        }
        _ => {}
    }
    let _log_writer = server::telemetry::init(&config);
    // Before anything can record a metric (see `service::metrics`).
    server::service::metrics::install();
    let listen_addr = config.listen_addr;
    let state = match AppState::initialize(config).await {
        Ok(state) => state,
        Err(error) => return fail(&error.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(listen_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            return fail(&format!(
                "LISTEN_ADDR: cannot listen on {listen_addr}: {error}"
            ));
        }
    };
    let runtime = tokio::runtime::Handle::current();
    match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            tracing::info!("one CPU available: serving on one thread");
        }
        _ => tracing::info!(
            "{} CPUs available: serving on {} worker threads",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            runtime.metrics().num_workers()
        ),
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on http://{addr}");
    }
    server::service::probe::spawn(
        std::sync::Arc::clone(&state.relay),
        server::service::probe::Prober::gentle(),
        std::time::Duration::from_secs(30),
    );
    let served = server::serve(listener, server::build_router(state.clone()), &state).await;
    // Everything counted so far reaches the database before the process ends.
    state.accountant.flush().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string()),
    }
}

/// Exit 0 when the gateway on this machine answers `/healthz` (or `/readyz`) with 200.
async fn healthcheck(port: u16, ready: bool) -> ExitCode {
    let path = if ready { "readyz" } else { "healthz" };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    let answered = match client {
        Ok(client) => {
            client
                .get(format!("http://127.0.0.1:{port}/{path}"))
                .send()
                .await
        }
        Err(error) => return fail(&format!("healthcheck: {error}")),
    };
    match answered {
        Ok(response) if response.status().is_success() => say("ok"),
        Ok(response) => fail(&format!(
            "healthcheck: /{path} answered {}",
            response.status()
        )),
        Err(_) => fail(&format!("healthcheck: nothing answers on port {port}")),
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        return fail("hash-password: give the password on standard input");
    }
    match server::service::admin_auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => say(&hash),
        Err(error) => fail(&format!("hash-password: {error}")),
    }
}

/// Prints to standard output: the command's result. A reader that stops early (`| head`) is
/// not an error.
fn say(text: &str) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
    ExitCode::SUCCESS
}

/// One line on standard error, exit code 2.
fn fail(message: &str) -> ExitCode {
    #[expect(
        clippy::print_stderr,
        reason = "a start-up failure is reported before or without logging"
    )]
    {
        eprintln!("gemini-pool: {message}");
    }
    ExitCode::from(2)
}
