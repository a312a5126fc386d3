//! `mock-gemini`: serves the Gemini stand-in on a local address, for benchmarks and manual tests.
//!
//! ```text
//! mock-gemini [--listen ADDR] [--keys KEY@PROJECT,...] [--accept-any-key] [--rpm N] [--rpd N]
//!             [--stream-events N] [--stream-interval-ms N] [--delay-ms N] [--no-record]
//!             [--fast [--event-bytes N] [--fail-key KEY] [--stamp-events]]
//! ```
//! `--fast` is the benchmark mode: pre-serialised answers for any key, no bookkeeping.
//! It prints `mock-gemini listening on http://ADDR` once it accepts connections.

use std::time::Duration;

use mock_gemini::{MockConfig, MockGemini, MockKey};

#[tokio::main]
async fn main() -> Result<(), String> {
    let (listen, config, fast) = parse_args(std::env::args().skip(1))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let addr = listener.local_addr().map_err(|error| error.to_string())?;
    #[expect(clippy::print_stdout, reason = "the address is the binary's output")]
    {
        println!("mock-gemini listening on http://{addr}");
    }
    let router = match fast {
        Some(fast) => mock_gemini::fast::router(fast),
        None => MockGemini::new(config).router(),
    };
    // Like Google's front ends, send every event at once: with Nagle's algorithm an event
    // written while the one before is unacknowledged waits for the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router)
        .await
        .map_err(|error| error.to_string())
}

type Parsed = (String, MockConfig, Option<mock_gemini::fast::FastConfig>);

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut config = MockConfig::default();
    let mut fast = false;
    let mut event_bytes = 64usize;
    let mut fail_key = None;
    let mut stamp_events = false;
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |text: String, name: &str| {
            text.parse::<u64>()
                .map_err(|_| format!("{name} takes a whole number, not {text:?}"))
        };
        match flag.as_str() {
            "--listen" => listen = value("--listen")?,
            "--keys" => {
                for entry in value("--keys")?.split(',').filter(|e| !e.is_empty()) {
                    let (key, project) = entry.split_once('@').unwrap_or((entry, entry));
                    config.keys.push(MockKey::new(key, project));
                }
            }
            "--accept-any-key" => config.accept_any_key = true,
            "--fast" => fast = true,
            "--event-bytes" => {
                event_bytes = number(value("--event-bytes")?, "--event-bytes")? as usize
            }
            "--fail-key" => fail_key = Some(value("--fail-key")?),
            "--stamp-events" => stamp_events = true,
            "--no-record" => config.record_requests = false,
            "--rpm" => config.rpm_limit = Some(number(value("--rpm")?, "--rpm")? as u32),
            "--rpd" => config.rpd_limit = Some(number(value("--rpd")?, "--rpd")? as u32),
            "--stream-events" => {
                config.stream_events =
                    number(value("--stream-events")?, "--stream-events")? as usize;
            }
            "--stream-interval-ms" => {
                config.stream_interval = Duration::from_millis(number(
                    value("--stream-interval-ms")?,
                    "--stream-interval-ms",
                )?);
            }
            "--delay-ms" => {
                config.response_delay =
                    Duration::from_millis(number(value("--delay-ms")?, "--delay-ms")?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.keys.is_empty() {
        config.accept_any_key = true;
    }
    let fast = fast.then_some(mock_gemini::fast::FastConfig {
        stream_events: config.stream_events,
        stream_interval: config.stream_interval,
        event_text_bytes: event_bytes,
        response_delay: config.response_delay,
        fail_key,
        stamp_events,
    });
    Ok((listen, config, fast))
}
