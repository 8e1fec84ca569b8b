//! One worker process as the supervisor sees it: its slot and generation,
//! where it is in its life, its last counters, and the rules read off them:
//! when it is stalled, when it is due for recycling, how it shows in
//! `drover ctl status` and in the metrics.

use std::time::Duration;

use drover_protocol::channel::Counters;
use drover_protocol::ctl::{WorkerRow, WorkerState};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::WorkerGauges;
use crate::slots::SlotId;
use crate::watch::Command;

pub struct WorkerHandle {
    pub slot: SlotId,
    pub generation: u64,
    pub pid: u32,
    pub state: WorkerState,
    pub started: Instant,
    /// When the supervisor gives up on this worker: boot timeout while
    /// booting, drain timeout while draining.
    pub deadline: Option<Instant>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub counters: Counters,
    /// The reason the worker gave in its last message before exiting.
    pub exit_reason: Option<String>,
    /// When its event loop last proved it is alive (ready or heartbeat).
    pub last_heartbeat: Instant,
    /// Served requests after which it is recycled (`u64::MAX`: never).
    pub recycle_after: u64,
    /// Already queued for recycling.
    pub recycling: bool,
}

/// How long a stalled worker is left alone after it was told to die: its
/// exit, not another kill, comes next.
const STALL_COUNTED: Duration = Duration::from_secs(3600);

impl WorkerHandle {
    /// A worker just started for `slot`, booting until `boot_deadline`.
    pub fn booting(
        slot: SlotId,
        generation: u64,
        pid: u32,
        commands: mpsc::UnboundedSender<Command>,
        now: Instant,
        boot_deadline: Instant,
        recycle_after: u64,
    ) -> Self {
        Self {
            slot,
            generation,
            pid,
            state: WorkerState::Booting,
            started: now,
            deadline: Some(boot_deadline),
            commands,
            counters: Counters::default(),
            exit_reason: None,
            last_heartbeat: now,
            recycle_after,
            recycling: false,
        }
    }

    /// When its silence makes it stalled; a booting worker has its boot
    /// deadline instead.
    pub fn stall_deadline(&self, stall_timeout: Duration) -> Option<Instant> {
        (self.state != WorkerState::Booting).then(|| self.last_heartbeat + stall_timeout)
    }

    /// How long it has been silent, if that makes it stalled at `now`.
    /// Counted once: a stalled worker is not stalled again until
    /// [`STALL_COUNTED`] has passed.
    pub fn check_stall(&mut self, now: Instant, stall_timeout: Duration) -> Option<Duration> {
        let silent = now.saturating_duration_since(self.last_heartbeat);
        if self.state == WorkerState::Booting || silent < stall_timeout {
            return None;
        }
        self.last_heartbeat = now + STALL_COUNTED;
        Some(silent)
    }

    /// Whether its event loop reported within `limit` of `now` (booting and
    /// draining workers count as fresh).
    pub fn fresh(&self, now: Instant, limit: Duration) -> bool {
        self.state != WorkerState::Ready || now.saturating_duration_since(self.last_heartbeat) < limit
    }

    /// Why it should be recycled now, if it should: `rss` is read only when
    /// `max_rss` is set.
    pub fn recycle_reason(&self, max_rss: u64, rss: impl FnOnce() -> Option<u64>) -> Option<&'static str> {
        if self.state != WorkerState::Ready || self.recycling {
            return None;
        }
        if self.counters.requests >= self.recycle_after {
            Some("max_requests")
        } else if max_rss > 0 && rss().is_some_and(|rss| rss > max_rss) {
            Some("max_rss")
        } else {
            None
        }
    }

    /// Its row in `drover ctl status`.
    pub fn row(&self, now: Instant, rss_bytes: Option<u64>) -> WorkerRow {
        WorkerRow {
            kind: self.slot.kind(),
            slot: self.slot.index(),
            pid: self.pid,
            generation: self.generation,
            state: self.state,
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            requests: self.counters.requests,
            in_flight: self.counters.in_flight,
            connections: self.counters.connections,
            failures: self.counters.failures,
            rss_bytes,
            loop_lag_us: self.counters.loop_lag_us,
            last_heartbeat_ms: now.saturating_duration_since(self.last_heartbeat).as_millis() as u64,
        }
    }

    /// Its gauges in the metrics.
    pub fn gauges(&self) -> WorkerGauges {
        WorkerGauges {
            pid: self.pid,
            state: self.state.as_str(),
            in_flight: self.counters.in_flight,
            connections: self.counters.connections,
            loop_lag_us: self.counters.loop_lag_us,
            app: self.counters.app_gauges.clone(),
            admission_limit: self.counters.admission.limit,
            admission_queued: self.counters.admission.queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(now: Instant) -> WorkerHandle {
        let (commands, _) = mpsc::unbounded_channel();
        WorkerHandle::booting(SlotId::Http(0), 1, 42, commands, now, now + Duration::from_secs(5), 100)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_ready_worker_is_stalled_once() {
        let start = Instant::now();
        let stall = Duration::from_secs(2);
        let mut w = worker(start);
        assert_eq!(w.stall_deadline(stall), None, "booting: the boot deadline applies");
        assert_eq!(w.check_stall(start + stall * 10, stall), None);
        w.state = WorkerState::Ready;
        assert_eq!(w.stall_deadline(stall), Some(start + stall));
        assert!(w.fresh(start + stall / 2 - Duration::from_millis(1), stall / 2));
        assert!(!w.fresh(start + stall / 2, stall / 2));
        assert_eq!(w.check_stall(start + stall - Duration::from_millis(1), stall), None);
        assert_eq!(w.check_stall(start + stall, stall), Some(stall));
        assert_eq!(w.check_stall(start + stall * 2, stall), None, "the kill is on its way");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_is_recycled_past_its_requests_or_its_memory_and_only_once() {
        let mut w = worker(Instant::now());
        w.counters.requests = 500;
        assert_eq!(w.recycle_reason(0, || None), None, "not while booting");
        w.state = WorkerState::Ready;
        assert_eq!(w.recycle_reason(0, || unreachable!("max_rss is off")), Some("max_requests"));
        w.counters.requests = 99;
        assert_eq!(w.recycle_reason(1000, || Some(1001)), Some("max_rss"));
        assert_eq!(w.recycle_reason(1000, || Some(1000)), None);
        assert_eq!(w.recycle_reason(1000, || None), None, "no reading, no recycle");
        w.recycling = true;
        w.counters.requests = 500;
        assert_eq!(w.recycle_reason(0, || None), None, "already queued");
    }

    #[tokio::test(start_paused = true)]
    async fn its_status_row_reports_its_counters_and_ages() {
        let start = Instant::now();
        let mut w = worker(start);
        w.state = WorkerState::Ready;
        w.counters.requests = 7;
        w.last_heartbeat = start + Duration::from_millis(1500);
        let row = w.row(start + Duration::from_secs(2), Some(4096));
        assert_eq!((row.pid, row.requests, row.rss_bytes, row.last_heartbeat_ms), (42, 7, Some(4096), 500));
        assert_eq!(row.uptime_s, 2.0);
        assert_eq!(w.gauges().state, "ready");
    }
}
