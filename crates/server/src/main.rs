//! The `gemini-pool` binary: read the configuration, set up logging, serve.

use std::collections::HashMap;
use std::process::ExitCode;

use server::config::Config;
use server::state::AppState;

#[tokio::main]
async fn main() -> ExitCode {
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
    server::telemetry::init(&config);
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
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on http://{addr}");
    }
    server::probe::spawn(
        state.clone(),
        server::probe::Prober::gentle(),
        std::time::Duration::from_secs(30),
    );
    let served = server::serve(listener, server::build_router(state.clone())).await;
    // Everything counted so far reaches the database before the process ends.
    state.accountant.flush().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string()),
    }
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
