//! Thousands of open streams at once (S6): one plain TCP connection per stream, the request
//! written by hand, the answer read to its end; every gap between two reads is timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the streams saw.
#[derive(Debug, Default)]
pub struct Held {
    /// Streams that ended with status 200, every event and the end marker.
    pub complete: usize,
    /// Streams that failed: no connection, another status, a missing event or end.
    pub errors: usize,
    /// Complete streams with a gap between two reads longer than the stall bound.
    pub stalls: usize,
    /// The longest gap between two reads of one stream.
    pub longest_gap: Duration,
    /// Streams whose first event had arrived, at the moment the last one's did.
    pub open_together: usize,
}

/// A stream request: where, what, and how to check the answer.
pub struct StreamRequest {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// The request line's target.
    pub path: String,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    /// The JSON body.
    pub body: String,
    /// Data events every good answer carries at least.
    pub events: usize,
    /// The text that ends every good answer.
    pub end_marker: &'static str,
}

struct One {
    ok: bool,
    longest_gap: Duration,
    first_event_at: Option<Instant>,
    ended_at: Instant,
}

async fn one(request: &StreamRequest, raw: &[u8]) -> One {
    let failed = |at| One {
        ok: false,
        longest_gap: Duration::ZERO,
        first_event_at: None,
        ended_at: at,
    };
    let Ok(mut socket) = tokio::net::TcpStream::connect(request.addr).await else {
        return failed(Instant::now());
    };
    let _ = socket.set_nodelay(true);
    if socket.write_all(raw).await.is_err() {
        return failed(Instant::now());
    }
    let mut answer = Vec::with_capacity(16 * 1024);
    let mut buffer = [0u8; 8192];
    let mut last_read = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut first_event_at = None;
    loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let now = Instant::now();
                answer.extend_from_slice(&buffer[..read]);
                if first_event_at.is_some() {
                    longest_gap = longest_gap.max(now - last_read);
                } else if memmem(&answer, b"data: ") {
                    first_event_at = Some(now);
                }
                last_read = now;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let ok = text.starts_with("HTTP/1.1 200")
        && text.matches("data: ").count() > request.events
        && text.contains(request.end_marker);
    One {
        ok,
        longest_gap,
        first_event_at,
        ended_at: Instant::now(),
    }
}

fn memmem(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Opens `count` streams, `per_batch` connections every 10 ms, and reads each to its end;
/// `stall` is the longest gap between two reads that still counts as flowing.
pub async fn hold(request: StreamRequest, count: usize, per_batch: usize, stall: Duration) -> Held {
    let raw = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n{}",
        request.path,
        request.addr,
        request.body.len(),
        request.headers,
        request.body
    );
    let shared = std::sync::Arc::new((request, raw.into_bytes()));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && i % per_batch.max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shared = std::sync::Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { one(&shared.0, &shared.1).await }));
    }
    let mut outcomes = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(outcome) = task.await {
            outcomes.push(outcome);
        }
    }
    let mut held = Held {
        errors: count - outcomes.len(),
        ..Held::default()
    };
    let last_first_event = outcomes.iter().filter_map(|o| o.first_event_at).max();
    for outcome in &outcomes {
        if !outcome.ok {
            held.errors += 1;
            continue;
        }
        held.complete += 1;
        held.stalls += usize::from(outcome.longest_gap > stall);
        held.longest_gap = held.longest_gap.max(outcome.longest_gap);
        if let (Some(first), Some(last)) = (outcome.first_event_at, last_first_event)
            && first <= last
            && outcome.ended_at >= last
        {
            held.open_together += 1;
        }
    }
    held
}
