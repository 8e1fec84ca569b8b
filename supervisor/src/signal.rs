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
    /// SIGUSR2: upgrade the supervisor itself: the binary on disk starts as
    /// a new supervisor on the same sockets, and this one drains and exits.
    Upgrade,
    /// SIGTTIN: one more worker (as nginx and Gunicorn do).
    AddWorker,
    /// SIGTTOU: one worker fewer, retired without dropping a connection.
    RemoveWorker,
}

/// The supervisor's signal streams, registered once at start-up.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    ttin: tokio::signal::unix::Signal,
    ttou: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn register() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
            _ = self.ttin.recv() => Signal::AddWorker,
            _ = self.ttou.recv() => Signal::RemoveWorker,
            _ = self.usr2.recv() => Signal::Upgrade,
        }
    }
}
