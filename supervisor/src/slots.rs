//! A worker slot: one set of listening sockets and the worker serving
//! them, with the restart policy of a slot whose worker crashed
//! (exponential backoff, reset after a long enough life, crash-loop
//! detection).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use drover_protocol::ctl::WorkerKind;

use crate::watch::WorkerId;

/// Which slot a worker serves. HTTP slots (each with its sockets) and job
/// slots (no socket) are numbered apart: scaling moves only the former.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotId {
    Http(usize),
    Jobs(usize),
}

impl SlotId {
    pub fn kind(self) -> WorkerKind {
        match self {
            SlotId::Http(_) => WorkerKind::Http,
            SlotId::Jobs(_) => WorkerKind::Jobs,
        }
    }

    /// Its number among the slots of its kind.
    pub fn index(self) -> usize {
        match self {
            SlotId::Http(index) | SlotId::Jobs(index) => index,
        }
    }

    /// An HTTP slot's number.
    pub fn http(self) -> Option<usize> {
        match self {
            SlotId::Http(index) => Some(index),
            SlotId::Jobs(_) => None,
        }
    }
}

/// As logs and metrics label it: `3` for an HTTP slot, `jobs-0` for a job
/// slot.
impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotId::Http(index) => write!(f, "{index}"),
            SlotId::Jobs(index) => write!(f, "jobs-{index}"),
        }
    }
}

/// A crash loop is this many crashes of one slot within [`CRASH_LOOP_WINDOW`].
pub const CRASH_LOOP_COUNT: usize = 5;
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// How long a crashed slot waits before it is restarted.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay; doubles per crash.
    pub min: Duration,
    /// The cap on that delay. A worker that lived longer than this resets it.
    pub max: Duration,
}

pub struct Slot {
    /// The worker serving this slot, if any.
    pub current: Option<WorkerId>,
    /// When a crashed slot is restarted.
    pub respawn_at: Option<Instant>,
    /// Being removed by a scale-down: its worker is retiring and it is
    /// never restarted.
    pub retiring: bool,
    /// The delay before the next restart.
    backoff: Duration,
    recent_crashes: VecDeque<Instant>,
}

/// What a crash means for its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// Restart the slot after this long.
    pub delay: Duration,
    /// Crashes within the last [`CRASH_LOOP_WINDOW`], this one included.
    pub recent: usize,
}

impl Crash {
    /// The slot is crash-looping: worth an error in the log.
    pub fn looping(&self) -> bool {
        self.recent >= CRASH_LOOP_COUNT
    }
}

impl Slot {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            current: None,
            respawn_at: None,
            retiring: false,
            backoff: backoff.min,
            recent_crashes: VecDeque::new(),
        }
    }

    /// Its worker crashed at `now` after living `uptime`.
    pub fn crashed(&mut self, uptime: Duration, now: Instant, policy: Backoff) -> Crash {
        if uptime > policy.max {
            self.backoff = policy.min;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(policy.max);
        self.recent_crashes.push_back(now);
        while self.recent_crashes.front().is_some_and(|&t| now.duration_since(t) > CRASH_LOOP_WINDOW) {
            self.recent_crashes.pop_front();
        }
        Crash { delay, recent: self.recent_crashes.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(2) };

    #[tokio::test(start_paused = true)]
    async fn the_delay_doubles_per_crash_up_to_the_cap() {
        let mut slot = Slot::new(POLICY);
        let delays: Vec<u64> = (0..7)
            .map(|_| slot.crashed(Duration::from_millis(10), Instant::now(), POLICY).delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_lived_past_the_cap_resets_the_delay() {
        let mut slot = Slot::new(POLICY);
        for _ in 0..4 {
            slot.crashed(Duration::from_millis(10), Instant::now(), POLICY);
        }
        let crash = slot.crashed(POLICY.max + Duration::from_millis(1), Instant::now(), POLICY);
        assert_eq!(crash.delay, POLICY.min);
    }

    #[tokio::test(start_paused = true)]
    async fn five_crashes_within_a_minute_are_a_crash_loop_and_old_ones_age_out() {
        let mut slot = Slot::new(POLICY);
        let start = Instant::now();
        let tick = Duration::from_secs(10);
        let crashes: Vec<Crash> =
            (0..5).map(|i| slot.crashed(Duration::ZERO, start + tick * i, POLICY)).collect();
        assert!(crashes[..4].iter().all(|c| !c.looping()));
        assert!(crashes[4].looping());
        // 61 s after the first, 21 s after the last: only one recent crash.
        let later = slot.crashed(
            Duration::ZERO,
            start + tick * 4 + CRASH_LOOP_WINDOW + Duration::from_secs(1),
            POLICY,
        );
        assert_eq!(later.recent, 1);
    }
}
