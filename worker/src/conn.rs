//! One client connection: hyper serving it, plus the timers hyper does not
//! give us in the shape we want (a header read timeout that answers 408, an
//! idle keep-alive timeout, GOAWAY on drain, closing what stalls while the
//! worker drains), and a close that delivers every response produced.
//!
//! An idle HTTP/1.1 connection costs almost nothing: after [`PARK_AFTER`]
//! without a request, hyper's connection (its 8 KiB read and write buffers,
//! its cached header map) is dropped, and the connection waits for its next
//! bytes with only the socket, a few counters and its timer; those bytes
//! start a fresh hyper connection. That is what lets a worker hold a very
//! large number of keep-alive connections (bench/connections.sh).
//!
//! The connection's bookkeeping lives in [`ConnState`], updated from two
//! places: the I/O wrapper sees bytes arrive, the service wrapper sees
//! requests start and finish. The connection task reads it when its single
//! timer fires, so the hot path only touches a few `Cell`s.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::admission::{self, Decision, Permit, Ticket};
use crate::body::{EndObserver, RequestBody};
use crate::error::raw_http1_error;
use crate::limits;
use crate::request_id;
use crate::shared::{LocalExec, Shared, DRAIN_GRACE};
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
/// A connection told to close (idle, or draining) with nothing in flight is
/// closed this long after, whatever the client does: an HTTP/2 client that
/// never acknowledges GOAWAY must not hold the worker.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// An HTTP/1.1 connection with nothing in flight for this long sets hyper's
/// connection aside (see the module's comment). Under load the gap between
/// a response and the next request is far shorter, so a busy connection
/// keeps its hyper connection and pays nothing; a connection that does idle
/// pays one new hyper connection (a few allocations, about a microsecond)
/// when it wakes.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// The first bytes of every HTTP/2 prior-knowledge connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    /// The current request's body has not been read to its end: hyper is
    /// inside it, and its connection must not be set aside.
    body_open: Cell<bool>,
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
    /// Idle long enough to set hyper's connection aside (see [`PARK_AFTER`]).
    Park,
}

/// Whether hyper's connection could be set aside now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parking {
    /// HTTP/2: its connection keeps its own state between requests.
    NotApplicable,
    /// Already set aside (or no bytes yet): the bytes that arrive start a
    /// hyper connection and look at the timer again, so until then only the
    /// keep-alive timeout is waited for.
    Parked,
    /// Something is still under way (a body being read, bytes being sent).
    Busy,
    Ready,
}

impl ReadObserver for ConnState {
    fn on_read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            self.peer_closed.set(true);
            return;
        }
        let now = Instant::now();
        self.last_read.set(now);
        if !self.http2.get() && self.in_flight.get() == 0 && self.header_deadline.get().is_none() {
            self.header_deadline.set(Some(now + self.header_read_timeout));
        }
    }
}

impl EndObserver for ConnState {
    fn body_ended(&self) {
        self.body_open.set(false);
    }
}

impl ConnState {
    /// A parsed request reached the service; returns when its head was read.
    fn request_started(&self, body_open: bool) -> Instant {
        self.in_flight.set(self.in_flight.get() + 1);
        self.header_deadline.set(None);
        self.body_open.set(body_open);
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
    /// While hyper's HTTP/1.1 connection runs, no wait is longer than
    /// [`PARK_AFTER`], so an idle connection is parked on time.
    fn next_action(
        &self,
        now: Instant,
        keep_alive: Duration,
        draining: bool,
        shutdown_since: Option<Instant>,
        parking: Parking,
    ) -> Action {
        let wait = |at: Instant| match parking {
            Parking::Ready | Parking::Busy => Action::Wait(at.min(now + PARK_AFTER)),
            Parking::NotApplicable | Parking::Parked => Action::Wait(at),
        };
        if let Some(deadline) = self.header_deadline.get() {
            let deadline = if draining { deadline.min(self.last_read.get() + DRAIN_GRACE) } else { deadline };
            return if now >= deadline { Action::HeaderTimeout } else { wait(deadline) };
        }
        // Never wait longer than the header timeout: a request head that
        // starts while we sleep must still be timed out on time.
        let recheck = now + self.header_read_timeout.min(keep_alive.max(Duration::from_millis(1)));
        if self.in_flight.get() > 0 {
            return wait(if draining { recheck.min(now + DRAIN_GRACE) } else { recheck });
        }
        if let Some(since) = shutdown_since {
            let deadline = since.max(self.idle_since.get()) + SHUTDOWN_GRACE;
            return if now >= deadline { Action::ForceClose } else { wait(deadline) };
        }
        let keep_alive = if draining { keep_alive.min(DRAIN_GRACE) } else { keep_alive };
        let idle_deadline = self.idle_since.get() + keep_alive;
        if now >= idle_deadline {
            return Action::IdleTimeout;
        }
        let park_at = self.idle_since.get() + PARK_AFTER;
        let next = match parking {
            Parking::Ready if now >= park_at => return Action::Park,
            // A parked connection's timer is only its keep-alive timeout: a
            // hundred thousand of them must not wake every few seconds.
            Parking::Parked => idle_deadline,
            Parking::Ready | Parking::Busy if park_at > now => recheck.min(park_at),
            _ => recheck,
        };
        wait(idle_deadline.min(next))
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
        body_open: Cell::new(false),
        peer_closed: Cell::new(false),
        header_read_timeout: shared.limits.header_read_timeout,
    });
    let wire = Wire::new(stream);

    match drive(&shared, &state, &wire).await {
        Ended::Closed => {}
        Ended::HeaderTimeout => {
            shared.stats.record("refused", StatusCode::REQUEST_TIMEOUT.as_u16(), Duration::ZERO);
            wire.push(&raw_http1_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head was not received in time",
                &shared.request_ids.made(),
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
                wire.push(&raw_http1_error(status, code, &message, &shared.request_ids.made()));
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

type Io = TokioIo<ConnIo<ConnState>>;

/// hyper's connection, on the heap: it holds read and write buffers of
/// 8 KiB each, and is dropped while an HTTP/1.1 connection idles.
enum Hyper<A: App> {
    Http1(Box<http1::Connection<Io, ConnService<A>>>),
    Http2(Pin<Box<http2::Connection<Io, ConnService<A>, LocalExec>>>),
}

impl<A: App> Hyper<A> {
    fn start(shared: &Rc<Shared<A>>, state: &Rc<ConnState>, wire: &Rc<Wire>, http2: bool) -> Self {
        let io = TokioIo::new(ConnIo { wire: wire.clone(), observer: state.clone() });
        let service = ConnService { shared: shared.clone(), state: state.clone(), wire: wire.clone() };
        if http2 {
            Hyper::Http2(Box::pin(shared.builders.http2.serve_connection(io, service)))
        } else {
            Hyper::Http1(Box::new(shared.builders.http1.serve_connection(io, service)))
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        match self {
            Hyper::Http1(conn) => Pin::new(&mut **conn).poll(cx),
            Hyper::Http2(conn) => conn.as_mut().poll(cx),
        }
    }

    fn graceful_shutdown(&mut self) {
        match self {
            Hyper::Http1(conn) => Pin::new(&mut **conn).graceful_shutdown(),
            Hyper::Http2(conn) => conn.as_mut().graceful_shutdown(),
        }
    }
}

/// What the first bytes of a connection say it speaks.
enum Preface {
    Http1,
    Http2,
    /// Too few bytes yet to tell.
    Undecided,
}

/// Reads what has arrived of a new connection's first bytes (kept for hyper
/// to read again) until they tell HTTP/2's preface from anything else,
/// which is taken for HTTP/1.1. `Ok(0)` from the socket is end of file.
fn read_preface(wire: &Wire, state: &ConnState) -> io::Result<Preface> {
    let kept = wire.unread_bytes();
    let mut buf = [0u8; H2_PREFACE.len()];
    let n = match wire.try_read(&mut buf[..H2_PREFACE.len() - kept.len()]) {
        Ok(0) => {
            state.on_read(&[]);
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n) => n,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Preface::Undecided),
        Err(error) => return Err(error),
    };
    state.on_read(&buf[..n]);
    wire.unread(&buf[..n]);
    let seen = wire.unread_bytes();
    Ok(if !H2_PREFACE.starts_with(&seen) {
        Preface::Http1
    } else if seen.len() == H2_PREFACE.len() {
        Preface::Http2
    } else {
        Preface::Undecided
    })
}

/// Serves the connection: hyper's connection future with our timer and the
/// drain signal beside it, sending what hyper gathered each time it has done
/// all it can. An HTTP/1.1 connection idle for [`PARK_AFTER`] drops hyper's
/// connection and waits for its next bytes with nothing but the socket; they
/// start a new one.
async fn drive<A: App>(shared: &Rc<Shared<A>>, state: &Rc<ConnState>, wire: &Rc<Wire>) -> Ended {
    let keep_alive = shared.limits.keep_alive_timeout;
    let mut drain = shared.drain.clone();
    let mut draining = *drain.borrow_and_update();
    let mut shutdown_since = None;
    let timer = tokio::time::sleep_until(
        Instant::now() + shared.limits.header_read_timeout.min(keep_alive.max(Duration::from_millis(1))),
    );
    tokio::pin!(timer);
    let mut hyper: Option<Hyper<A>> = None;
    // Known once the first bytes are read: Some(true) for HTTP/2.
    let mut http2: Option<bool> = None;
    loop {
        let parked = hyper.is_none();
        tokio::select! {
            // The connection first, and no random branch order: it is what
            // wakes this task on nearly every poll.
            biased;
            result = serving(hyper.as_mut(), wire) => {
                return match result {
                    Ok(()) => Ended::Closed,
                    Err(error) if error.is_parse() || error.is_parse_too_large() => Ended::Malformed(error.to_string()),
                    Err(error) => {
                        // Clients vanishing mid-request are routine.
                        tracing::debug!(%error, "connection ended with an error");
                        Ended::Closed
                    }
                };
            }
            ready = read_ready(parked, wire) => {
                if ready.is_err() {
                    return Ended::Closed;
                }
                let speaks_http2 = match http2 {
                    Some(known) => known,
                    None => match read_preface(wire, state) {
                        Ok(Preface::Http1) => false,
                        Ok(Preface::Http2) => {
                            // HTTP/2 frames arrive between requests: no header timer.
                            state.http2.set(true);
                            state.header_deadline.set(None);
                            true
                        }
                        Ok(Preface::Undecided) => continue,
                        Err(_) => return Ended::Closed,
                    },
                };
                http2 = Some(speaks_http2);
                let conn = hyper.insert(Hyper::start(shared, state, wire, speaks_http2));
                if draining && speaks_http2 && shutdown_since.is_none() {
                    conn.graceful_shutdown();
                    shutdown_since = Some(Instant::now());
                }
                // The waits depend on whether hyper runs: look again.
                timer.as_mut().reset(Instant::now());
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                // HTTP/2 has GOAWAY to say "finish, then go elsewhere".
                // HTTP/1.1 connections get `Connection: close` on their next
                // response instead (see `Responding`), or are closed once idle
                // for a moment (see `ConnState::next_action`), so a client
                // about to send a request on an idle connection is not cut off.
                if let Some(conn @ Hyper::Http2(_)) = hyper.as_mut() {
                    if shutdown_since.is_none() {
                        conn.graceful_shutdown();
                        shutdown_since = Some(Instant::now());
                    }
                }
                // The waits are shorter now: look again at once.
                timer.as_mut().reset(Instant::now());
            }
            () = &mut timer => {
                let now = Instant::now();
                let parking = match &hyper {
                    Some(Hyper::Http1(_)) if state.body_open.get() || !wire.all_sent() => Parking::Busy,
                    Some(Hyper::Http1(_)) => Parking::Ready,
                    Some(Hyper::Http2(_)) => Parking::NotApplicable,
                    None => Parking::Parked,
                };
                match state.next_action(now, keep_alive, draining, shutdown_since, parking) {
                    Action::Wait(at) => timer.as_mut().reset(at),
                    Action::HeaderTimeout => return Ended::HeaderTimeout,
                    Action::IdleTimeout => match hyper.as_mut() {
                        // Idle: hyper closes at once (HTTP/1.1) or after
                        // GOAWAY (HTTP/2).
                        Some(conn) => {
                            conn.graceful_shutdown();
                            shutdown_since = Some(now);
                            timer.as_mut().reset(now + SHUTDOWN_GRACE);
                        }
                        None => return Ended::Closed,
                    },
                    Action::ForceClose => return Ended::Closed,
                    Action::Park => {
                        if let Some(Hyper::Http1(conn)) = hyper.take() {
                            // Nothing in flight, the last body read to its
                            // end, every byte sent: hyper waits for a request
                            // head, and what it holds of one is handed on.
                            let parts = conn.into_parts();
                            tracing::trace!(unparsed = parts.read_buf.len(), "idle: hyper's connection set aside");
                            if parts.read_buf.is_empty() {
                                wire.shrink();
                            } else {
                                // The start of a pipelined request, read with
                                // the one before it: a new hyper connection
                                // takes it at once, and its head is timed
                                // from now.
                                wire.unread(&parts.read_buf);
                                if state.header_deadline.get().is_none() {
                                    state.header_deadline.set(Some(now + state.header_read_timeout));
                                }
                                hyper = Some(Hyper::start(shared, state, wire, false));
                            }
                        }
                        timer.as_mut().reset(now);
                    }
                }
            }
        }
    }
}

/// Ready when a parked (or new) connection has bytes to read.
fn read_ready(parked: bool, wire: &Wire) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(move |cx| if parked { wire.poll_read_ready(cx) } else { Poll::Pending })
}

/// Polls hyper's connection and, whenever it has done all it can for now,
/// sends what it wrote: responses to every request that arrived in one read
/// leave in one write. Never ready while the connection is parked.
fn serving<'a, A: App>(
    mut hyper: Option<&'a mut Hyper<A>>,
    wire: &'a Wire,
) -> impl Future<Output = hyper::Result<()>> + 'a {
    std::future::poll_fn(move |cx| {
        let Some(conn) = hyper.as_mut() else { return Poll::Pending };
        let poll = conn.poll(cx);
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
struct ConnService<A: App> {
    shared: Rc<Shared<A>>,
    state: Rc<ConnState>,
    /// For the client's address, asked of the socket only when the access
    /// log samples a request: every connection storing it would cost an
    /// idle connection 32 bytes more.
    wire: Rc<Wire>,
}

impl<A: App> hyper::service::Service<http::Request<Incoming>> for ConnService<A> {
    type Response = Response;
    type Error = Infallible;
    type Future = Responding<A>;

    fn call(&self, request: http::Request<Incoming>) -> Responding<A> {
        let (shared, state) = (&self.shared, &self.state);
        let started = state.request_started(!request.body().is_end_stream());
        let observer: Rc<dyn EndObserver> = state.clone();
        let request = request.map(|body| RequestBody::new(body, shared.body_policy.clone(), observer));
        shared.stats.in_flight.set(shared.stats.in_flight.get() + 1);
        let http1 = request.version() < Version::HTTP_2;
        let mut id = Some(shared.request_ids.for_request(request.headers()));
        let access = shared.sample_access().then(|| {
            Box::new(Access {
                method: request.method().clone(),
                target: request
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
                version: request.version(),
                peer: self.wire.peer_addr(),
            })
        });
        let mut permit = None;
        let body_limit = shared.app.body_limit(request.method(), request.uri().path());
        let (route, answer) = if let Some(refusal) = limits::check(&request, &shared.limits, body_limit) {
            ("refused", Answer::Now(Some(refusal)))
        } else {
            let read = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            // The head's read time stands for now: admitting at once needs
            // no clock read of its own.
            match shared.admission.arrive(request.uri().path(), read, started, started) {
                Decision::Exempt => call_app(shared, &self.wire, &mut id, request),
                Decision::Admitted(admitted) => {
                    permit = Some(admitted);
                    call_app(shared, &self.wire, &mut id, request)
                }
                Decision::Shed => (OVERLOADED, Answer::Now(Some(admission::overloaded()))),
                Decision::Queued(ticket) => (
                    "queued",
                    Answer::Waiting(Box::new(Waiting {
                        ticket,
                        deadline: Box::pin(tokio::time::sleep_until(started + shared.admission.max_wait())),
                        request: Some(request),
                        wire: self.wire.clone(),
                    })),
                ),
            }
        };
        Responding {
            shared: shared.clone(),
            state: state.clone(),
            route,
            started,
            http1,
            id,
            access,
            answer,
            permit,
            done: false,
        }
    }
}

/// The route label of requests refused for overload.
const OVERLOADED: &str = "overloaded";

/// Hands `request` to the application, with its id and its connection's
/// peer current while the app's synchronous part runs.
fn call_app<A: App>(
    shared: &Shared<A>,
    wire: &Rc<Wire>,
    id: &mut Option<HeaderValue>,
    request: Request,
) -> (&'static str, Answer<A::Future>) {
    let (route, future) =
        request_id::with_current(id, || crate::peer::with_wire(wire, || shared.app.call(request)));
    (route, Answer::Later(future))
}

/// One request being answered (see [`ConnService`]). Dropped unfinished (the
/// client went away), it still counts the request out.
struct Responding<A: App> {
    shared: Rc<Shared<A>>,
    state: Rc<ConnState>,
    route: &'static str,
    /// When the request's head was read.
    started: Instant,
    http1: bool,
    /// The request's id (request_id.rs): current while the app's future is
    /// polled, then put on the response.
    id: Option<HeaderValue>,
    /// What the access log needs of the request, when it is sampled.
    access: Option<Box<Access>>,
    answer: Answer<A::Future>,
    /// The request's place among those admitted (admission.rs), given back
    /// when it is answered or dropped.
    permit: Option<Permit>,
    done: bool,
}

/// A sampled request, for its access-log line.
struct Access {
    method: http::Method,
    target: String,
    version: Version,
    peer: Option<SocketAddr>,
}

impl Access {
    fn log(&self, response: &Response, id: Option<&HeaderValue>, took: Duration) {
        use hyper::body::Body as _;
        tracing::info!(
            target: "drover::access",
            method = %self.method,
            target_path = %self.target,
            version = ?self.version,
            status = response.status().as_u16(),
            bytes = response.body().size_hint().exact(),
            duration_us = took.as_micros() as u64,
            peer = %self.peer.map_or_else(|| "?".to_owned(), |peer| peer.to_string()),
            request_id = id.and_then(|id| id.to_str().ok()).unwrap_or(""),
        );
    }
}

enum Answer<F> {
    /// Refused by the limits: the response is already made.
    Now(Option<Response>),
    Later(F),
    /// Over the admission limit: waiting for a place, or the deadline.
    Waiting(Box<Waiting>),
}

/// A request waiting for admission, boxed: only overload makes them, and
/// every other request's future stays small.
struct Waiting {
    ticket: Ticket,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Handed to the app once admitted.
    request: Option<Request>,
    /// The connection, for the client's address while the app is called.
    wire: Rc<Wire>,
}

impl<A: App> Future for Responding<A> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut response = loop {
            match &mut this.answer {
                Answer::Now(response) => break response.take().expect("Responding polled after completion"),
                Answer::Later(future) => {
                    break std::task::ready!(
                        request_id::with_current(&mut this.id, || Pin::new(future).poll(cx))
                    )
                }
                Answer::Waiting(waiting) => {
                    match waiting.ticket.poll_granted(cx) {
                        Poll::Ready(Some(permit)) => {
                            this.permit = Some(permit);
                            let request = waiting.request.take().expect("a waiting request is called once");
                            let wire = waiting.wire.clone();
                            (this.route, this.answer) = call_app(&this.shared, &wire, &mut this.id, request);
                            continue;
                        }
                        // Dropped from a full queue for a newer request.
                        Poll::Ready(None) => {}
                        Poll::Pending => {
                            std::task::ready!(waiting.deadline.as_mut().poll(cx));
                            if let Answer::Waiting(waiting) =
                                std::mem::replace(&mut this.answer, Answer::Now(None))
                            {
                                waiting.ticket.expire();
                            }
                        }
                    }
                    this.route = OVERLOADED;
                    break admission::overloaded();
                }
            }
        };
        let now = Instant::now();
        if response.body().is_stream() {
            // In flight until its last piece is sent: a connection sending a
            // stream is not idle, and a drain waits for it.
            this.done = true;
            let guard = StreamInFlight { state: this.state.clone(), shared: this.shared.clone() };
            response.body_mut().guard_until_end(Box::new(guard));
        } else {
            this.finish(now);
        }
        if let Some(permit) = this.permit.take() {
            permit.finish(now);
        }
        this.shared.stats.record(
            this.route,
            response.status().as_u16(),
            now.saturating_duration_since(this.started),
        );
        let status = response.status();
        if let Some(access) = this.access.take() {
            access.log(&response, this.id.as_ref(), now.saturating_duration_since(this.started));
        }
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("drover"));
        // No response is to be read as anything but its declared type.
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(id) = this.id.take() {
            headers.insert(request_id::X_REQUEST_ID, id);
        }
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
        request_finished(&self.state, &self.shared, now);
    }
}

/// A request's response is complete at `now`.
fn request_finished<A>(state: &ConnState, shared: &Shared<A>, now: Instant) {
    state.request_finished(now);
    let stats = &shared.stats;
    stats.in_flight.set(stats.in_flight.get() - 1);
    stats.requests.set(stats.requests.get() + 1);
}

/// Held by a streamed body: its request finishes when the stream ends or
/// is dropped (the client went away).
struct StreamInFlight<A> {
    state: Rc<ConnState>,
    shared: Rc<Shared<A>>,
}

impl<A> Drop for StreamInFlight<A> {
    fn drop(&mut self) {
        request_finished(&self.state, &self.shared, Instant::now());
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
            body_open: Cell::new(false),
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
            matches!(s.next_action(start, keep_alive, false, None, Parking::NotApplicable), Action::Wait(at) if at == start + Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"GET / HT");
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(
            matches!(s.next_action(Instant::now(), keep_alive, false, None, Parking::NotApplicable), Action::Wait(at) if at == deadline)
        );
        // More bytes do not extend the deadline (that is what slowloris relies on).
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"T");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::NotApplicable),
            Action::HeaderTimeout
        ));

        let s = state(10);
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started(false);
        s.request_finished(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::NotApplicable),
            Action::IdleTimeout
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn draining_closes_what_stalls_or_idles_after_a_short_grace() {
        let keep_alive = Duration::from_secs(5);
        // A head that stopped arriving: 408 once it has been quiet for the grace.
        let s = state(10);
        s.on_read(b"GET / HT");
        let quiet_until = Instant::now() + DRAIN_GRACE;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, None, Parking::NotApplicable),
            Action::Wait(quiet_until)
        );
        tokio::time::advance(DRAIN_GRACE).await;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, None, Parking::NotApplicable),
            Action::HeaderTimeout
        );

        // An idle keep-alive connection: closed after the grace, not the keep-alive timeout.
        let s = state(10);
        tokio::time::advance(DRAIN_GRACE).await;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::NotApplicable),
            Action::Wait(s.idle_since.get() + keep_alive)
        );
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, None, Parking::NotApplicable),
            Action::IdleTimeout
        );

        // Told to close, nothing in flight, still open (a silent HTTP/2 peer): forced.
        let since = Instant::now();
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, Some(since), Parking::NotApplicable),
            Action::Wait(since + SHUTDOWN_GRACE)
        );
        tokio::time::advance(SHUTDOWN_GRACE).await;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, true, Some(since), Parking::NotApplicable),
            Action::ForceClose
        );

        // A request in flight is never forced: its own timeouts apply.
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started(false);
        assert!(matches!(
            s.next_action(Instant::now(), keep_alive, true, Some(since), Parking::NotApplicable),
            Action::Wait(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_http1_connection_is_parked_once_nothing_is_under_way() {
        let keep_alive = Duration::from_secs(5);
        let s = state(10);
        s.on_read(b"GET / HTTP/1.1\r\n\r\n");
        s.request_started(false);
        s.request_finished(Instant::now());
        let park_at = Instant::now() + PARK_AFTER;
        // Not before PARK_AFTER: a busy connection keeps hyper's connection.
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::Ready),
            Action::Wait(park_at)
        );
        tokio::time::advance(PARK_AFTER).await;
        assert_eq!(s.next_action(Instant::now(), keep_alive, false, None, Parking::Ready), Action::Park);
        // A body still being read, or bytes still to send: look again later.
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::Busy),
            Action::Wait(Instant::now() + PARK_AFTER)
        );
        // Parked: only the keep-alive timeout is left, however long it is.
        let long = Duration::from_secs(600);
        assert_eq!(
            s.next_action(Instant::now(), long, false, None, Parking::Parked),
            Action::Wait(s.idle_since.get() + long)
        );
        tokio::time::advance(keep_alive).await;
        assert_eq!(
            s.next_action(Instant::now(), keep_alive, false, None, Parking::Parked),
            Action::IdleTimeout
        );

        // A request with a body: open until its end is seen.
        s.request_started(true);
        assert!(s.body_open.get());
        s.body_ended();
        assert!(!s.body_open.get());
    }
}
