//! The load generator: one request at a time, or a closed loop of N workers for a fixed time;
//! every answer is checked, every latency kept.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// What to send.
#[derive(Clone)]
pub struct Call {
    /// Full URL.
    pub url: String,
    /// JSON body.
    pub body: bytes::Bytes,
    /// Headers.
    pub headers: Vec<(&'static str, String)>,
    /// A string every good answer contains.
    pub expect: &'static str,
}

impl Call {
    /// The request, ready to send with `client`.
    pub(crate) fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut request = client.post(&self.url).body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request
    }
}

/// Latencies and errors of a run.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    /// Microseconds, sorted.
    pub micros: Vec<u64>,
    /// Answers that were not 200 or did not contain the expected text.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Sample {
    /// The samples of several runs as one.
    pub fn merged(runs: Vec<Sample>) -> Self {
        let mut all = Sample::default();
        for run in runs {
            all.micros.extend(run.micros);
            all.errors += run.errors;
            all.elapsed += run.elapsed;
        }
        all.micros.sort_unstable();
        all
    }

    fn finish(mut self, elapsed: Duration) -> Self {
        self.micros.sort_unstable();
        self.elapsed = elapsed;
        self
    }

    /// The `p`-th percentile in microseconds.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        self.micros[rank.min(self.micros.len() - 1)] as f64
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.micros.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The one HTTP client of the load side: keep-alive, no Nagle.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(8192)
        .build()
        .unwrap_or_default()
}

async fn send(client: &reqwest::Client, call: &Call, first_byte_only: bool) -> (Duration, bool) {
    let started = Instant::now();
    let Ok(response) = call.request(client).send().await else {
        return (started.elapsed(), false);
    };
    let ok_status = response.status().is_success();
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    let mut at_first_byte = None;
    while let Some(Ok(chunk)) = stream.next().await {
        at_first_byte.get_or_insert_with(|| started.elapsed());
        body.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    let good = ok_status && memchr_find(&body, call.expect.as_bytes());
    (
        if first_byte_only {
            at_first_byte.unwrap_or(total)
        } else {
            total
        },
        good,
    )
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `count` requests one after another; latency to the end (or to the first byte).
pub async fn sequential(
    client: &reqwest::Client,
    call: &Call,
    count: usize,
    first_byte_only: bool,
) -> Sample {
    let started = Instant::now();
    let mut sample = Sample::default();
    for _ in 0..count {
        let (latency, good) = send(client, call, first_byte_only).await;
        sample.micros.push(latency.as_micros() as u64);
        sample.errors += u64::from(!good);
    }
    sample.finish(started.elapsed())
}

/// `workers` loops sending as fast as answers come, for `duration`.
pub async fn closed_loop(
    client: &reqwest::Client,
    call: &Call,
    workers: usize,
    duration: Duration,
) -> Sample {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let client = client.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let mut sample = Sample::default();
                while Instant::now() < deadline {
                    let (latency, good) = send(&client, &call, false).await;
                    sample.micros.push(latency.as_micros() as u64);
                    sample.errors += u64::from(!good);
                }
                sample
            })
        })
        .collect();
    let mut all = Sample::default();
    for task in tasks {
        if let Ok(part) = task.await {
            all.micros.extend(part.micros);
            all.errors += part.errors;
        }
    }
    all.finish(started.elapsed())
}

/// Open loop: `rate` requests per second for `duration`, each sent at its scheduled instant
/// whether or not earlier ones have been answered, so a slow server cannot slow the load down
/// (no coordinated omission). A latency counts from the moment its request task started: the
/// generator's own timer lateness (up to a millisecond) is not the server's.
pub async fn open_loop(
    client: &reqwest::Client,
    call: &Call,
    rate: u32,
    duration: Duration,
) -> Sample {
    let started = Instant::now();
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let spacing = Duration::from_secs(1) / rate.max(1);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + spacing * i as u32;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let client = client.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(
            async move { send(&client, &call, false).await },
        ));
    }
    let mut sample = Sample::default();
    for task in tasks {
        match task.await {
            Ok((latency, good)) => {
                sample.micros.push(latency.as_micros() as u64);
                sample.errors += u64::from(!good);
            }
            Err(_) => sample.errors += 1,
        }
    }
    sample.finish(started.elapsed())
}

/// Reads one stream whose events carry the mock's send stamps ([`mock_gemini::fast::STAMP`]);
/// returns, for each event in order, how many microseconds after its stamp it arrived, and
/// whether the stream answered 200 and ended with its expected text.
pub async fn stamped_stream(client: &reqwest::Client, call: &Call) -> (Vec<i64>, bool) {
    use mock_gemini::fast::{STAMP, STAMP_DIGITS};
    let Ok(response) = call.request(client).send().await else {
        return (Vec::new(), false);
    };
    let ok_status = response.status().is_success();
    let mut stream = response.bytes_stream();
    let mut body: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut lateness = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as i64);
        body.extend_from_slice(&chunk);
        // Every whole stamp not seen yet.
        while let Some(found) = body[scanned..]
            .windows(STAMP.len())
            .position(|window| window == STAMP.as_bytes())
        {
            let digits_at = scanned + found + STAMP.len();
            let Some(digits) = body.get(digits_at..digits_at + STAMP_DIGITS) else {
                break;
            };
            if let Some(sent) = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<i64>().ok())
            {
                lateness.push(now - sent);
            }
            scanned = digits_at + STAMP_DIGITS;
        }
    }
    let good = ok_status && memchr_find(&body, call.expect.as_bytes());
    (lateness, good)
}

/// Added latency: percentile through the proxy minus the same percentile straight to the mock.
pub(crate) fn added(through: &Sample, direct: &Sample, p: f64) -> f64 {
    (through.percentile(p) - direct.percentile(p)).max(0.0)
}

pub(crate) fn checked(sample: &Sample, what: &str) -> Result<(), String> {
    if sample.errors > 0 {
        return Err(format!(
            "{what}: {} of {} answers were wrong",
            sample.errors,
            sample.micros.len()
        ));
    }
    Ok(())
}

/// Runs `count` sequential calls of each of `calls`, a tenth at a time in turn.
pub(crate) async fn interleaved<const N: usize>(
    http: &reqwest::Client,
    calls: &[Call; N],
    count: usize,
    first_byte_only: bool,
) -> [Sample; N] {
    interleaved_beside(http, calls, None, count, first_byte_only)
        .await
        .0
}

/// [`interleaved`], with `beside` (an entrant not always there) last in every round.
pub(crate) async fn interleaved_beside<const N: usize>(
    http: &reqwest::Client,
    calls: &[Call; N],
    beside: Option<&Call>,
    count: usize,
    first_byte_only: bool,
) -> ([Sample; N], Option<Sample>) {
    let mut runs: [Vec<Sample>; N] = std::array::from_fn(|_| Vec::new());
    let mut beside_runs = Vec::new();
    for _ in 0..10 {
        for (call, runs) in calls.iter().zip(runs.iter_mut()) {
            runs.push(sequential(http, call, count / 10, first_byte_only).await);
        }
        if let Some(call) = beside {
            beside_runs.push(sequential(http, call, count / 10, first_byte_only).await);
        }
    }
    (
        runs.map(Sample::merged),
        beside.map(|_| Sample::merged(beside_runs)),
    )
}
