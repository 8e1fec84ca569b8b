//! The worker's side of the control channel: ready, heartbeats, exit reason
//! out; drain in.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use drover_supervisor::protocol::{self, SupervisorMessage, WorkerMessage};
use std::io::Write;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

use crate::stats::Stats;

/// Why the worker starts draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainCause {
    Supervisor,
    SupervisorGone,
    Signal,
}

impl DrainCause {
    pub fn describe(self) -> &'static str {
        match self {
            DrainCause::Supervisor => "drained on the supervisor's request",
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
}

/// Resolves with the reason to drain: the supervisor asked, or it is gone.
pub(crate) async fn read_commands(read: Option<UnixStream>) -> DrainCause {
    let Some(read) = read else {
        return std::future::pending().await;
    };
    let mut lines = BufReader::new(read).split(b'\n');
    loop {
        match lines.next_segment().await {
            Ok(Some(line)) => match protocol::decode::<SupervisorMessage>(&line) {
                Ok(SupervisorMessage::Drain) => return DrainCause::Supervisor,
                Err(error) => tracing::warn!(%error, "unreadable message from the supervisor"),
            },
            Ok(None) | Err(_) => return DrainCause::SupervisorGone,
        }
    }
}

/// Sends a heartbeat every `interval`, from the event loop itself: a loop
/// that is stuck sends none, which is what the supervisor watches for.
pub(crate) async fn heartbeats(writer: &ControlWriter, stats: &Stats, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        writer.send(&WorkerMessage::Heartbeat(stats.snapshot()));
    }
}
