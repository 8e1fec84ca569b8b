//! The control channel between the supervisor and a worker: one JSON object per
//! line over the socketpair the worker inherits.
//!
//! JSON lines rather than a binary framing because the traffic is a few
//! messages a second per worker and an operator can read it with `strace`.

use serde::{Deserialize, Serialize};

/// What a worker tells its supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// The worker has its runtime up and is accepting on its sockets.
    Ready { pid: u32 },
    /// Sent every heartbeat interval from the worker's event loop, so a
    /// heartbeat that stops arriving means the loop itself is stuck.
    Heartbeat(Counters),
    /// The worker is about to exit; `reason` is a short human sentence.
    Exiting { reason: String },
    /// Relay `message` on `channel` to every other worker. The supervisor
    /// answers [`SupervisorMessage::Published`] with the same `seq` once
    /// every recipient has acknowledged it (or died, or a timeout passed).
    /// The application uses it for cache invalidation, where the writer must
    /// not answer its client before the other workers dropped their copy.
    Publish { seq: u64, channel: String, message: String },
    /// This worker has handled a [`SupervisorMessage::Deliver`].
    Delivered { origin: u64, seq: u64 },
    /// Apply these host-wide limits ([`crate::limits`]); answered with
    /// [`SupervisorMessage::Limited`] and the same `seq`.
    Limit { seq: u64, checks: Vec<crate::limits::LimitCheck> },
}

/// What the supervisor tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// Stop accepting, finish in-flight requests, close keep-alive
    /// connections gracefully, then exit.
    Drain,
    /// This worker's slot is being removed: no new connections will reach
    /// its sockets. Accept what is already queued on them, then drain.
    Retire,
    /// Another worker published this; acknowledge with
    /// [`WorkerMessage::Delivered`] once it is handled.
    Deliver { origin: u64, seq: u64, channel: String, message: String },
    /// Every other worker has handled the publish with this `seq`.
    Published { seq: u64 },
    /// The verdicts of a [`WorkerMessage::Limit`], one per check.
    Limited { seq: u64, verdicts: Vec<crate::limits::Verdict> },
}

/// A worker's running totals, as of its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests answered since the worker started.
    pub requests: u64,
    /// Requests being processed right now.
    pub in_flight: u64,
    /// Open client connections.
    pub connections: u64,
    /// How late the event loop ran this heartbeat, in microseconds: the
    /// time it took to get back to a timer that was due.
    #[serde(default)]
    pub loop_lag_us: u64,
    /// Per route, since the worker started.
    #[serde(default)]
    pub routes: Vec<RouteCounters>,
    /// The application's own counters (cache hits, ...), by name.
    #[serde(default)]
    pub app: Vec<(String, u64)>,
    /// The application's own gauges (pool connections, cache entries, ...).
    #[serde(default)]
    pub app_gauges: Vec<(String, f64)>,
    /// The worker's admission controller.
    #[serde(default)]
    pub admission: AdmissionCounters,
    /// Work that failed: a job process's messages retried or dead.
    #[serde(default)]
    pub failures: u64,
    /// A job process's counters, per queue.
    #[serde(default)]
    pub queues: Vec<QueueCounters>,
}

/// One queue's counters in a job process, since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueCounters {
    pub queue: String,
    /// Messages taken from the queue (each delivery counts).
    pub received: u64,
    /// Handled (or found handled before: a redelivery).
    pub succeeded: u64,
    /// Failed and put back for a later attempt.
    pub retried: u64,
    /// Failed for good: moved to the dead messages.
    pub dead: u64,
    /// Handling time per [`LATENCY_BUCKETS`] bucket (not cumulative).
    pub buckets: Vec<u64>,
    /// Sum of handling times, in microseconds.
    pub sum_us: u64,
}

impl QueueCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &QueueCounters) {
        self.received += other.received;
        self.succeeded += other.succeeded;
        self.retried += other.retried;
        self.dead += other.dead;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// Messages whose handling finished, one way or another.
    pub fn settled(&self) -> u64 {
        self.succeeded + self.retried + self.dead
    }
}

/// A worker's admission controller: its gauges now, its totals since it
/// started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdmissionCounters {
    /// The current concurrency limit; 0 when admission control is off.
    pub limit: f64,
    /// Requests admitted and not yet answered.
    pub in_flight: u64,
    /// Requests waiting for a place.
    pub queued: u64,
    /// Requests admitted, at once or after waiting.
    pub admitted: u64,
    /// Requests refused `overloaded`.
    pub shed: u64,
    /// Admitted requests per [`WAIT_BUCKETS`] bucket of time waited (not
    /// cumulative).
    pub wait_buckets: Vec<u64>,
    /// Sum of times waited, in microseconds.
    pub wait_sum_us: u64,
}

impl AdmissionCounters {
    /// Adds `other`'s totals (not its gauges) to these.
    pub fn add_totals(&mut self, other: &AdmissionCounters) {
        self.admitted += other.admitted;
        self.shed += other.shed;
        if self.wait_buckets.len() < other.wait_buckets.len() {
            self.wait_buckets.resize(other.wait_buckets.len(), 0);
        }
        for (a, b) in self.wait_buckets.iter_mut().zip(&other.wait_buckets) {
            *a += b;
        }
        self.wait_sum_us += other.wait_sum_us;
    }
}

/// Upper bounds, in seconds, of the admission queue-wait histogram's
/// buckets (the last, +Inf, bucket is the admitted count). Most requests
/// wait nothing; the interesting part is a few milliseconds up to
/// `admission.max_wait`.
pub const WAIT_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Upper bounds, in seconds, of the request latency histogram's buckets
/// (the last, +Inf, bucket is the request count).
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// One route's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteCounters {
    /// The route's pattern, such as `/v1/users/{id}`.
    pub route: String,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    /// Requests per latency bucket (not cumulative), one per
    /// [`LATENCY_BUCKETS`] entry.
    pub buckets: Vec<u64>,
    /// Sum of latencies, in microseconds.
    pub sum_us: u64,
}

impl RouteCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RouteCounters) {
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    pub fn count(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

/// Encodes a message as one line, newline included.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain enums cannot fail: no maps with non-string keys,
    // no custom Serialize impls.
    let mut line = serde_json::to_vec(message).expect("protocol messages always serialise");
    line.push(b'\n');
    line
}

/// Decodes one line (without its newline).
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let messages = [
            WorkerMessage::Ready { pid: 7 },
            WorkerMessage::Heartbeat(Counters {
                requests: 3,
                in_flight: 1,
                connections: 2,
                loop_lag_us: 5,
                ..Counters::default()
            }),
            WorkerMessage::Exiting { reason: "drained".into() },
        ];
        for message in messages {
            let line = encode(&message);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let back: WorkerMessage = decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(back, message);
        }
        let drain = encode(&SupervisorMessage::Drain);
        assert_eq!(drain, b"{\"type\":\"drain\"}\n");
    }
}
