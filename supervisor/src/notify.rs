//! systemd's notification protocol: the supervisor tells the service manager
//! when it is ready, reloading or stopping, a one-line status, and watchdog
//! keep-alives. systemd accepts notifications from the main process only,
//! so the supervisor speaks for its workers: it pings the watchdog only
//! while every serving worker's heartbeat is fresh.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::time::Duration;

use drover_protocol::handover::FdName;
use sd_notify::NotifyState;

pub(crate) struct Notifier {
    enabled: bool,
    /// `$WATCHDOG_USEC`, when systemd expects keep-alives from us.
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self { enabled: std::env::var_os("NOTIFY_SOCKET").is_some(), watchdog: sd_notify::watchdog_enabled() }
    }

    /// How often the supervisor should report: half the watchdog interval
    /// (as systemd recommends), and at least every second for `STATUS=`.
    pub fn tick(&self) -> Duration {
        let second = Duration::from_secs(1);
        self.watchdog.map_or(second, |w| (w / 2).min(second))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(error) = sd_notify::notify(states) {
                tracing::warn!(%error, "cannot notify the service manager");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Sent when a reload starts; `READY=1` follows when it ends.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status("reloading")]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining workers")]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Hands a slot's listening sockets to systemd's file descriptor store
    /// (`FDSTORE=1`), so they outlive this process: after
    /// `systemctl restart` systemd passes them back (`LISTEN_FDS`), and
    /// connections that arrive in between wait in their queues.
    /// Stored sockets are named `drover-slot-N`, so that a restarted
    /// supervisor gives each back to the slot it served.
    pub fn store_sockets(&self, slot: usize, sockets: &[std::net::TcpListener]) {
        if !self.enabled {
            return;
        }
        let name = FdName::Slot(slot).to_string();
        let fds: Vec<std::os::fd::BorrowedFd<'_>> = sockets.iter().map(std::os::fd::AsFd::as_fd).collect();
        if let Err(error) =
            sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(&name)], &fds)
        {
            tracing::warn!(%error, slot, "cannot store the listening sockets with systemd");
        }
    }

    /// Takes a retired slot's sockets out of systemd's store.
    pub fn remove_stored_sockets(&self, slot: usize) {
        let name = FdName::Slot(slot).to_string();
        self.send(&[NotifyState::FdStoreRemove, NotifyState::FdName(&name)]);
    }

    /// Tells systemd that `pid` is the main process now (after an upgrade).
    pub fn main_pid(&self, pid: u32) {
        self.send(&[NotifyState::MainPid(pid), NotifyState::Status("upgraded")]);
    }

    /// A keep-alive, if systemd asked for them.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}
