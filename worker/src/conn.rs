//! One client connection: hyper serving it, plus the timers hyper does not
//! give us in the shape we want (a header read timeout that answers 408, an
//! idle keep-alive timeout, GOAWAY on drain).
//!
//! The connection's bookkeeping lives in [`ConnState`], updated from two
//! places: the I/O wrapper sees bytes arrive, the service wrapper sees
//! requests start and finish. The connection task reads it when its single
//! timer fires, so the hot path only touches a few `Cell`s.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::raw_http1_error;
use crate::limits;
use crate::server::Shared;
use crate::{App, Request, Response};

/// How long writing a 408 to a client that stopped mid-headers may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The first bytes of every HTTP/2 prior-knowledge connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

struct ConnState {
    /// Requests on this connection whose responses are not yet produced.
    in_flight: Cell<u32>,
    /// When the last bytes arrived. A request's latency is measured from
    /// the read that completed its head, and the header deadline starts
    /// from the read that began it, so one clock read per read serves both.
    last_read: Cell<Instant>,
    /// Set by the first byte of a request head; cleared when hyper hands
    /// the parsed request to the service.
    header_deadline: Cell<Option<Instant>>,
    /// When the last response was produced (or the connection opened).
    idle_since: Cell<Instant>,
    /// HTTP/2 frames arrive between requests, so the header timer does not
    /// apply; it is known from the preface.
    http2: Cell<bool>,
    /// True until the first read, which tells HTTP/2 by its preface.
    first_read: Cell<bool>,
    header_read_timeout: Duration,
}

/// What the connection's timer found.
enum Action {
    Wait(Instant),
    HeaderTimeout,
    IdleTimeout,
}

impl ConnState {
    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let now = Instant::now();
        self.last_read.set(now);
        if self.first_read.replace(false) && bytes.starts_with(H2_PREFACE) {
            self.http2.set(true);
        }
        if !self.http2.get() && self.in_flight.get() == 0 && self.header_deadline.get().is_none() {
            self.header_deadline.set(Some(now + self.header_read_timeout));
        }
    }

    /// A parsed request reached the service; returns when its head was read.
    fn request_started(&self) -> Instant {
        self.in_flight.set(self.in_flight.get() + 1);
        self.header_deadline.set(None);
        self.last_read.get()
    }

    /// A response was produced at `now`.
    fn request_finished(&self, now: Instant) {
        let left = self.in_flight.get() - 1;
        self.in_flight.set(left);
        if left == 0 {
            self.idle_since.set(now);
        }
    }

    fn next_action(&self, now: Instant, keep_alive: Duration) -> Action {
        if let Some(deadline) = self.header_deadline.get() {
            return if now >= deadline { Action::HeaderTimeout } else { Action::Wait(deadline) };
        }
        // Never wait longer than the header timeout: a request head that
        // starts while we sleep must still be timed out on time.
        let recheck = now + self.header_read_timeout.min(keep_alive.max(Duration::from_millis(1)));
        if self.in_flight.get() > 0 {
            return Action::Wait(recheck);
        }
        let idle_deadline = self.idle_since.get() + keep_alive;
        if now >= idle_deadline {
            Action::IdleTimeout
        } else {
            Action::Wait(idle_deadline.min(now + self.header_read_timeout))
        }
    }
}

/// The socket as hyper sees it: reads are reported to [`ConnState`]. The
/// stream is shared so that the connection task can take it back and write a
/// 408 after dropping hyper's connection.
struct ConnIo {
    stream: Rc<RefCell<TcpStream>>,
    state: Rc<ConnState>,
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let mut stream = self.stream.borrow_mut();
        let poll = Pin::new(&mut *stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            self.state.on_read(&buf.filled()[before..]);
        }
        poll
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_shutdown(cx)
    }
}

/// Serves one connection until it closes, times out or is drained.
pub(crate) async fn serve<A: App>(stream: TcpStream, shared: Rc<Shared<A>>) {
    let opened = Instant::now();
    let state = Rc::new(ConnState {
        in_flight: Cell::new(0),
        last_read: Cell::new(opened),
        header_deadline: Cell::new(None),
        idle_since: Cell::new(opened),
        http2: Cell::new(false),
        first_read: Cell::new(true),
        header_read_timeout: shared.limits.header_read_timeout,
    });
    let stream = Rc::new(RefCell::new(stream));
    let io = TokioIo::new(ConnIo { stream: stream.clone(), state: state.clone() });

    if drive(io, &shared, &state).await == Ended::HeaderTimeout {
        // hyper's connection is dropped, so ours is the only handle left.
        if let Ok(stream) = Rc::try_unwrap(stream) {
            let mut stream = stream.into_inner();
            let body = raw_http1_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head was not received in time",
            );
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                stream.write_all(&body).await?;
                stream.shutdown().await
            })
            .await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    HeaderTimeout,
}

/// Runs hyper's connection future with our timer and drain signal beside it.
/// Returning drops hyper's connection.
async fn drive<A: App>(io: TokioIo<ConnIo>, shared: &Rc<Shared<A>>, state: &Rc<ConnState>) -> Ended {
    let service = service_fn({
        let shared = shared.clone();
        let state = state.clone();
        move |request| respond(&shared, &state, request)
    });
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);

    let keep_alive = shared.limits.keep_alive_timeout;
    let mut drain = shared.drain.clone();
    let mut draining = *drain.borrow_and_update();
    let mut shutting_down = false;
    let timer = tokio::time::sleep_until(
        Instant::now() + shared.limits.header_read_timeout.min(keep_alive.max(Duration::from_millis(1))),
    );
    tokio::pin!(timer);
    if draining && state.http2.get() {
        conn.as_mut().graceful_shutdown();
        shutting_down = true;
    }
    loop {
        tokio::select! {
            // The connection first, and no random branch order: it is what
            // wakes this task on nearly every poll.
            biased;
            result = conn.as_mut() => {
                if let Err(error) = result {
                    // Clients vanishing mid-request are routine.
                    tracing::debug!(%error, "connection ended with an error");
                }
                return Ended::Closed;
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                // HTTP/2 has GOAWAY to say "finish, then go elsewhere".
                // HTTP/1.1 connections get `Connection: close` on their next
                // response instead (see `respond`), so a client that is about
                // to send a request on an idle connection is not cut off.
                if state.http2.get() && !shutting_down {
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
            () = &mut timer, if !shutting_down => {
                match state.next_action(Instant::now(), keep_alive) {
                    Action::Wait(at) => timer.as_mut().reset(at),
                    Action::HeaderTimeout => return Ended::HeaderTimeout,
                    Action::IdleTimeout => {
                        // Idle: hyper closes at once (HTTP/1.1) or after
                        // GOAWAY (HTTP/2).
                        conn.as_mut().graceful_shutdown();
                        shutting_down = true;
                    }
                }
            }
        }
    }
}

/// The service hyper calls for each request: limits, then the app, then the
/// headers every response carries. The synchronous part runs here, at call
/// time; what is left is a small hand-written future rather than an `async`
/// block, because hyper stores and moves the service future for every
/// request and an async block's state would carry the whole request along.
fn respond<A: App>(shared: &Rc<Shared<A>>, state: &Rc<ConnState>, request: Request) -> Responding<A> {
    let started = state.request_started();
    shared.stats.in_flight.set(shared.stats.in_flight.get() + 1);
    let http1 = request.version() < Version::HTTP_2;
    let (route, answer) = match limits::check(&request, &shared.limits) {
        Some(refusal) => ("refused", Answer::Now(Some(refusal))),
        None => {
            let (route, answer) = shared.app.call(request);
            (route, Answer::Later(answer))
        }
    };
    Responding { shared: shared.clone(), state: state.clone(), route, started, http1, answer, done: false }
}

/// One request being answered (see [`respond`]). Dropped unfinished (the
/// client went away), it still counts the request out.
struct Responding<A: App> {
    shared: Rc<Shared<A>>,
    state: Rc<ConnState>,
    route: &'static str,
    /// When the request's head was read.
    started: Instant,
    http1: bool,
    answer: Answer<A::Future>,
    done: bool,
}

enum Answer<F> {
    /// Refused by the limits: the response is already made.
    Now(Option<Response>),
    Later(F),
}

impl<A: App> Future for Responding<A> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut response = match &mut this.answer {
            Answer::Now(response) => response.take().expect("Responding polled after completion"),
            Answer::Later(future) => std::task::ready!(Pin::new(future).poll(cx)),
        };
        let now = Instant::now();
        this.finish(now);
        this.shared.stats.record(
            this.route,
            response.status().as_u16(),
            now.saturating_duration_since(this.started),
        );
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("drover"));
        if this.http1 && this.shared.draining.get() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}

impl<A: App> Responding<A> {
    fn finish(&mut self, now: Instant) {
        self.done = true;
        self.state.request_finished(now);
        let stats = &self.shared.stats;
        stats.in_flight.set(stats.in_flight.get() - 1);
        stats.requests.set(stats.requests.get() + 1);
    }
}

impl<A: App> Drop for Responding<A> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(header_timeout_s: u64) -> ConnState {
        ConnState {
            in_flight: Cell::new(0),
            last_read: Cell::new(Instant::now()),
            header_deadline: Cell::new(None),
            idle_since: Cell::new(Instant::now()),
            http2: Cell::new(false),
            first_read: Cell::new(true),
            header_read_timeout: Duration::from_secs(header_timeout_s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_and_an_idle_connection_closes() {
        let keep_alive = Duration::from_secs(5);
        let s = state(2);
        let start = Instant::now();
        assert!(
            matches!(s.next_action(start, keep_alive), Action::Wait(at) if at == start + Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"GET / HT");
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(matches!(s.next_action(Instant::now(), keep_alive), Action::Wait(at) if at == deadline));
        // More bytes do not extend the deadline (that is what slowloris relies on).
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"T");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(s.next_action(Instant::now(), keep_alive), Action::HeaderTimeout));

        let s = state(10);
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started();
        s.request_finished(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(s.next_action(Instant::now(), keep_alive), Action::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_is_recognised_by_its_preface_and_never_gets_a_header_timer() {
        let s = state(1);
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.http2.get());
        assert!(s.header_deadline.get().is_none());
    }
}
