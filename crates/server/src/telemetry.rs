//! Logging setup and the HTTP span. Spans record the method and the matched route template,
//! never the raw URI: Gemini clients may put their key in `?key=`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SendError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global log subscriber (text or JSON lines on standard output); log lines are
/// written until the returned guard is dropped.
pub fn init(config: &Config) -> LogGuard {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = QueuedLines::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// Log lines queued for the thread that writes them to standard output.
///
/// Why a queue and a timer: written by the request's own thread, one `write` call per access log
/// line was a tenth of the gateway's CPU time under load. Why not a writer thread woken per line
/// (`tracing-appender`'s): on one core, waking it for every request put a context switch, and
/// often a preemption, between handling a request and sending its answer; it was 8 % of the CPU
/// profile under load and a source of the latency tail. Here a line is queued without waking
/// anyone; the writer wakes every [`WRITE_INTERVAL`] and writes what has gathered, many lines per
/// `write`. Nothing is dropped: when the queue is full, the logger wakes the writer and waits.
#[derive(Clone)]
pub struct QueuedLines {
    queue: SyncSender<Vec<u8>>,
    writer: std::thread::Thread,
}

/// How long a line may wait before it is written.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// The log writer thread's nice value.
const WRITER_NICE: i32 = 10;
/// Lines held between the loggers and the writer: at 20,000 requests a second, twenty times what
/// comes in between two writes (the queue's slots take 32 bytes each, the lines a few MiB at most).
const QUEUED_LINES: usize = 4096;

/// Keeps the log writer running; dropping it writes what is queued and stops the writer.
pub struct LogGuard {
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl QueuedLines {
    /// Starts the writer thread, writing to standard output.
    pub fn start() -> (Self, LogGuard) {
        Self::start_writing(std::io::stdout())
    }

    /// Starts the writer thread, writing to `out`.
    pub fn start_writing(out: impl Write + Send + 'static) -> (Self, LogGuard) {
        let (queue, lines) = sync_channel::<Vec<u8>>(QUEUED_LINES);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        let spawned = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                // Below the request threads: on a gateway given one core, a writer woken at the
                // same priority took turns with them and delayed answers (the latency tail). It
                // still gets about a tenth of a saturated core, and a full queue wakes it.
                // Best effort; on Linux this names the calling thread only.
                let _ = rustix::process::setpriority_process(None, WRITER_NICE);
                loop {
                    // Read the flag before draining, so that every line queued before the guard
                    // was dropped is written.
                    let last_round = stopped.load(Ordering::Acquire);
                    while let Ok(line) = lines.try_recv() {
                        let _ = out.write_all(&line);
                    }
                    let _ = out.flush();
                    if last_round {
                        return;
                    }
                    std::thread::park_timeout(WRITE_INTERVAL);
                }
            });
        match spawned {
            Ok(writer) => (
                Self {
                    queue,
                    writer: writer.thread().clone(),
                },
                LogGuard {
                    stop,
                    writer: Some(writer),
                },
            ),
            // No thread: every line is written where it is logged (see `QueuedLine::drop`).
            Err(_) => {
                let (queue, _) = sync_channel(0);
                (
                    Self {
                        queue,
                        writer: std::thread::current(),
                    },
                    LogGuard { stop, writer: None },
                )
            }
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// One log line on its way to the queue: the formatter writes it here, and it is queued whole
/// when the formatter is done with it.
pub struct QueuedLine<'a> {
    lines: &'a QueuedLines,
    line: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let line = match self.lines.queue.try_send(line) {
            Ok(()) => return,
            Err(TrySendError::Full(line)) => {
                // The writer is behind: wake it now rather than at its next tick, and wait.
                self.lines.writer.unpark();
                match self.lines.queue.send(line) {
                    Ok(()) => return,
                    Err(SendError(line)) => line,
                }
            }
            Err(TrySendError::Disconnected(line)) => line,
        };
        // The writer is gone (shut down, or never started): write the line here.
        let _ = std::io::stdout().lock().write_all(&line);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedLines {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            lines: self,
            line: Vec::new(),
        }
    }
}

/// The span of one HTTP request: method, route template and request id.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// Request ids: a random per-process prefix and a counter (cheap, unique, not guessable
/// across restarts).
#[derive(Clone)]
pub struct RequestIds {
    prefix: u32,
    counter: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self {
            prefix: rand::random(),
            counter: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Everything the writer thread wrote.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_even_past_a_full_queue() {
        let written = Written::default();
        let (lines, guard) = QueuedLines::start_writing(written.clone());
        let per_thread = QUEUED_LINES; // four threads: the queue fills and loggers wait
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let lines = lines.clone();
                scope.spawn(move || {
                    for n in 0..per_thread {
                        let mut line = lines.make_writer();
                        // Written in two pieces, as a formatter may: queued as one line.
                        write!(line, "thread {thread} ").unwrap();
                        writeln!(line, "line {n}").unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (thread, n) = line
                .strip_prefix("thread ")
                .and_then(|rest| rest.split_once(" line "))
                .unwrap_or_else(|| panic!("a torn line: {line:?}"));
            let thread: usize = thread.parse().unwrap();
            assert_eq!(n.parse::<usize>().unwrap(), next[thread], "out of order");
            next[thread] += 1;
        }
        assert_eq!(next, [per_thread; 4], "lines lost");
    }

    #[test]
    fn lines_logged_after_the_writer_stopped_are_not_lost_or_stuck() {
        let written = Written::default();
        let (lines, guard) = QueuedLines::start_writing(written.clone());
        writeln!(lines.make_writer(), "before").unwrap();
        drop(guard);
        assert_eq!(written.0.lock().unwrap().as_slice(), b"before\n");
        // Goes to standard output directly; what matters is that it returns.
        writeln!(lines.make_writer(), "after").unwrap();
    }
}
