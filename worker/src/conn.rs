//! One client connection: hyper serving it, plus the timers hyper does not
//! give us in the shape we want (a header read timeout that answers 408, an
//! idle keep-alive timeout, GOAWAY on drain, closing what stalls while the
//! worker drains), and a close that delivers every response produced.
//!
//! The connection's bookkeeping lives in [`ConnState`], updated from two
//! places: the I/O wrapper sees bytes arrive, the service wrapper sees
//! requests start and finish. The connection task reads it when its single
//! timer fires, so the hot path only touches a few `Cell`s.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::error::raw_http1_error;
use crate::limits;
use crate::server::Shared;
use crate::wire::{ConnIo, ReadObserver, Wire};
use crate::{App, Request, Response};

/// Sending what is left and closing, lingering included, may take this
/// long; a client that does not read its last response is not waited for.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// After our last response, the client's input is read and thrown away until
/// it closes or pauses this long ("lingering close", as nginx does): closing
/// a socket with unread input makes the kernel send a reset, and a reset can
/// destroy the response before the client has read it.
const LINGER_IDLE: Duration = Duration::from_millis(250);
/// ...and at most this much of it.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
/// While the worker drains, a connection that has been idle, or has sent
/// nothing of the request it started, for this long is closed (a stalled
/// head gets 408) rather than waited for until the drain timeout. Long
/// enough for a request already on the wire to arrive and be answered.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// A connection told to close (idle, or draining) with nothing in flight is
/// closed this long after, whatever the client does: an HTTP/2 client that
/// never acknowledges GOAWAY must not hold the worker.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

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
    /// The client closed its sending side: no need to linger at close.
    peer_closed: Cell<bool>,
    header_read_timeout: Duration,
}

/// What the connection's timer found.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Wait(Instant),
    HeaderTimeout,
    /// Idle (or idle long enough while draining): ask hyper to close.
    IdleTimeout,
    /// Asked to close a while ago, nothing in flight, still open: close.
    ForceClose,
}

impl ReadObserver for ConnState {
    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.peer_closed.set(true);
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
}

impl ConnState {
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

    /// What to do at `now`. `draining` shortens every wait for the client
    /// to [`DRAIN_GRACE`]; `shutdown_since` is when hyper was asked to close.
    fn next_action(
        &self,
        now: Instant,
        keep_alive: Duration,
        draining: bool,
        shutdown_since: Option<Instant>,
    ) -> Action {
        if let Some(deadline) = self.header_deadline.get() {
            let deadline = if draining { deadline.min(self.last_read.get() + DRAIN_GRACE) } else { deadline };
            return if now >= deadline { Action::HeaderTimeout } else { Action::Wait(deadline) };
        }
        // Never wait longer than the header timeout: a request head that
        // starts while we sleep must still be timed out on time.
        let recheck = now + self.header_read_timeout.min(keep_alive.max(Duration::from_millis(1)));
        if self.in_flight.get() > 0 {
            return Action::Wait(if draining { recheck.min(now + DRAIN_GRACE) } else { recheck });
        }
        if let Some(since) = shutdown_since {
            let deadline = since.max(self.idle_since.get()) + SHUTDOWN_GRACE;
            return if now >= deadline { Action::ForceClose } else { Action::Wait(deadline) };
        }
        let keep_alive = if draining { keep_alive.min(DRAIN_GRACE) } else { keep_alive };
        let idle_deadline = self.idle_since.get() + keep_alive;
        if now >= idle_deadline {
            Action::IdleTimeout
        } else {
            Action::Wait(idle_deadline.min(now + self.header_read_timeout))
        }
    }
}

/// Serves one connection until it closes, times out or is drained, then
/// delivers what is left and closes it.
pub(crate) async fn serve<A: App>(stream: TcpStream, shared: Rc<Shared<A>>) {
    let opened = Instant::now();
    let state = Rc::new(ConnState {
        in_flight: Cell::new(0),
        last_read: Cell::new(opened),
        header_deadline: Cell::new(None),
        idle_since: Cell::new(opened),
        http2: Cell::new(false),
        first_read: Cell::new(true),
        peer_closed: Cell::new(false),
        header_read_timeout: shared.limits.header_read_timeout,
    });
    let wire = Wire::new(stream);
    let io = TokioIo::new(ConnIo { wire: wire.clone(), observer: state.clone() });

    match drive(io, &shared, &state, &wire).await {
        Ended::Closed => {}
        Ended::HeaderTimeout => {
            shared.stats.record("refused", StatusCode::REQUEST_TIMEOUT.as_u16(), Duration::ZERO);
            wire.push(&raw_http1_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head was not received in time",
            ));
        }
        Ended::Malformed(error) => {
            // hyper answered a request it could not parse with a bare
            // status line; answer in the API's shape instead.
            if let Some(status) = wire.take_bare_response() {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                shared.stats.record("malformed", status.as_u16(), Duration::ZERO);
                let (code, message) = match status {
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                        "headers_too_large",
                        format!("request head larger than {} bytes", shared.limits.max_header_bytes),
                    ),
                    StatusCode::URI_TOO_LONG => ("uri_too_long", "the request target is too long".to_owned()),
                    _ => ("malformed_request", format!("the request is not valid HTTP/1.1 ({error})")),
                };
                wire.push(&raw_http1_error(status, code, &message));
            }
        }
    }
    close(&wire, &state).await;
}

/// Sends what hyper and we left to send, then closes: our side first, then,
/// unless the client already closed, reading and discarding its input for a
/// moment so the kernel does not reset the connection under the response.
async fn close(wire: &Wire, state: &ConnState) {
    let closing = async {
        if wire.shutdown().await.is_ok() && !state.peer_closed.get() {
            wire.discard_input(LINGER_IDLE, LINGER_MAX_BYTES).await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

#[derive(Debug)]
enum Ended {
    Closed,
    HeaderTimeout,
    /// hyper could not parse a request; its message says what was wrong.
    Malformed(String),
}

/// Runs hyper's connection future with our timer and drain signal beside it,
/// sending what hyper gathered each time it has done all it can. Returning
/// drops hyper's connection.
async fn drive<A: App>(
    io: TokioIo<ConnIo<ConnState>>,
    shared: &Rc<Shared<A>>,
    state: &Rc<ConnState>,
    wire: &Wire,
) -> Ended {
    let service = service_fn({
        let shared = shared.clone();
        let state = state.clone();
        move |request: http::Request<hyper::body::Incoming>| {
            let request = request.map(|body| RequestBody::new(body, shared.body_policy.clone()));
            respond(&shared, &state, request)
        }
    });
    let conn = shared.builder.serve_connection(io, service);
    tokio::pin!(conn);

    let keep_alive = shared.limits.keep_alive_timeout;
    let mut drain = shared.drain.clone();
    let mut draining = *drain.borrow_and_update();
    let mut shutdown_since = None;
    let timer = tokio::time::sleep_until(
        Instant::now() + shared.limits.header_read_timeout.min(keep_alive.max(Duration::from_millis(1))),
    );
    tokio::pin!(timer);
    if draining && state.http2.get() {
        conn.as_mut().graceful_shutdown();
        shutdown_since = Some(Instant::now());
    }
    loop {
        tokio::select! {
            // The connection first, and no random branch order: it is what
            // wakes this task on nearly every poll.
            biased;
            result = serving(conn.as_mut(), wire) => {
                return match result {
                    Ok(()) => Ended::Closed,
                    Err(error) => match error.downcast_ref::<hyper::Error>() {
                        Some(error) if error.is_parse() || error.is_parse_too_large() => {
                            Ended::Malformed(error.to_string())
                        }
                        _ => {
                            // Clients vanishing mid-request are routine.
                            tracing::debug!(%error, "connection ended with an error");
                            Ended::Closed
                        }
                    },
                };
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                // HTTP/2 has GOAWAY to say "finish, then go elsewhere".
                // HTTP/1.1 connections get `Connection: close` on their next
                // response instead (see `respond`), or are closed once idle
                // for a moment (see `ConnState::next_action`), so a client
                // about to send a request on an idle connection is not cut off.
                if state.http2.get() && shutdown_since.is_none() {
                    conn.as_mut().graceful_shutdown();
                    shutdown_since = Some(Instant::now());
                }
                // The waits are shorter now: look again at once.
                timer.as_mut().reset(Instant::now());
            }
            () = &mut timer => {
                let now = Instant::now();
                match state.next_action(now, keep_alive, draining, shutdown_since) {
                    Action::Wait(at) => timer.as_mut().reset(at),
                    Action::HeaderTimeout => return Ended::HeaderTimeout,
                    Action::IdleTimeout => {
                        // Idle: hyper closes at once (HTTP/1.1) or after
                        // GOAWAY (HTTP/2).
                        conn.as_mut().graceful_shutdown();
                        shutdown_since = Some(now);
                        timer.as_mut().reset(now + SHUTDOWN_GRACE);
                    }
                    Action::ForceClose => return Ended::Closed,
                }
            }
        }
    }
}

/// Polls hyper's connection and, whenever it has done all it can for now,
/// sends what it wrote: responses to every request that arrived in one read
/// leave in one write.
fn serving<'a, F: Future + 'a>(
    mut conn: Pin<&'a mut F>,
    wire: &'a Wire,
) -> impl Future<Output = F::Output> + 'a {
    std::future::poll_fn(move |cx| {
        let poll = conn.as_mut().poll(cx);
        if poll.is_pending() {
            // An error is remembered by the wire and reaches hyper on its
            // next read or write; Pending has registered a wake-up.
            let _ = wire.poll_send(cx);
        }
        poll
    })
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
        let status = response.status();
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("drover"));
        // A request answered 408 or 413 may have left part of its body
        // unread, so the connection cannot carry another request.
        if this.http1
            && (this.shared.draining.get()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::PAYLOAD_TOO_LARGE)
        {
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
            peer_closed: Cell::new(false),
            header_read_timeout: Duration::from_secs(header_timeout_s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_and_an_idle_connection_closes() {
        let keep_alive = Duration::from_secs(5);
        let s = state(2);
        let start = Instant::now();
        assert!(
            matches!(s.next_action(start, keep_alive, false, None), Action::Wait(at) if at == start + Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"GET / HT");
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(
            matches!(s.next_action(Instant::now(), keep_alive, false, None), Action::Wait(at) if at == deadline)
        );
        // More bytes do not extend the deadline (that is what slowloris relies on).
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"T");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(s.next_action(Instant::now(), keep_alive, false, None), Action::HeaderTimeout));

        let s = state(10);
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started();
        s.request_finished(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(s.next_action(Instant::now(), keep_alive, false, None), Action::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn draining_closes_what_stalls_or_idles_after_a_short_grace() {
        let keep_alive = Duration::from_secs(5);
        // A head that stopped arriving: 408 once it has been quiet for the grace.
        let s = state(10);
        s.on_read(b"GET / HT");
        let quiet_until = Instant::now() + DRAIN_GRACE;
        assert_eq!(s.next_action(Instant::now(), keep_alive, true, None), Action::Wait(quiet_until));
        tokio::time::advance(DRAIN_GRACE).await;
        assert_eq!(s.next_action(Instant::now(), keep_alive, true, None), Action::HeaderTimeout);

        // An idle keep-alive connection: closed after the grace, not the keep-alive timeout.
        let s = state(10);
        tokio::time::advance(DRAIN_GRACE).await;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, false, None),
            Action::Wait(s.idle_since.get() + keep_alive)
        );
        assert_eq!(s.next_action(Instant::now(), keep_alive, true, None), Action::IdleTimeout);

        // Told to close, nothing in flight, still open (a silent HTTP/2 peer): forced.
        let since = Instant::now();
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, Some(since)),
            Action::Wait(since + SHUTDOWN_GRACE)
        );
        tokio::time::advance(SHUTDOWN_GRACE).await;
        assert_eq!(s.next_action(Instant::now(), keep_alive, true, Some(since)), Action::ForceClose);

        // A request in flight is never forced: its own timeouts apply.
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started();
        assert!(matches!(s.next_action(Instant::now(), keep_alive, true, Some(since)), Action::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_is_recognised_by_its_preface_and_never_gets_a_header_timer() {
        let s = state(1);
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.http2.get());
        assert!(s.header_deadline.get().is_none());
    }
}
