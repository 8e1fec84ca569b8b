//! The worker's life: build the runtime, build the app, accept on every
//! inherited socket, report to the supervisor, drain, exit.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use drover_protocol::channel::WorkerMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::LocalSet;
use tracing::{debug, error, info, warn};

use crate::admission::AdmissionConfig;
use crate::blocking::BlockingPool;
use crate::conn;
use crate::control::{self, Broadcast, ControlWriter, DrainCause};
use crate::error::raw_http1_error;
use crate::fds::Inherited;
use crate::limits::Limits;
use crate::shared::Shared;
use crate::App;

/// A retiring worker keeps accepting until its sockets have been quiet this
/// long: connections steered elsewhere stop arriving at once, but ones whose
/// handshake began just before may still land.
const RETIRE_QUIET: Duration = Duration::from_millis(250);
/// ...and at most this long, whatever keeps arriving.
const RETIRE_SWEEP_MAX: Duration = Duration::from_secs(5);

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
    let runtime = runtime(options.blocking_threads)?;
    LocalSet::new().block_on(&runtime, serve(options, inherited, make_app))
}

/// A worker's runtime: the event loop on this thread, and a blocking pool
/// of `blocking_threads`.
pub(crate) fn runtime(blocking_threads: usize) -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads.max(1))
        // On a current-thread runtime every thread the runtime starts is a
        // blocking-pool thread; the event loop is this thread.
        .on_thread_start(crate::blocking::lower_thread_priority)
        .build()
        .map_err(RunError::Runtime)
}

/// The worker's side of the control channel, read for the worker's whole
/// life (deliveries must be acknowledged while draining too): the writer,
/// the broadcast, and the first drain request (or the supervisor's
/// disappearance).
pub(crate) fn open_control(
    control: Option<std::os::unix::net::UnixStream>,
) -> Result<(Rc<ControlWriter>, Broadcast, tokio::sync::oneshot::Receiver<DrainCause>), RunError> {
    let (writer, reader) = ControlWriter::new(control).map_err(RunError::Setup)?;
    let writer = Rc::new(writer);
    let broadcast = Broadcast::new(writer.clone());
    let (drain_cause_tx, drain_cause) = tokio::sync::oneshot::channel();
    tokio::task::spawn_local(control::read_commands(
        reader,
        broadcast.clone(),
        writer.clone(),
        drain_cause_tx,
    ));
    Ok((writer, broadcast, drain_cause))
}

/// Builds the application, telling the supervisor why when it cannot.
pub(crate) async fn make<A, Fut, E>(writer: &ControlWriter, made: Fut) -> Result<A, RunError>
where
    Fut: Future<Output = Result<A, E>>,
    E: Display,
{
    made.await.map_err(|error| {
        let message = error.to_string();
        writer.send(&WorkerMessage::Exiting { reason: format!("app failed to start: {message}") });
        RunError::App(message)
    })
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
    let (writer, broadcast, drain_cause) = open_control(inherited.control)?;
    let context = WorkerContext {
        info: options.info,
        blocking: BlockingPool::new(options.blocking_threads + options.blocking_queue),
        broadcast,
    };
    let app = make(&writer, make_app(context)).await?;
    let mut signals = WorkerSignals::register().map_err(RunError::Setup)?;

    let (drain_tx, drain_rx) = watch::channel(false);
    let shared = Rc::new(Shared::new(
        app,
        &options.limits,
        options.admission.clone(),
        options.access_log_every,
        drain_rx,
    ));
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
pub(crate) struct WorkerSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    _hup: tokio::signal::unix::Signal,
}

impl WorkerSignals {
    pub(crate) fn register() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            // Registering replaces the default action (terminate) with a
            // handler; nobody reads this stream.
            _hup: signal(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn stop(&mut self) {
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
