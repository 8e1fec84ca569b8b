//! The worker's side of the control channel: ready, heartbeats, exit reason
//! and publishes out; drain, deliveries and publish acknowledgements in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::time::Duration;

use drover_supervisor::protocol::{self, SupervisorMessage, WorkerMessage};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::stats::Stats;

/// How long [`Broadcast::publish`] waits for the other workers. The
/// supervisor gives up on slow recipients sooner (250 ms); this only covers
/// a supervisor that stopped answering.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

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
            let _ = write.write_all(&protocol::encode(message));
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
#[derive(Clone)]
pub struct Broadcast {
    inner: Rc<BroadcastInner>,
}

struct BroadcastInner {
    writer: Rc<ControlWriter>,
    handlers: RefCell<HashMap<String, Vec<Handler>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    next_seq: Cell<u64>,
}

impl Broadcast {
    pub(crate) fn new(writer: Rc<ControlWriter>) -> Self {
        Self {
            inner: Rc::new(BroadcastInner {
                writer,
                handlers: RefCell::new(HashMap::new()),
                pending: RefCell::new(HashMap::new()),
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
            Ok(Some(line)) => match protocol::decode::<SupervisorMessage>(&line) {
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
        writer.send(&WorkerMessage::Heartbeat(counters));
    }
}
