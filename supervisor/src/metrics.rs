//! Counters aggregated across workers, for the admin listener's `/metrics`.
//!
//! Per-process counters behind a shared port go backwards whenever a worker
//! is replaced; here each slot's totals are its retired workers' last counts
//! plus its live workers' current ones, and slots removed by a scale-down
//! fold into `removed`, so totals only ever grow.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use drover_protocol::channel::{AdmissionCounters, Counters, QueueCounters, RouteCounters};

/// Counters summed over workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub routes: BTreeMap<String, RouteCounters>,
    pub app: BTreeMap<String, u64>,
    /// Workers of this slot that exited without being asked to.
    pub restarts: u64,
    /// Admission control's totals (its gauges are in [`WorkerGauges`]).
    pub admission: AdmissionCounters,
    /// Job processes' counters, per queue.
    pub queues: BTreeMap<String, QueueCounters>,
}

impl Totals {
    pub(crate) fn add_counters(&mut self, counters: &Counters) {
        self.requests += counters.requests;
        for route in &counters.routes {
            self.routes
                .entry(route.route.clone())
                .or_insert_with(|| RouteCounters { route: route.route.clone(), ..RouteCounters::default() })
                .add(route);
        }
        for (name, value) in &counters.app {
            *self.app.entry(name.clone()).or_default() += value;
        }
        self.admission.add_totals(&counters.admission);
        for queue in &counters.queues {
            self.add_queue(&queue.queue, queue);
        }
    }

    fn add_queue(&mut self, name: &str, queue: &QueueCounters) {
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| QueueCounters { queue: name.to_owned(), ..QueueCounters::default() })
            .add(queue);
    }

    pub(crate) fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        for (name, route) in &other.routes {
            self.routes
                .entry(name.clone())
                .or_insert_with(|| RouteCounters { route: name.clone(), ..RouteCounters::default() })
                .add(route);
        }
        for (name, value) in &other.app {
            *self.app.entry(name.clone()).or_default() += value;
        }
        self.restarts += other.restarts;
        self.admission.add_totals(&other.admission);
        for (name, queue) in &other.queues {
            self.add_queue(name, queue);
        }
    }
}

/// A live worker's gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerGauges {
    pub pid: u32,
    pub state: &'static str,
    pub in_flight: u64,
    pub connections: u64,
    pub loop_lag_us: u64,
    /// The application's gauges as of the last heartbeat.
    pub app: Vec<(String, f64)>,
    /// Admission control's limit, and requests waiting for a place.
    pub admission_limit: f64,
    pub admission_queued: u64,
}

/// One slot: its totals so far and its live workers.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotMetrics {
    /// Its number among the slots of its kind.
    pub slot: usize,
    pub totals: Totals,
    pub workers: Vec<WorkerGauges>,
}

/// Everything `/metrics` shows, as of one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub generation: u64,
    /// The HTTP slots.
    pub slots: Vec<SlotMetrics>,
    /// The job process slots.
    pub jobs: Vec<SlotMetrics>,
    /// Totals of slots removed by scaling down.
    pub removed: Totals,
}

/// Asks the supervisor's loop for a [`Snapshot`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MetricsClient {
    pub(crate) requests: mpsc::UnboundedSender<oneshot::Sender<Snapshot>>,
}

impl MetricsClient {
    /// `None` once the supervisor has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(reply).ok()?;
        answer.await.ok()
    }
}
