//! Upgrading the supervisor in place (SIGUSR2, `drover ctl upgrade`): the
//! binary now on disk starts as a successor with every socket handed over
//! ([`drover_protocol::handover`]); once its workers are ready it says so
//! and this supervisor drains and leaves. A successor that exits or is not
//! ready in time is given up on, and nothing changes here.
//!
//! Pure state and the fd list; the supervisor spawns and signals.

use std::os::fd::RawFd;
use std::time::Duration;

use drover_protocol::handover::FdName;
use tokio::time::Instant;

/// A new supervisor gets this many boot timeouts to be ready (it runs its
/// preflight checks, then boots every worker) before the upgrade is given up.
pub const TIMEOUT_BOOTS: u32 = 3;

/// An upgrade under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    /// The successor's pid.
    pub pid: u32,
    started: Instant,
    /// The successor is serving; this supervisor is on its way out.
    pub took_over: bool,
    /// The successor was late and has been killed; its exit ends the upgrade.
    killed: bool,
}

impl Upgrade {
    pub fn started(pid: u32, now: Instant) -> Self {
        Self { pid, started: now, took_over: false, killed: false }
    }

    /// When the successor must be ready by; none once it took over or was
    /// killed.
    pub fn deadline(&self, boot_timeout: Duration) -> Option<Instant> {
        (!self.took_over && !self.killed).then(|| self.started + boot_timeout * TIMEOUT_BOOTS)
    }

    /// Whether the successor is late at `now`: true once, and then it is
    /// taken as killed, so the deadline does not fire again while its exit
    /// is on the way.
    pub fn check_late(&mut self, now: Instant, boot_timeout: Duration) -> bool {
        let late = self.deadline(boot_timeout).is_some_and(|deadline| now >= deadline);
        self.killed |= late;
        late
    }
}

/// Every fd a successor gets, named: each slot's sockets in slot order, the
/// control socket, then the application's own listeners.
pub fn handover_fds(
    slots: &[Vec<RawFd>],
    control: Option<RawFd>,
    extra: &[(FdName, RawFd)],
) -> Vec<(RawFd, FdName)> {
    let sockets =
        slots.iter().enumerate().flat_map(|(slot, fds)| fds.iter().map(move |&fd| (fd, FdName::Slot(slot))));
    let control = control.map(|fd| (fd, FdName::Control));
    let extra = extra.iter().map(|(name, fd)| (*fd, name.clone()));
    sockets.chain(control).chain(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_successor_has_three_boot_timeouts_to_be_ready() {
        let start = Instant::now();
        let boot = Duration::from_secs(10);
        let mut upgrade = Upgrade::started(77, start);
        assert_eq!(upgrade.deadline(boot), Some(start + Duration::from_secs(30)));
        let mut ready = upgrade;
        assert!(!upgrade.check_late(start + Duration::from_secs(29), boot));
        assert!(upgrade.check_late(start + Duration::from_secs(30), boot));
        assert!(!upgrade.check_late(start + Duration::from_secs(31), boot), "killed once");
        assert_eq!(upgrade.deadline(boot), None, "no timer spins while its exit is on the way");
        ready.took_over = true;
        assert_eq!(ready.deadline(boot), None);
        assert!(!ready.check_late(start + Duration::from_secs(3600), boot));
    }

    #[test]
    fn the_successor_gets_every_slot_s_sockets_then_control_then_extras() {
        let fds = handover_fds(&[vec![10, 11], vec![12, 13]], Some(5), &[(FdName::Admin, 6)]);
        assert_eq!(
            fds,
            [
                (10, FdName::Slot(0)),
                (11, FdName::Slot(0)),
                (12, FdName::Slot(1)),
                (13, FdName::Slot(1)),
                (5, FdName::Control),
                (6, FdName::Admin)
            ]
        );
        assert!(handover_fds(&[], None, &[]).is_empty());
    }
}
