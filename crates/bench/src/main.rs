//! The benchmark rig: `cargo run -p bench --release -- all` (every scenario, a report in
//! `results/`), `-- smoke` (a short S1 + S4 with a generous gate, for CI), `-- instructions`
//! (instructions per request under callgrind, for comparing builds). Everything runs on
//! loopback: the `mock-gemini` stand-in in its fast mode, a floor proxy (the same stack doing only
//! key swap and byte piping), nginx as a second floor where it is installed
//! (`./scripts/nginx-floor.sh`), and the gateway; the gateway and the floors are pinned to core 1,
//! the load and the mock to core 0.

mod brownout;
mod floor;
mod instructions;
mod large;
mod load;
mod nginx;
mod peers;
mod procs;
mod report;
mod rig;
mod scenarios;
mod streams;
mod versus;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The load side lives on core 0, with the mock: pinned before the runtime starts its
    // threads, which inherit the affinity (pinning later would move only the main thread).
    if args.first().is_some_and(|command| command != "floor") {
        procs::pin_self(0);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.to_string()),
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["floor", "--listen", listen, "--upstream", upstream] => runtime
            .block_on(floor::serve(listen, (*upstream).to_owned()))
            .map(|()| true),
        ["all"] => runtime.block_on(scenarios::run(scenarios::Mode::All)),
        ["smoke"] => runtime.block_on(scenarios::run(scenarios::Mode::Smoke)),
        ["part", names @ ..] => runtime.block_on(scenarios::run_part(names)),
        ["peers"] => runtime.block_on(peers::run()),
        ["instructions"] => runtime.block_on(instructions::run()),
        _ => Err(
            "usage: bench all | smoke | peers | instructions | part S1|S2|S3|S4|S5|S6|S7|S8|S11|S12 ..."
                .to_owned(),
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => fail("a gated figure is out of bounds (see the table above)"),
        Err(error) => fail(&error),
    }
}

fn fail(message: &str) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "bench: {message}");
    ExitCode::FAILURE
}
