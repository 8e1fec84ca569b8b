//! The Unix signals the supervisor answers, each with one meaning.

use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// What an operator asked for, by signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain every worker and exit 0. The second one stops
    /// at once.
    Stop(&'static str),
    /// SIGHUP: rolling restart, one slot at a time, new worker before old
    /// drains; also deploys the binary now on disk.
    Reload,
}

/// The supervisor's signal streams, registered once at start-up.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn register() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
