//! The worker's side of the control channel: ready, heartbeats, exit reason
//! and publishes out; drain, deliveries and publish acknowledgements in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::time::Duration;

use drover_protocol::channel::{self, SupervisorMessage, WorkerMessage};
use drover_protocol::limits::{LimitCheck, Limits, Verdict};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::admission::Admission;
use crate::stats::Stats;

/// How long [`Broadcast::publish`] waits for the other workers. The
/// supervisor gives up on slow recipients sooner (250 ms); this only covers
/// a supervisor that stopped answering.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`Broadcast::limit`] waits for the supervisor's verdicts before
/// it decides with this worker's own state.
const LIMIT_TIMEOUT: Duration = Duration::from_millis(250);

/// Why the worker starts draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainCause {
    Supervisor,
    /// The slot is being removed: sweep the accept queue first.
    Retire,
    SupervisorGone,
    Signal,
}

impl DrainCause {
    pub fn describe(self) -> &'static str {
        match self {
            DrainCause::Supervisor => "drained on the supervisor's request",
            DrainCause::Retire => "retired (scaled down)",
            DrainCause::SupervisorGone => "drained because the supervisor went away",
            DrainCause::Signal => "drained on a signal",
        }
    }
}

/// Sends messages to the supervisor; a no-op when run without one.
///
/// Writes go through a plain non-blocking std socket rather than tokio's:
/// tokio's `try_write` refuses until the reactor has seen the socket become
/// writable, which would lose the first message. Messages are tiny and the
/// socket buffer holds hundreds of them; a full buffer means the supervisor
/// is not reading, and a dropped heartbeat is the honest signal for that.
pub(crate) struct ControlWriter {
    write: Option<StdUnixStream>,
}

impl ControlWriter {
    /// Splits the channel; the read half is returned for [`read_commands`].
    pub fn new(control: Option<StdUnixStream>) -> std::io::Result<(Self, Option<UnixStream>)> {
        match control {
            None => Ok((Self { write: None }, None)),
            Some(stream) => {
                let read = UnixStream::from_std(stream.try_clone()?)?;
                Ok((Self { write: Some(stream) }, Some(read)))
            }
        }
    }

    pub fn send(&self, message: &WorkerMessage) {
        if let Some(mut write) = self.write.as_ref() {
            let _ = write.write_all(&channel::encode(message));
        }
    }

    fn connected(&self) -> bool {
        self.write.is_some()
    }
}

type Handler = Rc<dyn Fn(&str)>;

/// Messages between this host's workers, relayed by the supervisor: the
/// application publishes on a channel and subscribes to channels. A publish
/// returns once every other worker has run its handlers, which is what lets
/// a writer invalidate every worker's cached copy before it answers.
///
/// It also carries the host-wide rate limits ([`Broadcast::limit`]), which
/// the supervisor keeps for every worker.
#[derive(Clone)]
pub struct Broadcast {
    inner: Rc<BroadcastInner>,
}

struct BroadcastInner {
    writer: Rc<ControlWriter>,
    handlers: RefCell<HashMap<String, Vec<Handler>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    pending_limits: RefCell<HashMap<u64, oneshot::Sender<Vec<Verdict>>>>,
    /// Used without a supervisor, or when it does not answer in time: this
    /// worker's own view, so limits still hold (per worker) rather than
    /// failing open.
    local_limits: RefCell<Limits>,
    next_seq: Cell<u64>,
}

impl Broadcast {
    pub(crate) fn new(writer: Rc<ControlWriter>) -> Self {
        Self {
            inner: Rc::new(BroadcastInner {
                writer,
                handlers: RefCell::new(HashMap::new()),
                pending: RefCell::new(HashMap::new()),
                pending_limits: RefCell::new(HashMap::new()),
                local_limits: RefCell::new(Limits::default()),
                next_seq: Cell::new(1),
            }),
        }
    }

    /// A broadcast with no other workers: publishes return at once. For
    /// commands and tests that run the services outside a worker.
    pub fn standalone() -> Self {
        Self::new(Rc::new(ControlWriter { write: None }))
    }

    /// Runs `handler` for every message another worker publishes on
    /// `channel`. Handlers run on the event loop and must not block.
    pub fn subscribe(&self, channel: &str, handler: impl Fn(&str) + 'static) {
        self.inner.handlers.borrow_mut().entry(channel.to_owned()).or_default().push(Rc::new(handler));
    }

    /// Publishes `message` on `channel` to every other worker and waits until
    /// they have handled it (bounded: see [`PUBLISH_TIMEOUT`]).
    pub async fn publish(&self, channel: &str, message: &str) {
        if !self.inner.writer.connected() {
            return;
        }
        let seq = self.inner.next_seq.get();
        self.inner.next_seq.set(seq + 1);
        let (done, wait) = oneshot::channel();
        self.inner.pending.borrow_mut().insert(seq, done);
        self.inner.writer.send(&WorkerMessage::Publish {
            seq,
            channel: channel.to_owned(),
            message: message.to_owned(),
        });
        if tokio::time::timeout(PUBLISH_TIMEOUT, wait).await.is_err() {
            self.inner.pending.borrow_mut().remove(&seq);
            tracing::warn!(channel, "publish not acknowledged in time");
        }
    }

    /// Applies rate limits host-wide: the supervisor answers for every
    /// worker (see `drover_protocol::limits`). One verdict per check.
    pub async fn limit(&self, checks: Vec<LimitCheck>) -> Vec<Verdict> {
        if checks.is_empty() {
            return Vec::new();
        }
        if !self.inner.writer.connected() {
            return self.inner.local_limits.borrow_mut().apply(&checks);
        }
        let seq = self.inner.next_seq.get();
        self.inner.next_seq.set(seq + 1);
        let (done, wait) = oneshot::channel();
        self.inner.pending_limits.borrow_mut().insert(seq, done);
        let count = checks.len();
        self.inner.writer.send(&WorkerMessage::Limit { seq, checks: checks.clone() });
        match tokio::time::timeout(LIMIT_TIMEOUT, wait).await {
            Ok(Ok(verdicts)) if verdicts.len() == count => verdicts,
            _ => {
                self.inner.pending_limits.borrow_mut().remove(&seq);
                tracing::warn!("the supervisor did not answer a rate limit check in time; deciding locally");
                self.inner.local_limits.borrow_mut().apply(&checks)
            }
        }
    }

    fn limited(&self, seq: u64, verdicts: Vec<Verdict>) {
        if let Some(done) = self.inner.pending_limits.borrow_mut().remove(&seq) {
            let _ = done.send(verdicts);
        }
    }

    fn deliver(&self, channel: &str, message: &str) {
        // Clone the handlers out: one may subscribe another.
        let handlers: Vec<Handler> = self.inner.handlers.borrow().get(channel).cloned().unwrap_or_default();
        for handler in handlers {
            handler(message);
        }
    }

    fn published(&self, seq: u64) {
        if let Some(done) = self.inner.pending.borrow_mut().remove(&seq) {
            let _ = done.send(());
        }
    }
}

/// Reads the supervisor's messages until the channel closes: handles
/// deliveries and acknowledgements, and reports the first drain request (or
/// the supervisor's disappearance) on `drain`.
pub(crate) async fn read_commands(
    read: Option<UnixStream>,
    broadcast: Broadcast,
    writer: Rc<ControlWriter>,
    drain: oneshot::Sender<DrainCause>,
) {
    let Some(read) = read else { return std::future::pending().await };
    let mut drain = Some(drain);
    let mut lines = BufReader::new(read).split(b'\n');
    loop {
        match lines.next_segment().await {
            Ok(Some(line)) => match channel::decode::<SupervisorMessage>(&line) {
                Ok(SupervisorMessage::Drain) => {
                    if let Some(drain) = drain.take() {
                        let _ = drain.send(DrainCause::Supervisor);
                    }
                }
                Ok(SupervisorMessage::Retire) => {
                    if let Some(drain) = drain.take() {
                        let _ = drain.send(DrainCause::Retire);
                    }
                }
                Ok(SupervisorMessage::Deliver { origin, seq, channel, message }) => {
                    broadcast.deliver(&channel, &message);
                    writer.send(&WorkerMessage::Delivered { origin, seq });
                }
                Ok(SupervisorMessage::Published { seq }) => broadcast.published(seq),
                Ok(SupervisorMessage::Limited { seq, verdicts }) => broadcast.limited(seq, verdicts),
                Err(error) => tracing::warn!(%error, "unreadable message from the supervisor"),
            },
            Ok(None) | Err(_) => {
                if let Some(drain) = drain.take() {
                    let _ = drain.send(DrainCause::SupervisorGone);
                }
                return;
            }
        }
    }
}

/// The application's counters and gauges, by name.
pub(crate) type AppFigures = (Vec<(String, u64)>, Vec<(String, f64)>);

/// Sends a heartbeat every `interval`, from the event loop itself: a loop
/// that is stuck sends none, which is what the supervisor watches for.
pub(crate) async fn heartbeats(
    writer: &ControlWriter,
    stats: &Stats,
    admission: &Admission,
    app_counters: &dyn Fn() -> AppFigures,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = ticks.tick().await;
        let mut counters = stats.snapshot();
        counters.loop_lag_us = due.elapsed().as_micros() as u64;
        (counters.app, counters.app_gauges) = app_counters();
        counters.admission = admission.snapshot();
        writer.send(&WorkerMessage::Heartbeat(counters));
    }
}
