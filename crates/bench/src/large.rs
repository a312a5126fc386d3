//! S12: memory held per large request. A few large requests are sent at once to a gateway whose
//! stand-in answers only after a few seconds, so that the gateway holds every one of them
//! (translated, ready to go to another key) for that long; its resident memory then, over its
//! memory before, divided by the bytes of the bodies, is what it keeps per byte of request.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::Call;
use crate::procs::{Server, memory_kib};
use crate::report::Row;
use crate::rig::{CLIENT_KEY, FOUR_KEYS, MODEL, gateway, native, openai};

/// How long the stand-in waits before it answers: long enough for every body to have been read,
/// translated and sent, and for the memory to settle.
const HOLD: Duration = Duration::from_secs(3);
/// The readings taken within this time before the first answer are the held memory.
const PLATEAU: Duration = Duration::from_millis(1000);
/// Large requests in flight at once: a steadier figure than one alone.
const AT_ONCE: usize = 4;
/// Body sizes, within the gateway's 140 MiB body limit.
const SIZES: [usize; 2] = [8 << 20, 32 << 20];

/// What a large request holds: OpenAI chat with a text prompt, OpenAI chat with an inline image
/// (a base64 data URL, the usual way a large request comes), the native route with a text prompt.
#[derive(Debug, Clone, Copy)]
enum Kind {
    ChatText,
    ChatImage,
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::ChatText => "OpenAI chat, text",
            Self::ChatImage => "OpenAI chat, inline image",
            Self::Native => "native generateContent, text",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::ChatText => "chat_text",
            Self::ChatImage => "chat_image",
            Self::Native => "native",
        }
    }

    /// A call whose body is about `bytes` long.
    fn call(self, base: &str, bytes: usize) -> Call {
        let prompt = bytes.saturating_sub(128);
        match self {
            Self::ChatText => openai(base, false, prompt),
            Self::Native => native(base, false, CLIENT_KEY, prompt),
            Self::ChatImage => {
                let mut call = openai(base, false, 0);
                // Valid base64 (a multiple of four characters) of the right length.
                let data = "QUJD".repeat(prompt / 4);
                call.body = bytes::Bytes::from(
                    json!({"model": MODEL, "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}}
                    ]}]})
                    .to_string(),
                );
                call
            }
        }
    }
}

/// One measurement: the memory of a fresh gateway before, while `AT_ONCE` requests of `bytes`
/// are held, at its peak and after they are answered.
struct Held {
    body_bytes: usize,
    idle_kib: u64,
    held_kib: u64,
    peak_kib: u64,
    after_kib: u64,
}

impl Held {
    /// Memory held over the bodies' bytes.
    fn held_ratio(&self) -> f64 {
        self.held_kib.saturating_sub(self.idle_kib) as f64 * 1024.0
            / (AT_ONCE * self.body_bytes) as f64
    }

    fn peak_ratio(&self) -> f64 {
        self.peak_kib.saturating_sub(self.idle_kib) as f64 * 1024.0
            / (AT_ONCE * self.body_bytes) as f64
    }
}

async fn measure(
    bin: &Path,
    data: &Path,
    http: &reqwest::Client,
    kind: Kind,
    bytes: usize,
) -> Result<Held, String> {
    let mock = Server::start(
        &bin.join("mock-gemini"),
        &["--fast", "--delay-ms", &HOLD.as_millis().to_string()],
        &[],
        Some(0),
    )?;
    let ours = gateway(
        bin,
        data,
        &mock.url,
        FOUR_KEYS,
        &format!("s12-{}-{bytes}", kind.key()),
        &[],
    )?;
    // Warm-up: requests of the same kind, so that idle is the gateway ready to serve. The
    // allocator (mimalloc) gives freed memory back to the system only when a page is freed a
    // second or more later: what the start left (the admin password's hash takes 19 MiB) would
    // be given back during the measurement and hide as much of what the requests hold. Two
    // requests of 1 MiB, 1.2 s apart, each free pages and so give back what was freed before
    // them; at most the last one's copies (a few MiB) stay counted in idle.
    let warm = kind.call(&ours.url, 1 << 20);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let answer = warm.request(http).send().await;
        if !answer.is_ok_and(|response| response.status().is_success()) {
            return Err(format!("S12 {}: a warm-up request failed", kind.name()));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_kib, _) = ours.memory_kib();

    let call = kind.call(&ours.url, bytes);
    let readings = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = {
        let readings = Arc::clone(&readings);
        let pid = ours.pid();
        tokio::spawn(async move {
            loop {
                let rss = memory_kib(pid).0;
                if let Ok(mut readings) = readings.lock() {
                    readings.push((Instant::now(), rss));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let sends = (0..AT_ONCE).map(|_| {
        let request = call.request(http);
        async move {
            let response = request.send().await.ok()?;
            let answered = Instant::now();
            let good = response.status().is_success()
                && response
                    .text()
                    .await
                    .is_ok_and(|text| text.contains(call.expect));
            Some((answered, good))
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    sampler.abort();
    if answers
        .iter()
        .any(|answer| !answer.is_some_and(|(_, good)| good))
    {
        return Err(format!(
            "S12 {}, {} MiB: a request failed",
            kind.name(),
            bytes >> 20
        ));
    }
    let first_answer = answers
        .iter()
        .flatten()
        .map(|(at, _)| *at)
        .min()
        .ok_or("S12: no answer")?;
    // Held: the highest reading in the last moments before the first answer, when every body
    // has long been read and sent and the gateway only waits.
    let held_kib = readings
        .lock()
        .map_err(|_| "S12: sampler poisoned")?
        .iter()
        .filter(|(at, _)| *at < first_answer && first_answer.duration_since(*at) <= PLATEAU)
        .map(|(_, rss)| *rss)
        .max()
        .ok_or("S12: no reading while the requests were held")?;
    let (_, peak_kib) = ours.memory_kib();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after_kib, _) = ours.memory_kib();
    Ok(Held {
        body_bytes: call.body.len(),
        idle_kib,
        held_kib,
        peak_kib,
        after_kib,
    })
}

/// S12: for each kind and size, a fresh gateway (so that its peak is this measurement's).
pub(crate) async fn large_requests(
    bin: &Path,
    data: &Path,
    http: &reqwest::Client,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    let mut cells = serde_json::Map::new();
    for kind in [Kind::ChatText, Kind::ChatImage, Kind::Native] {
        for bytes in SIZES {
            let held = measure(bin, data, http, kind, bytes).await?;
            let mib = |kib: u64| kib as f64 / 1024.0;
            rows.push(Row {
                id: "S12",
                what: format!(
                    "memory held per large request, {}, {AT_ONCE} × {} MiB at once: held ÷ body (peak ÷ body); idle → held → peak → after",
                    kind.name(),
                    bytes >> 20
                ),
                target: "≤ 1.5×".into(),
                ours: format!(
                    "{:.2}× ({:.2}×); {:.0} → {:.0} → {:.0} → {:.0} MiB",
                    held.held_ratio(),
                    held.peak_ratio(),
                    mib(held.idle_kib),
                    mib(held.held_kib),
                    mib(held.peak_kib),
                    mib(held.after_kib)
                ),
                floor: "–".into(),
                ratio: "–".into(),
                nginx: None,
                met: Some(held.held_ratio() <= 1.5),
            });
            cells.insert(
                format!("{}_{}mib", kind.key(), bytes >> 20),
                json!({"requests": AT_ONCE, "body_bytes": held.body_bytes, "rss_idle_kib": held.idle_kib,
                    "rss_held_kib": held.held_kib, "rss_peak_kib": held.peak_kib, "rss_after_kib": held.after_kib,
                    "held_per_body": held.held_ratio(), "peak_per_body": held.peak_ratio()}),
            );
        }
    }
    raw.insert("s12".into(), Value::Object(cells));
    Ok(())
}
