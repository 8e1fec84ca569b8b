//! The life of a worker process that serves no socket: a job process. It
//! gets the same runtime, control channel, heartbeats and drain as an HTTP
//! worker ([`crate::run`]), so the supervisor runs, watches, restarts and
//! rolls both kinds alike; what it runs is the application's loop
//! ([`Background::run`]), told to stop when the worker drains.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use drover_protocol::channel::{Counters, WorkerMessage};
use tokio::sync::watch;
use tokio::task::LocalSet;
use tracing::{info, warn};

use crate::blocking::BlockingPool;
use crate::control::{ControlWriter, DrainCause};
use crate::server::{RunError, WorkerContext, WorkerInfo, WorkerSignals};

/// What a background worker runs.
pub trait Background: 'static {
    /// Works until `stop` turns true, then finishes what it has in hand
    /// (handing back what it has not begun) and returns.
    fn run(self: Rc<Self>, stop: watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()>>>;

    /// Its counters for the heartbeat: `requests` is work done, `in_flight`
    /// work in hand, `failures` work that failed.
    fn counters(&self) -> Counters;
}

/// How a background worker runs.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    pub info: WorkerInfo,
    /// The work in hand gets this long to finish once draining starts.
    pub drain_timeout: Duration,
    /// How often the event loop reports to the supervisor.
    pub heartbeat_interval: Duration,
    /// Threads of the blocking pool for CPU-heavy work.
    pub blocking_threads: usize,
    /// Jobs that may wait for a blocking thread before new ones are refused.
    pub blocking_queue: usize,
}

/// Runs a background worker until it has drained. `control` is the
/// inherited control channel (none when run by hand). Returns the exit
/// reason sent to the supervisor.
pub fn run_background<B, F, Fut, E>(
    options: BackgroundOptions,
    control: Option<std::os::unix::net::UnixStream>,
    make: F,
) -> Result<&'static str, RunError>
where
    B: Background,
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<B, E>>,
    E: Display,
{
    let runtime = crate::server::runtime(options.blocking_threads)?;
    LocalSet::new().block_on(&runtime, serve(options, control, make))
}

async fn serve<B, F, Fut, E>(
    options: BackgroundOptions,
    control: Option<std::os::unix::net::UnixStream>,
    make: F,
) -> Result<&'static str, RunError>
where
    B: Background,
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<B, E>>,
    E: Display,
{
    let (writer, broadcast, drain_cause) = crate::server::open_control(control)?;
    let context = WorkerContext {
        info: options.info,
        blocking: BlockingPool::new(options.blocking_threads + options.blocking_queue),
        broadcast,
    };
    let app = Rc::new(crate::server::make(&writer, make(context)).await?);
    let mut signals = WorkerSignals::register().map_err(RunError::Setup)?;
    let (stop_tx, stop) = watch::channel(false);
    let mut work = tokio::task::spawn_local(app.clone().run(stop));
    writer.send(&WorkerMessage::Ready { pid: options.info.pid });
    info!("background worker ready");

    let counters = || app.counters();
    let cause = tokio::select! {
        cause = drain_cause => Some(cause.unwrap_or(DrainCause::SupervisorGone)),
        () = signals.stop() => Some(DrainCause::Signal),
        _ = &mut work => None,
        () = heartbeats(&writer, &counters, options.heartbeat_interval) => unreachable!("heartbeats never end"),
    };
    let reason = match cause {
        // Its loop ended by itself: a bug, or its resources are gone for
        // good. Exit so that the supervisor restarts it with backoff.
        None => {
            warn!("the background loop ended without being asked to");
            "the background loop ended on its own"
        }
        Some(cause) => {
            info!(cause = cause.describe(), in_hand = app.counters().in_flight, "draining");
            let _ = stop_tx.send(true);
            tokio::select! {
                _ = &mut work => cause.describe(),
                () = tokio::time::sleep(options.drain_timeout) => {
                    warn!(timeout_ms = options.drain_timeout.as_millis() as u64,
                        "drain timeout: exiting with work in hand (it is handed out again once its lease runs out)");
                    "drain timeout reached"
                }
                () = signals.stop() => {
                    warn!("second stop signal: exiting without waiting");
                    "stopped at once on a second signal"
                }
                () = heartbeats(&writer, &counters, options.heartbeat_interval) => unreachable!("heartbeats never end"),
            }
        }
    };
    writer.send(&WorkerMessage::Heartbeat(app.counters()));
    writer.send(&WorkerMessage::Exiting { reason: reason.to_string() });
    info!(reason, handled = app.counters().requests, "background worker exiting");
    match cause {
        Some(_) => Ok(reason),
        None => Err(RunError::App(reason.to_owned())),
    }
}

/// A heartbeat every `interval` from the event loop, as an HTTP worker's.
async fn heartbeats(writer: &ControlWriter, counters: &dyn Fn() -> Counters, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = ticks.tick().await;
        let mut now = counters();
        now.loop_lag_us = due.elapsed().as_micros() as u64;
        writer.send(&WorkerMessage::Heartbeat(now));
    }
}
