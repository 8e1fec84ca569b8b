//! The runtime of one drover worker process: a tokio current-thread runtime
//! serving HTTP/1.1 and cleartext HTTP/2 with hyper on the sockets the
//! supervisor passed down, reporting to the supervisor over the control
//! channel, and draining on request.
//!
//! It knows nothing of the domain: the application plugs in as an [`App`],
//! which turns a request into a response. A worker that serves no socket
//! (a job process) runs a [`Background`] loop instead, with the same
//! control channel, heartbeats and drain ([`run_background`]).

mod admission;
pub mod affinity;
mod background;
pub mod blocking;
mod body;
mod conn;
mod control;
pub mod error;
pub mod fds;
pub mod idle;
mod idle_cgroup;
mod limits;
pub mod peer;
pub mod request_id;
mod response_body;
mod server;
mod shared;
mod stats;
mod wire;

pub use admission::AdmissionConfig;
pub use background::{run_background, Background, BackgroundOptions};
pub use blocking::BlockingPool;
pub use body::{BodyError, RequestBody};
pub use control::Broadcast;
pub use drover_protocol::channel::{Counters, QueueCounters, LATENCY_BUCKETS};
pub use error::{json_error, json_error_body, ErrorDetail};
pub use idle_cgroup::use_idle_cgroup;
pub use limits::Limits;
pub use server::{run, RunError, ServeOptions, WorkerContext, WorkerInfo};

use std::future::Future;

pub use response_body::{Body, BodyStream, BoxError};

/// The incoming request, as hyper hands it over, with a body that times out
/// when the client stalls it ([`RequestBody`]).
pub type Request = http::Request<RequestBody>;

/// The response an [`App`] returns.
pub type Response = http::Response<Body>;

/// The application a worker serves.
///
/// A worker runs on one thread, so neither the app nor its futures need to
/// be `Send`; share state with `Rc`.
pub trait App: 'static {
    /// `Unpin` so the worker can poll it in place, without another box;
    /// box a future that is not (`Box::pin`).
    type Future: Future<Output = Response> + Unpin + 'static;

    /// Answers one request. Limits on headers and bodies were checked before.
    /// Also returns the route the request matched (its pattern, such as
    /// `/v1/users/{id}`), which labels the worker's metrics.
    fn call(&self, request: Request) -> (&'static str, Self::Future);

    /// The body limit of a request whose route takes bodies larger than
    /// `http.max_body_bytes` (an upload streamed to storage), checked
    /// against its declared `Content-Length` before the request is
    /// admitted; `None`: the worker's limit. Called for every request:
    /// keep it to a comparison. The route enforces it on streamed bodies.
    fn body_limit(&self, _method: &http::Method, _path: &str) -> Option<u64> {
        None
    }

    /// The application's own counters, reported with every heartbeat.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// The application's own gauges, reported with every heartbeat.
    fn gauges(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}
