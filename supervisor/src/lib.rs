//! drover's supervisor: owns the listening sockets, starts one worker process
//! per slot, restarts crashed and stalled workers, recycles them, rolls
//! restarts one slot at a time, scales without dropping connections, hands
//! itself over to a new binary, speaks systemd's protocols, answers the
//! control socket, aggregates the workers' counters, and drains everything
//! on shutdown.
//!
//! It knows nothing of HTTP or of the application: a worker is a program it
//! execs with inherited fds and talks to over a line protocol
//! (`drover_protocol::channel`), the one crate it shares with the worker.

pub mod activation;
pub mod control;
pub mod metrics;
mod notify;
mod relay;
mod report;
mod rollout;
mod scaling;
pub mod signal;
mod slots;
pub mod socket;
pub mod spawn;
pub mod steer;
mod supervisor;
mod upgrade;
mod watch;
mod workers;

pub use drover_protocol::ctl::Phase;
pub use signal::Signal;
pub use socket::SlotSockets;
pub use spawn::WorkerCommand;
pub use supervisor::{Options, Outcome, Supervisor};
