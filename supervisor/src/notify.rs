//! systemd's notification protocol: the supervisor tells the service manager
//! when it is ready, reloading or stopping, a one-line status, and watchdog
//! keep-alives. systemd accepts notifications from the main process only,
//! so the supervisor speaks for its workers: it pings the watchdog only
//! while every serving worker's heartbeat is fresh.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::time::Duration;

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

    /// A keep-alive, if systemd asked for them.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }
}
