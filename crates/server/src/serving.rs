//! Client connections: accepting them within a cap, the timeouts that keep a slow or silent
//! client from holding one for ever, and the graceful shutdown.
//!
//! - **Header timeout.** A connection must show its protocol (the first bytes of an HTTP/1
//!   request line, or HTTP/2's whole preface) within `CLIENT_HEADER_TIMEOUT_SECS` of opening,
//!   and an HTTP/1 connection must then deliver a whole request head within the same time of
//!   that or of its previous response (hyper's header read timer runs from the moment the
//!   connection waits for a head, so this is also the keep-alive idle limit between requests).
//!   Half a request (slowloris) is cut there.
//! - **Idle timeout.** A connection on which no byte moved either way for
//!   `CLIENT_IDLE_TIMEOUT_SECS` is closed, whatever protocol or phase it is in (a stalled request
//!   body, an idle HTTP/2 connection). It is never shorter than the upstream timeout plus half a
//!   minute, so a stream waiting on a slow model is never cut by it.
//! - **Connection cap.** At most `MAX_CONNECTIONS` are served at once; one more is answered
//!   `503` with `Retry-After` once it has sent its request, and closed once it has closed its
//!   side (within a second), so the process never runs out of file descriptors and `/healthz`
//!   keeps answering.
//! - **Accept batches.** At most `ACCEPT_BATCH` connections are accepted in a row before the
//!   connections already accepted get their turn. This matters on one thread (see `main.rs`):
//!   a burst of new connections taken all at once (tokio lets an accept loop take 128 before it
//!   must yield) sits with each request read but not yet forwarded, every one holding hyper's
//!   read buffers.
//! - **Shutdown.** On SIGTERM or SIGINT no connection is accepted any more and in-flight requests
//!   get `SHUTDOWN_GRACE_SECS`; streams still open then are told (the `cutoff` signal) and end with
//!   an error event in their dialect, so their clients hear why and their usage is recorded.
//!   Connections that have not shown their protocol yet asked nothing: they are dropped at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How long streams cut at the end of the grace period get to send their last event.
const CUTOFF_DRAIN: Duration = Duration::from_secs(2);
/// File descriptors kept for everything that is not a client connection (the database, the
/// upstream connections, logs).
const RESERVED_DESCRIPTORS: usize = 512;
/// How many refused connections may wait at once for their request and their close (see
/// [`refuse`]): each holds a descriptor out of the reserve for up to `REFUSAL_LINGER`.
const LINGERING_REFUSALS: usize = 128;
/// The longest a refused connection is kept, from its accept to its close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The most a refused connection may send before it is closed regardless.
const REFUSAL_DRAIN: usize = 64 * 1024;
/// How many connections the accept loop takes in a row before it yields to the connections it
/// already took. On one thread (the current-thread runtime `main.rs` picks on one CPU), the
/// loop otherwise takes as many as tokio's budget allows (128) while the connections it took
/// wait with their requests read but not forwarded, each holding hyper's read buffers: 10,000
/// streams opened at once (the benchmark's S6, AMD EPYC, 2026-12-02) peaked at 340–401 MiB,
/// about 110 MiB of it only while they arrived. With 16 the peak was 234–262 MiB over six
/// runs. The price is paid in a burst: new connections wait in the kernel's accept queue, and
/// past its 128 their handshakes are retried (S6's clients open 250 every 10 ms). With 8 or 1
/// the loop fell so far behind (with the queue at 128) that S6 did not finish within four
/// minutes. The queue stays at the 128 `TcpListener::bind` asks for: a longer one lets more
/// connections be set up at once, and S6 (2026-12-02) went from 10,521 dropped handshakes and a
/// peak of 227/232 MiB to 7,586 and 246/243 MiB with 512, and to none and 312/321 MiB (over the
/// 256 MiB target) with 4,096.
const ACCEPT_BATCH: usize = 16;

/// The limits on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a whole request head (and the keep-alive idle limit of HTTP/1).
    pub header_timeout: Duration,
    /// No byte either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

/// The answer to a connection past the cap (see [`refuse`]).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 88\r\n\r\n{\"error\":{\"code\":503,\"message\":\"Too many open connections.\",\"status\":\"UNAVAILABLE\"}}\n";

/// Raises the soft limit of open files to the hard one, and returns how many connections fit
/// under it (after the reserve) if that is fewer than `wanted`.
pub fn connections_that_fit(wanted: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match (limit.current, limit.maximum) {
        (Some(soft), hard) if hard.is_none_or(|hard| soft < hard) => {
            let raised = Rlimit {
                current: hard,
                maximum: hard,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => hard,
                Err(_) => Some(soft),
            }
        }
        (soft, _) => soft,
    };
    let fits = soft.map_or(usize::MAX, |soft| {
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_DESCRIPTORS)
    });
    wanted.min(fits.max(1))
}

/// Serves `router` on `listener` within `limits` until SIGTERM or SIGINT (or `stop`), then lets
/// in-flight requests finish for up to `limits.shutdown_grace`, then raises `cutoff` so that streams
/// still open end with an error event.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    cutoff: watch::Sender<bool>,
    stop: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let builders = Arc::new(Builders::new(limits.header_timeout));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let lingering_refusals = Arc::new(Semaphore::new(LINGERING_REFUSALS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Raised when the shutdown begins: a connection still showing its protocol is then
    // dropped (it asked nothing yet), instead of holding the shutdown up to the header timeout.
    let (closing, closing_seen) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    let mut accepted_since_yield = 0;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Small SSE events must leave at once, not wait for Nagle's algorithm.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            crate::service::metrics::record_refused_connection();
            if let Ok(lingering) = Arc::clone(&lingering_refusals).try_acquire_owned() {
                tokio::spawn(refuse(stream, lingering));
            }
            // Past that many refusals at once (a flood), the connection is closed unanswered.
            continue;
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                detach_request_id(request.headers_mut());
                request.map(axum::body::Body::new)
            });
        let builders = Arc::clone(&builders);
        // Taken at the accept, so that a shutdown that begins while the protocol is being looked
        // at still reaches the connection once it is served.
        let watcher = graceful.watcher();
        let mut closing_seen = closing_seen.clone();
        tokio::spawn(async move {
            // A client that shows nothing within the header timeout, or before a shutdown,
            // asked nothing: closed (its permit goes with the task).
            let shown = tokio::select! {
                shown = tokio::time::timeout(
                    limits.header_timeout,
                    opens_with_http2_preface(&stream),
                ) => shown.ok().and_then(Result::ok),
                _ = closing_seen.wait_for(|closing| *closing) => None,
            };
            let Some(http2) = shown else {
                return;
            };
            let builder = if http2 {
                &builders.http2
            } else {
                &builders.http1
            };
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let connection = builder.serve_connection(io, TowerToHyperService::new(service));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "client connection ended with an error");
            }
            drop(permit);
        });
        // The connections just accepted get to read and forward their requests before more
        // are taken (see `ACCEPT_BATCH`). Refusals do not count: `LINGERING_REFUSALS` bounds them.
        accepted_since_yield += 1;
        if accepted_since_yield == ACCEPT_BATCH {
            accepted_since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    let _ = closing.send(true);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period: ending them");
        let _ = cutoff.send(true);
        tokio::time::sleep(CUTOFF_DRAIN).await;
    }
    Ok(())
}

/// The connection builders: one per protocol, each serving only its own, since the protocol
/// is known before hyper sees the connection (see [`opens_with_http2_preface`]).
struct Builders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_timeout: Duration) -> Self {
        let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        http2.http2().timer(TokioTimer::new());
        Self { http1, http2 }
    }
}

/// HTTP/2's connection preface: a client speaking HTTP/2 without TLS (h2c with prior knowledge)
/// opens with it.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with HTTP/2's preface, looked at without reading it (`peek`).
///
/// Why not let hyper-util's protocol detection read it: it hands hyper the bytes it read
/// first and the rest of the request after, and hyper, finding its 8 KiB read buffer no longer
/// whole, doubles it. Every HTTP/1 connection then held 16 KiB for reading instead of 8 for
/// as long as it was open: 80 MiB of the peak with ten thousand streams open (S6).
async fn opens_with_http2_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut seen = [0u8; HTTP2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    loop {
        let arrived = stream.peek(&mut seen).await?;
        if arrived == 0 || seen[..arrived] != HTTP2_PREFACE[..arrived] {
            // Closed, or an HTTP/1 request line (which differs from the preface within its
            // first few bytes: `POST` at the second, `PROPFIND` at the fourth).
            return Ok(false);
        }
        if arrived == HTTP2_PREFACE.len() {
            return Ok(true);
        }
        // The start of the preface only: the rest is on its way. `peek` leaves the socket
        // readable, so waiting for readiness again would return at once: a pause instead,
        // doubling up to a fifth of a second, so that a client that sent the start and nothing
        // more (or closed: `peek` keeps showing what it sent) costs a few wake-ups a second
        // until the header timeout, not a thousand.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The client's `x-request-id`, copied out of the request head (or dropped when overlong).
///
/// The request id layers keep it until the response's head is sent, which for a stream is
/// after the upstream's first event; as a slice of hyper's read buffer it would keep that
/// buffer alive beside the next one all that time (see `native::Asked`). An id longer than
/// `MAX_REQUEST_ID` is not an id: the gateway makes its own instead, as for a request
/// without one (it goes into every log line and back to the client).
fn detach_request_id(headers: &mut axum::http::HeaderMap) {
    const MAX_REQUEST_ID: usize = 128;
    let Some(value) = headers.get(REQUEST_ID) else {
        return;
    };
    if value.len() <= MAX_REQUEST_ID {
        let copy = crate::service::upstream::detached(value);
        headers.insert(REQUEST_ID, copy);
    } else {
        headers.remove(REQUEST_ID);
    }
}

const REQUEST_ID: &str = "x-request-id";

/// Answers a connection past the cap with a 503 and closes it, in the order a client can read.
///
/// - The answer waits for the client's first bytes. Sent before the request, it reaches a
///   client that has not written yet as an answer to nothing: hyper's client, for one, fails
///   the request with a closed connection instead of reporting the 503.
/// - The socket is closed only once the client has closed its side, up to `REFUSAL_DRAIN`
///   bytes read and thrown away meanwhile (a lingering close, as nginx does). Closing a socket
///   with unread bytes in it makes the kernel send a reset, and a client that is still writing
///   then fails with "connection reset" and never reads the 503 or its `Retry-After`.
///
/// All within `REFUSAL_LINGER` of the accept; `_lingering` keeps the count of refusals doing
/// this bounded.
async fn refuse(mut stream: TcpStream, _lingering: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut discarded = [0u8; 4096];
        if stream.read(&mut discarded).await? == 0 {
            return Ok(()); // Closed without asking anything.
        }
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        let mut drained = 0;
        while drained < REFUSAL_DRAIN {
            match stream.read(&mut discarded).await? {
                0 => break,
                read => drained += read,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// An accept error: a client that went away is nothing; anything else (out of file
/// descriptors) is logged and waited out, as hyper used to.
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "could not accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A client connection that fails with `TimedOut` when no byte moved either way for `limit`.
/// The timer is re-armed lazily: activity only records the time, and when the timer fires it
/// checks whether anything happened since.
pub struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limit,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// Whether the connection has been idle for its limit (re-arming the timer when not).
    fn expired(&mut self, context: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(context).is_pending() {
                return false;
            }
            let deadline = self.last_activity + self.limit;
            if deadline <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client connection was idle too long",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(context, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(context) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(context, data) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|written| *written > 0) {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(context) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(context, bufs));
        if written.as_ref().is_ok_and(|written| *written > 0) {
            self.last_activity = Instant::now();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_either_way_for_its_limit_fails_and_activity_keeps_it() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = IdleTimeout::new(server, Duration::from_secs(10));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        // Bytes every 6 s keep it open past the limit.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_write.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
        }
        // Writing counts as activity too.
        tokio::time::sleep(Duration::from_secs(6)).await;
        server.write_all(b"y").await.unwrap();
        let mut byte = [0u8; 1];
        client_read.read_exact(&mut byte).await.unwrap();
        // Then silence: the read fails once the limit passed since the last byte.
        let started = Instant::now();
        let mut buffer = [0u8; 1];
        let error = server.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
