//! The worker's running totals, reported to the supervisor in heartbeats.

use std::cell::Cell;

use drover_supervisor::protocol::Counters;

/// Plain cells: the worker is single-threaded, so no atomics are needed.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: Cell<u64>,
    pub in_flight: Cell<u64>,
    pub connections: Cell<u64>,
}

impl Stats {
    pub fn snapshot(&self) -> Counters {
        Counters {
            requests: self.requests.get(),
            in_flight: self.in_flight.get(),
            connections: self.connections.get(),
            loop_lag_us: 0,
        }
    }
}

/// Counts one request as in flight until dropped, so a request whose future
/// is cancelled (client gone) is still counted out.
pub(crate) struct InFlight<'a>(pub &'a Stats);

impl<'a> InFlight<'a> {
    pub fn enter(stats: &'a Stats) -> Self {
        stats.in_flight.set(stats.in_flight.get() + 1);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
        self.0.requests.set(self.0.requests.get() + 1);
    }
}
