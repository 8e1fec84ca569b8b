//! What every connection of a worker shares: the application, hyper's
//! connection settings, the limits, the admission controller, counters and
//! the drain signal. The accept loop (`server.rs`) creates it; each
//! connection (`conn.rs`) reads it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use tokio::sync::{watch, Notify};

use crate::admission::{Admission, AdmissionConfig};
use crate::body::BodyPolicy;
use crate::limits::Limits;
use crate::request_id::RequestIds;
use crate::stats::Stats;

/// While the worker drains, a connection that has been idle, or has sent
/// nothing of the request it started, for this long is closed (a stalled
/// head gets 408) rather than waited for until the drain timeout. Long
/// enough for a request already on the wire to arrive and be answered.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// An HTTP/2 connection is pinged after this long without a frame from the
/// client, and closed if the ping is not answered within
/// [`H2_PING_TIMEOUT`]: a peer that vanished or stopped answering must not
/// keep its streams, or the worker's drain, waiting.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every connection of this worker.
pub(crate) struct Shared<A> {
    pub app: A,
    pub limits: Limits,
    pub admission: Rc<Admission>,
    pub stats: Stats,
    pub request_ids: RequestIds,
    /// One request in this many is written to the access log; 0: none.
    pub access_log_every: u64,
    /// Requests seen since the last one logged.
    pub access_log_count: Cell<u64>,
    pub builders: Builders,
    /// True once draining: responses to HTTP/1.1 requests say
    /// `Connection: close`.
    pub draining: Cell<bool>,
    /// Flips to true when draining starts; connections and accept loops
    /// watch it.
    pub drain: watch::Receiver<bool>,
    /// How long request bodies may pause; shared by every request.
    pub body_policy: Rc<BodyPolicy>,
    /// Notified when the last connection closes.
    pub all_closed: Notify,
    /// When a connection was last accepted (a retiring worker sweeps its
    /// queue until this is old enough).
    pub last_accept: Cell<std::time::Instant>,
    /// Open connections per client address, kept only while
    /// `http.max_connections_per_ip` is set.
    per_ip: RefCell<HashMap<IpAddr, u32>>,
}

impl<A> Shared<A> {
    pub(crate) fn new(
        app: A,
        limits: &Limits,
        admission: AdmissionConfig,
        access_log_every: u64,
        drain: watch::Receiver<bool>,
    ) -> Self {
        Shared {
            app,
            builders: Builders::new(limits),
            limits: limits.clone(),
            admission: Admission::new(admission),
            stats: Stats::default(),
            request_ids: RequestIds::new(),
            access_log_every,
            access_log_count: Cell::new(0),
            draining: Cell::new(false),
            body_policy: Rc::new(BodyPolicy {
                gap: limits.body_read_timeout,
                drain_gap: DRAIN_GRACE,
                drain: drain.clone(),
            }),
            drain,
            all_closed: Notify::new(),
            last_accept: Cell::new(std::time::Instant::now()),
            per_ip: RefCell::new(HashMap::new()),
        }
    }

    /// Whether this request is one the access log records.
    pub(crate) fn sample_access(&self) -> bool {
        if self.access_log_every == 0 {
            return false;
        }
        let seen = self.access_log_count.get() + 1;
        let sampled = seen >= self.access_log_every;
        self.access_log_count.set(if sampled { 0 } else { seen });
        sampled
    }

    /// Counts a new connection from `ip` against the per-address cap;
    /// false (and not counted) when the address already has its share.
    pub(crate) fn admit_ip(&self, ip: IpAddr) -> bool {
        let cap = self.limits.max_connections_per_ip;
        if cap == 0 {
            return true;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        let open = per_ip.entry(ip).or_insert(0);
        if *open as usize >= cap {
            return false;
        }
        *open += 1;
        true
    }

    pub(crate) fn ip_closed(&self, ip: IpAddr) {
        if self.limits.max_connections_per_ip == 0 {
            return;
        }
        let mut per_ip = self.per_ip.borrow_mut();
        if let Some(open) = per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    pub(crate) fn connection_closed(&self) {
        let left = self.stats.connections.get() - 1;
        self.stats.connections.set(left);
        if left == 0 {
            self.all_closed.notify_one();
        }
    }
}

/// Runs HTTP/2 connection tasks on the worker's own thread, so services need
/// not be `Send`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// hyper's connection settings, one per protocol. The connection picks one
/// from the client's first bytes (see `conn.rs`).
pub(crate) struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<LocalExec>,
}

impl Builders {
    pub(crate) fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .keep_alive(!limits.keep_alive_timeout.is_zero())
            // Our own timer answers slow heads with 408 (hyper would just close).
            .header_read_timeout(None)
            // A client may shut down its write side after its last request
            // (HTTP/1.1 allows it): answer what it sent before closing.
            .half_close(true)
            .max_buf_size(limits.hyper_max_buf_size())
            .max_headers(limits.hyper_max_headers())
            // Not hyper's pipeline_flush: it keeps responses in a buffer that is
            // lost when a later request in the same read is malformed. The
            // connection's wire gathers pipelined responses into one write
            // instead (see wire.rs).
            .pipeline_flush(false);
        let mut http2 = http2::Builder::new(LocalExec);
        http2
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.hyper_max_buf_size()).unwrap_or(u32::MAX));
        Self { http1, http2 }
    }
}
