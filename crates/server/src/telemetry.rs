//! Logging setup and the HTTP span. Spans record the method and the matched route template,
//! never the raw URI: Gemini clients may put their key in `?key=`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
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
/// anyone; while lines come, the writer wakes every [`WRITE_INTERVAL`] and writes what has
/// gathered, many lines per `write`; after an interval without any, it sleeps until the next line
/// wakes it (an idle gateway is not woken a hundred times a second). Nothing is dropped: when the
/// queue is full, the logger wakes the writer and waits, and a line logged once the writer has
/// stopped is written by the logger itself.
#[derive(Clone)]
pub struct QueuedLines {
    queue: SyncSender<Vec<u8>>,
    writer: std::thread::Thread,
    shared: Arc<Shared>,
}

/// What the loggers and the writer share.
struct Shared {
    /// The writer has been told to stop (or never started).
    stop: AtomicBool,
    /// The writer sleeps until a logger wakes it.
    idle: AtomicBool,
    /// The queue's receiving end: the writer's, and after it stops, any logger's.
    lines: Mutex<Receiver<Vec<u8>>>,
}

impl Shared {
    /// Writes every queued line to `out`; whether there was any.
    fn drain(&self, out: &mut impl Write) -> bool {
        let Ok(lines) = self.lines.lock() else {
            return false;
        };
        let mut any = false;
        while let Ok(line) = lines.try_recv() {
            let _ = out.write_all(&line);
            any = true;
        }
        any
    }
}

/// How long a line may wait before it is written.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// How much lower than the rest of the process the log writer runs (in nice steps).
const WRITER_NICE_STEPS: i32 = 10;
/// Lines held between the loggers and the writer: at 20,000 requests a second, twenty times what
/// comes in between two writes (the queue's slots take 32 bytes each, the lines a few MiB at most).
const QUEUED_LINES: usize = 4096;

/// Keeps the log writer running; dropping it writes what is queued and stops the writer.
pub struct LogGuard {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            lines: Mutex::new(lines),
        });
        let writer_shared = Arc::clone(&shared);
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        let spawned = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                // Below the request threads: on a gateway given one core, a writer woken at the
                // same priority took turns with them and delayed answers (the latency tail). It
                // still gets about a tenth of a saturated core, and a full queue wakes it.
                lower_this_thread_priority(WRITER_NICE_STEPS);
                let shared = writer_shared;
                loop {
                    // Read the flag before draining, so that every line queued before the guard
                    // was dropped is written.
                    let last_round = shared.stop.load(Ordering::Acquire);
                    let wrote = shared.drain(&mut out);
                    let _ = out.flush();
                    if last_round {
                        return;
                    }
                    if wrote {
                        std::thread::park_timeout(WRITE_INTERVAL);
                        continue;
                    }
                    // Quiet for a whole interval: sleep until a logger wakes us. The flag is
                    // raised before the queue is looked at once more, and a logger looks at the
                    // flag after queueing (both behind a fence), so a line is never left asleep.
                    shared.idle.store(true, Ordering::Relaxed);
                    fence(Ordering::SeqCst);
                    if shared.drain(&mut out) {
                        shared.idle.store(false, Ordering::Relaxed);
                        continue;
                    }
                    while shared.idle.load(Ordering::Acquire)
                        && !shared.stop.load(Ordering::Acquire)
                    {
                        std::thread::park();
                    }
                }
            });
        let writer = match spawned {
            Ok(writer) => Some(writer),
            // No thread: every line is written where it is logged (see `QueuedLine::drop`).
            Err(_) => {
                shared.stop.store(true, Ordering::Release);
                None
            }
        };
        (
            Self {
                queue,
                writer: writer
                    .as_ref()
                    .map_or_else(std::thread::current, |writer| writer.thread().clone()),
                shared: Arc::clone(&shared),
            },
            LogGuard { shared, writer },
        )
    }

    /// Wakes the writer (to stop, to make room, or out of its idle sleep).
    fn wake_writer(&self) {
        self.shared.idle.store(false, Ordering::Release);
        self.writer.unpark();
    }

    /// Writes what is queued and then `line` from the logger's own thread (the writer has
    /// stopped).
    fn write_here(&self, line: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        self.shared.drain(&mut stdout);
        let _ = stdout.write_all(line);
        let _ = stdout.flush();
    }
}

/// Lowers the calling thread's scheduling priority by `steps` nice steps below where it is
/// (at most to 19). Best effort; on Linux the nice value is per thread and this names the calling
/// thread only (elsewhere it would name the whole process, so it is not done there).
fn lower_this_thread_priority(steps: i32) {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        let _ = rustix::process::setpriority_process(None, (now + steps).min(19));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = steps;
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
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
        let lines = self.lines;
        let mut line = std::mem::take(&mut self.line);
        loop {
            if lines.shared.stop.load(Ordering::Acquire) {
                lines.write_here(&line);
                return;
            }
            match lines.queue.try_send(line) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) => {
                    // The writer is behind: wake it now rather than at its next tick, and wait
                    // (looking again at the stop flag, so as never to wait on a stopped writer).
                    line = again;
                    lines.wake_writer();
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(TrySendError::Disconnected(again)) => {
                    lines.write_here(&again);
                    return;
                }
            }
        }
        fence(Ordering::SeqCst);
        if lines.shared.idle.load(Ordering::Relaxed) {
            lines.wake_writer();
        }
        // Queued as the writer stopped: it may have looked for the last time already.
        if lines.shared.stop.load(Ordering::Acquire) {
            lines.write_here(&[]);
        }
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
    fn a_line_after_a_quiet_spell_wakes_the_sleeping_writer() {
        let written = Written::default();
        let (lines, _guard) = QueuedLines::start_writing(written.clone());
        for n in 0..3 {
            // Several intervals without a line: the writer has gone to sleep.
            std::thread::sleep(WRITE_INTERVAL * 5);
            writeln!(lines.make_writer(), "line {n}").unwrap();
            let expected = (0..=n).map(|n| format!("line {n}\n")).collect::<String>();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while written.0.lock().unwrap().as_slice() != expected.as_bytes() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "not written while the writer runs: {expected:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
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
