//! The worker's running totals, reported to the supervisor in heartbeats.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use drover_protocol::channel::{Counters, RouteCounters, LATENCY_BUCKETS};

/// Plain cells: the worker is single-threaded, so no atomics are needed.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: Cell<u64>,
    pub in_flight: Cell<u64>,
    pub connections: Cell<u64>,
    routes: RefCell<BTreeMap<&'static str, RouteCounters>>,
}

impl Stats {
    pub fn snapshot(&self) -> Counters {
        Counters {
            requests: self.requests.get(),
            in_flight: self.in_flight.get(),
            connections: self.connections.get(),
            loop_lag_us: 0,
            routes: self.routes.borrow().values().cloned().collect(),
            app: Vec::new(),
            app_gauges: Vec::new(),
            ..Counters::default()
        }
    }

    /// Counts one answered request of `route`.
    pub fn record(&self, route: &'static str, status: u16, latency: Duration) {
        let mut routes = self.routes.borrow_mut();
        let counters = routes.entry(route).or_insert_with(|| RouteCounters {
            route: route.to_owned(),
            buckets: vec![0; LATENCY_BUCKETS.len()],
            ..RouteCounters::default()
        });
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        counters.by_class[class] += 1;
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            counters.buckets[bucket] += 1;
        }
        counters.sum_us += latency.as_micros() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_per_route() {
        let stats = Stats::default();
        stats.record("/a", 200, Duration::from_micros(100));
        stats.record("/b", 404, Duration::from_micros(100));
        stats.record("/a", 503, Duration::from_millis(20));
        // The same route from another literal is one route.
        let a_again: &'static str = String::from("/a").leak();
        stats.record(a_again, 201, Duration::ZERO);
        let snapshot = stats.snapshot();
        let routes: Vec<(&str, [u64; 5])> =
            snapshot.routes.iter().map(|r| (r.route.as_str(), r.by_class)).collect();
        assert_eq!(routes, [("/a", [0, 2, 0, 0, 1]), ("/b", [0, 0, 0, 1, 0])]);
        assert_eq!(snapshot.routes[0].sum_us, 100 + 20_000);
    }
}
