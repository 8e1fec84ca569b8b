//! The worker's life: build the runtime, build the app, accept on every
//! inherited socket, report to the supervisor, drain, exit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use drover_supervisor::protocol::WorkerMessage;
use hyper::server::conn::{http1, http2};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::task::LocalSet;
use tracing::{debug, error, info, warn};

use crate::admission::{Admission, AdmissionConfig};
use crate::blocking::BlockingPool;
use crate::body::BodyPolicy;
use crate::conn;
use crate::control::{self, Broadcast, ControlWriter, DrainCause};
use crate::error::raw_http1_error;
use crate::fds::Inherited;
use crate::limits::Limits;
use crate::request_id::RequestIds;
use crate::stats::Stats;
use crate::App;

/// A retiring worker keeps accepting until its sockets have been quiet this
/// long: connections steered elsewhere stop arriving at once, but ones whose
/// handshake began just before may still land.
const RETIRE_QUIET: Duration = Duration::from_millis(250);
/// ...and at most this long, whatever keeps arriving.
const RETIRE_SWEEP_MAX: Duration = Duration::from_secs(5);

/// An HTTP/2 connection is pinged after this long without a frame from the
/// client, and closed if the ping is not answered within
/// [`H2_PING_TIMEOUT`]: a peer that vanished or stopped answering must not
/// keep its streams, or the worker's drain, waiting.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// After an accept error such as EMFILE, wait before accepting again rather
/// than spin on an error that will repeat: first this long, doubling up to
/// [`ACCEPT_ERROR_PAUSE_MAX`] while it lasts. Connections that arrive
/// meanwhile wait in the kernel's queue; the ones open are served as usual.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);
const ACCEPT_ERROR_PAUSE_MAX: Duration = Duration::from_millis(500);
/// Descriptors a worker needs besides its connections (listeners, control
/// channel, event loop, database and log files), for the start-up check of
/// `http.max_connections` against the open-file limit.
const FD_HEADROOM: u64 = 64;

/// Who this worker is, for logs and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    pub slot: usize,
    pub generation: u64,
    pub pid: u32,
}

/// What the application gets to build itself with.
#[derive(Clone)]
pub struct WorkerContext {
    pub info: WorkerInfo,
    pub blocking: BlockingPool,
    /// Messages to and from this host's other workers.
    pub broadcast: Broadcast,
}

/// How the worker serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub info: WorkerInfo,
    pub limits: Limits,
    /// In-flight requests get this long to finish once draining starts.
    pub drain_timeout: Duration,
    /// How often the event loop reports to the supervisor.
    pub heartbeat_interval: Duration,
    /// Threads of the blocking pool for CPU-heavy work.
    pub blocking_threads: usize,
    /// Jobs that may wait for a blocking thread before new ones are refused.
    pub blocking_queue: usize,
    /// The access log records one request in this many; 0: off.
    pub access_log_every: u64,
    /// How many requests the worker works on at once, and what waits.
    pub admission: AdmissionConfig,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot set up the control channel or sockets: {0}")]
    Setup(#[source] io::Error),
    #[error("the application failed to start: {0}")]
    App(String),
}

/// State shared by every connection of this worker.
pub(crate) struct Shared<A> {
    pub app: A,
    pub limits: Limits,
    pub admission: Rc<Admission>,
    pub stats: Stats,
    pub request_ids: RequestIds,
    /// One request in this many is written to the access log; 0: none.
    pub access_log_every: u64,
    /// Requests seen since the last one logged.
    pub access_log_count: Cell<u64>,
    pub builders: Builders,
    /// True once draining: responses to HTTP/1.1 requests say
    /// `Connection: close`.
    pub draining: Cell<bool>,
    /// Flips to true when draining starts; connections and accept loops
    /// watch it.
    pub drain: watch::Receiver<bool>,
    /// How long request bodies may pause; shared by every request.
    pub body_policy: Rc<BodyPolicy>,
    /// Notified when the last connection closes.
    all_closed: Notify,
    /// When a connection was last accepted (a retiring worker sweeps its
    /// queue until this is old enough).
    last_accept: Cell<std::time::Instant>,
    /// Open connections per client address, kept only while
    /// `http.max_connections_per_ip` is set.
    per_ip: RefCell<HashMap<IpAddr, u32>>,
}

impl<A> Shared<A> {
    /// Whether this request is one the access log records.
    pub(crate) fn sample_access(&self) -> bool {
        if self.access_log_every == 0 {
            return false;
        }
        let seen = self.access_log_count.get() + 1;
        let sampled = seen >= self.access_log_every;
        self.access_log_count.set(if sampled { 0 } else { seen });
        sampled
    }

    /// Counts a new connection from `ip` against the per-address cap;
    /// false (and not counted) when the address already has its share.
    fn admit_ip(&self, ip: IpAddr) -> bool {
        let cap = self.limits.max_connections_per_ip;
        if cap == 0 {
            return true;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        let open = per_ip.entry(ip).or_insert(0);
        if *open as usize >= cap {
            return false;
        }
        *open += 1;
        true
    }

    fn ip_closed(&self, ip: IpAddr) {
        if self.limits.max_connections_per_ip == 0 {
            return;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        if let Some(open) = per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    fn connection_closed(&self) {
        let left = self.stats.connections.get() - 1;
        self.stats.connections.set(left);
        if left == 0 {
            self.all_closed.notify_one();
        }
    }
}

/// Runs HTTP/2 connection tasks on the worker's own thread, so services need
/// not be `Send`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// Runs the worker until it has drained. Returns the exit reason sent to the
/// supervisor.
pub fn run<A, F, Fut, E>(
    options: ServeOptions,
    inherited: Inherited,
    make_app: F,
) -> Result<&'static str, RunError>
where
    A: App,
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<A, E>>,
    E: Display,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(options.blocking_threads.max(1))
        // On a current-thread runtime every thread the runtime starts is a
        // blocking-pool thread; the event loop is this thread.
        .on_thread_start(crate::blocking::lower_thread_priority)
        .build()
        .map_err(RunError::Runtime)?;
    LocalSet::new().block_on(&runtime, serve(options, inherited, make_app))
}

async fn serve<A, F, Fut, E>(
    options: ServeOptions,
    inherited: Inherited,
    make_app: F,
) -> Result<&'static str, RunError>
where
    A: App,
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<A, E>>,
    E: Display,
{
    let (writer, reader) = ControlWriter::new(inherited.control).map_err(RunError::Setup)?;
    let writer = Rc::new(writer);
    let broadcast = Broadcast::new(writer.clone());
    // Read the supervisor's messages from the start, and for the whole
    // life of the worker: deliveries must be acknowledged while draining too.
    let (drain_cause_tx, drain_cause) = tokio::sync::oneshot::channel();
    tokio::task::spawn_local(control::read_commands(
        reader,
        broadcast.clone(),
        writer.clone(),
        drain_cause_tx,
    ));
    let context = WorkerContext {
        info: options.info,
        blocking: BlockingPool::new(options.blocking_threads + options.blocking_queue),
        broadcast,
    };
    let app = match make_app(context).await {
        Ok(app) => app,
        Err(error) => {
            let message = error.to_string();
            writer.send(&WorkerMessage::Exiting { reason: format!("app failed to start: {message}") });
            return Err(RunError::App(message));
        }
    };
    let mut signals = WorkerSignals::register().map_err(RunError::Setup)?;

    let (drain_tx, drain_rx) = watch::channel(false);
    let shared = Rc::new(Shared {
        app,
        builders: Builders::new(&options.limits),
        limits: options.limits.clone(),
        admission: Admission::new(options.admission.clone()),
        stats: Stats::default(),
        request_ids: RequestIds::new(),
        access_log_every: options.access_log_every,
        access_log_count: Cell::new(0),
        draining: Cell::new(false),
        body_policy: Rc::new(BodyPolicy {
            gap: options.limits.body_read_timeout,
            drain_gap: conn::DRAIN_GRACE,
            drain: drain_rx.clone(),
        }),
        drain: drain_rx,
        all_closed: Notify::new(),
        last_accept: Cell::new(std::time::Instant::now()),
        per_ip: RefCell::new(HashMap::new()),
    });
    let mut addrs = Vec::new();
    for listener in inherited.listeners {
        let listener = TcpListener::from_std(listener).map_err(RunError::Setup)?;
        addrs.push(listener.local_addr().map_err(RunError::Setup)?.to_string());
        tokio::task::spawn_local(accept_loop(listener, shared.clone()));
    }
    writer.send(&WorkerMessage::Ready { pid: options.info.pid });
    info!(listen = ?addrs, "worker ready");
    if let Some(limit) = open_file_limit() {
        let wanted = options.limits.max_connections as u64 + FD_HEADROOM;
        if limit < wanted {
            warn!(
                open_file_limit = limit,
                max_connections = options.limits.max_connections,
                "the open-file limit is below http.max_connections plus {FD_HEADROOM}: past about {} \
                 connections this worker stops accepting until some close (raise LimitNOFILE)",
                limit.saturating_sub(FD_HEADROOM)
            );
        }
    }

    let app_counters = || (shared.app.counters(), shared.app.gauges());
    let cause = tokio::select! {
        cause = drain_cause => cause.unwrap_or(DrainCause::SupervisorGone),
        () = signals.stop() => DrainCause::Signal,
        () = control::heartbeats(&writer, &shared.stats, &shared.admission, &app_counters, options.heartbeat_interval) => unreachable!("heartbeats never end"),
    };
    info!(
        cause = cause.describe(),
        in_flight = shared.stats.in_flight.get(),
        connections = shared.stats.connections.get(),
        "draining"
    );
    shared.draining.set(true);
    if cause == DrainCause::Retire {
        // New connections now go to other slots; take in what is queued.
        let started = std::time::Instant::now();
        while shared.last_accept.get().elapsed() < RETIRE_QUIET && started.elapsed() < RETIRE_SWEEP_MAX {
            tokio::time::sleep(RETIRE_QUIET / 5).await;
        }
    }
    let _ = drain_tx.send(true);

    let drained = async {
        while shared.stats.connections.get() > 0 {
            shared.all_closed.notified().await;
        }
    };
    let reason = tokio::select! {
        () = drained => cause.describe(),
        () = tokio::time::sleep(options.drain_timeout) => {
            warn!(
                connections = shared.stats.connections.get(),
                in_flight = shared.stats.in_flight.get(),
                timeout_ms = options.drain_timeout.as_millis() as u64,
                "drain timeout: closing the connections that are left"
            );
            "drain timeout reached"
        }
        () = signals.stop() => {
            warn!("second stop signal: exiting without waiting");
            "stopped at once on a second signal"
        }
        // Keep proving liveness while draining: a long drain is not a stall.
        () = control::heartbeats(&writer, &shared.stats, &shared.admission, &app_counters, options.heartbeat_interval) => unreachable!("heartbeats never end"),
    };
    // Final counts, so the supervisor's totals include the last second.
    let mut last = shared.stats.snapshot();
    (last.app, last.app_gauges) = (shared.app.counters(), shared.app.gauges());
    writer.send(&WorkerMessage::Heartbeat(last));
    writer.send(&WorkerMessage::Exiting { reason: reason.to_string() });
    info!(reason, requests = shared.stats.requests.get(), "worker exiting");
    Ok(reason)
}

/// hyper's connection settings, one per protocol. The connection picks one
/// from the client's first bytes (see `conn.rs`).
pub(crate) struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<LocalExec>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .keep_alive(!limits.keep_alive_timeout.is_zero())
            // Our own timer answers slow heads with 408 (hyper would just close).
            .header_read_timeout(None)
            .max_buf_size(limits.hyper_max_buf_size())
            .max_headers(limits.hyper_max_headers())
            // Not hyper's pipeline_flush: it keeps responses in a buffer that is
            // lost when a later request in the same read is malformed. The
            // connection's wire gathers pipelined responses into one write
            // instead (see wire.rs).
            .pipeline_flush(false);
        let mut http2 = http2::Builder::new(LocalExec);
        http2
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.hyper_max_buf_size()).unwrap_or(u32::MAX));
        Self { http1, http2 }
    }
}

async fn accept_loop<A: App>(listener: TcpListener, shared: Rc<Shared<A>>) {
    let mut drain = shared.drain.clone();
    if *drain.borrow_and_update() {
        return;
    }
    // Accept errors that are not one connection's: logged once per episode,
    // with how long it lasted once it ends, so a full descriptor table does
    // not flood the log.
    let mut failing: Option<(std::time::Instant, u64)> = None;
    let mut pause = ACCEPT_ERROR_PAUSE;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.changed() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some((since, failures)) = failing.take() {
                    info!(
                        failures,
                        paused_ms = since.elapsed().as_millis() as u64,
                        "accepting connections again"
                    );
                    pause = ACCEPT_ERROR_PAUSE;
                }
                shared.last_accept.set(std::time::Instant::now());
                // Responses are written whole; Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                if shared.stats.connections.get() >= shared.limits.max_connections as u64 {
                    tokio::task::spawn_local(refuse(stream, OVERLOADED, shared.request_ids.made()));
                    continue;
                }
                let ip = peer.ip();
                if !shared.admit_ip(ip) {
                    tokio::task::spawn_local(refuse(
                        stream,
                        TOO_MANY_FROM_ADDRESS,
                        shared.request_ids.made(),
                    ));
                    continue;
                }
                shared.stats.connections.set(shared.stats.connections.get() + 1);
                let shared = shared.clone();
                tokio::task::spawn_local(async move {
                    conn::serve(stream, shared.clone()).await;
                    shared.ip_closed(ip);
                    shared.connection_closed();
                });
            }
            Err(error) if is_per_connection(&error) => {
                debug!(%error, "accept: connection failed before it was accepted");
            }
            Err(error) => {
                match &mut failing {
                    Some((_, failures)) => *failures += 1,
                    None => {
                        error!(
                            %error,
                            connections = shared.stats.connections.get(),
                            "cannot accept connections; open ones are still served, new ones wait until this \
                             clears (for too many open files: raise LimitNOFILE or lower http.max_connections)"
                        );
                        failing = Some((std::time::Instant::now(), 1));
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_ERROR_PAUSE_MAX);
            }
        }
    }
    // Dropping our copy of the socket does not close it: the supervisor holds
    // it, and queued connections go to the worker that replaces us.
    debug!("stopped accepting");
}

/// This process's soft limit on open files (`RLIMIT_NOFILE`), read from
/// /proc rather than asked of the kernel through FFI.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Errors that concern one connection, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

/// Why a connection is refused as it is accepted: the error code and message.
const OVERLOADED: (&str, &str) = ("overloaded", "this worker has too many open connections; retry shortly");
const TOO_MANY_FROM_ADDRESS: (&str, &str) =
    ("too_many_connections", "too many open connections from your address; close some or retry shortly");

/// Tells a client over a connection limit to come back, then closes.
async fn refuse(mut stream: TcpStream, (code, message): (&str, &str), request_id: http::HeaderValue) {
    use tokio::io::AsyncWriteExt;
    let body = raw_http1_error(http::StatusCode::SERVICE_UNAVAILABLE, code, message, &request_id);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

/// SIGTERM and SIGINT drain (the second exits at once); SIGHUP is ignored, as
/// a worker's reload is the supervisor's business.
struct WorkerSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    _hup: tokio::signal::unix::Signal,
}

impl WorkerSignals {
    fn register() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            // Registering replaces the default action (terminate) with a
            // handler; nobody reads this stream.
            _hup: signal(SignalKind::hangup())?,
        })
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63421                63421                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        assert_eq!(parse_open_file_limit("Max open files unlimited unlimited files\n"), None);
        assert!(open_file_limit().is_some(), "this process has a limit");
    }
}
