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
            WorkerMessage::Heartbeat(Counters { requests: 3, in_flight: 1, connections: 2, loop_lag_us: 5 }),
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
