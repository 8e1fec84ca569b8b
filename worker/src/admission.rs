//! Admission control: how many requests a worker works on at once, and what
//! happens to the rest.
//!
//! Past saturation a server that accepts everything only grows its queue:
//! every request waits longer, clients time out, and the work done for them
//! is thrown away, so goodput (answers that arrive in time) collapses. Here
//! each worker admits at most `limit` requests at once; a request over the
//! limit waits in a short bounded queue (at most [`AdmissionConfig::queue`]
//! requests, for at most [`AdmissionConfig::max_wait`]), and past either
//! bound is answered 503 `overloaded` with `Retry-After` at once, before the
//! application or the database sees it.
//!
//! When the queue is full, a newcomer does not wait behind requests that
//! have waited longest: the oldest waiter is refused to make room (a head
//! drop, as CoDel and other active queue managers do), and for the next
//! [`WINDOW`] the newest waiters are served first (adaptive LIFO, as in
//! Facebook's "Fail at Scale"). Under open-loop overload the queue then
//! holds only the freshest requests, the excess is refused within
//! milliseconds (so clients that would time out learn it at once and free
//! their connections), and what is admitted has barely waited. A queue that
//! refused only newcomers, or only at `max_wait`, would instead answer
//! every admitted request after a full queue's wait, too late to matter.
//!
//! The limit adapts, as Netflix's concurrency-limits "Gradient2" does: the
//! time admitted requests take is averaged over short windows and compared
//! with its long-run average. While they agree the limit grows by a few
//! requests a window; when requests start taking longer than usual (work
//! queueing inside the worker: the event loop, the connection pool) the
//! limit shrinks in proportion, never by more than half a window. A worker
//! that is not using its limit does not grow it.
//!
//! Under closed-loop load (wrk, oha: N connections, each sending its next
//! request when the last is answered) at most N requests exist, so with
//! N ≤ limit + queue nothing is ever refused; only open-loop load, where
//! requests keep arriving whatever the latency, fills the queue.
//!
//! The worker is single-threaded: plain cells, no atomics or locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use drover_protocol::channel::{AdmissionCounters, WAIT_BUCKETS};
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::Response;

/// `[admission]`: the settings of a worker's admission controller.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Off: every request is admitted at once, as before admission control.
    pub enabled: bool,
    /// The concurrency limit a worker starts with.
    pub initial_limit: u32,
    /// The limit never goes below this...
    pub min_limit: u32,
    /// ...nor above this.
    pub max_limit: u32,
    /// Requests over the limit that may wait for a place. When it is full,
    /// the oldest waiter is refused to make room for a newcomer.
    pub queue: usize,
    /// How long a request may wait for a place, counted from when its head
    /// was read; past it, it is refused.
    pub max_wait: Duration,
    /// Waiting reads (GET, HEAD, OPTIONS) get a place before waiting writes.
    pub prefer_reads: bool,
    /// Paths (exact, or a prefix ending in `/`) that are never limited nor
    /// refused: health checks must answer however loaded the worker is.
    pub exempt: Vec<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_limit: 64,
            min_limit: 8,
            max_limit: 1024,
            queue: 256,
            max_wait: Duration::from_secs(1),
            prefer_reads: true,
            exempt: vec!["/healthz".to_owned(), "/readyz".to_owned()],
        }
    }
}

/// How much longer than usual requests may take before the limit shrinks
/// (Gradient2's default): a 50% rise in latency is noise, not queueing.
const TOLERANCE: f64 = 1.5;
/// The weight of each window's new estimate: the limit moves a fifth of the
/// way there per window, so one odd window does not swing it.
const SMOOTHING: f64 = 0.2;
/// The long-run latency averages over about this many windows.
const LONG_WINDOWS: f64 = 100.0;
/// A window closes after this long and at least [`WINDOW_SAMPLES`]
/// requests: short enough to react within a second, long enough for an
/// average that means something.
const WINDOW: Duration = Duration::from_millis(100);
const WINDOW_SAMPLES: u32 = 16;

/// The adaptive limit: pure arithmetic on latency samples, no clock reads.
#[derive(Debug, Clone)]
pub(crate) struct Gradient {
    limit: f64,
    min: f64,
    max: f64,
    /// The long-run average of window latencies, in seconds; `None` until
    /// the first window closes.
    long: Option<f64>,
    window_start: Option<Instant>,
    window_sum: f64,
    window_count: u32,
    /// The most requests in flight seen in this window.
    window_peak: u32,
}

impl Gradient {
    pub(crate) fn new(config: &AdmissionConfig) -> Self {
        let min = f64::from(config.min_limit.max(1));
        let max = f64::from(config.max_limit).max(min);
        Self {
            limit: f64::from(config.initial_limit).clamp(min, max),
            min,
            max,
            long: None,
            window_start: None,
            window_sum: 0.0,
            window_count: 0,
            window_peak: 0,
        }
    }

    pub(crate) fn limit(&self) -> f64 {
        self.limit
    }

    /// One admitted request took `took`, with `in_flight` admitted at the
    /// time. Closes the window when due and returns the new limit.
    pub(crate) fn on_sample(&mut self, took: Duration, in_flight: u32, now: Instant) -> f64 {
        let start = *self.window_start.get_or_insert(now);
        self.window_sum += took.as_secs_f64();
        self.window_count += 1;
        self.window_peak = self.window_peak.max(in_flight);
        if now.saturating_duration_since(start) >= WINDOW && self.window_count >= WINDOW_SAMPLES {
            let short = (self.window_sum / f64::from(self.window_count)).max(1e-6);
            let peak = self.window_peak;
            self.window_start = Some(now);
            self.window_sum = 0.0;
            self.window_count = 0;
            self.window_peak = 0;
            self.on_window(short, peak);
        }
        self.limit
    }

    /// A window's average latency `short` (seconds) with at most `peak`
    /// requests in flight.
    fn on_window(&mut self, short: f64, peak: u32) {
        let long = match self.long {
            None => short,
            Some(long) => long + (short - long) / LONG_WINDOWS,
        };
        // Latency back to normal after a long overload: the long average
        // still remembers the overload and would let the limit grow too
        // far; bring it down faster than the average alone would.
        self.long = Some(if long > 2.0 * short { long * 0.95 } else { long });
        // A worker using less than half its limit learns nothing about
        // what more would cost: keep the limit.
        if f64::from(peak) < self.limit / 2.0 {
            return;
        }
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        // The allowance for queueing: a little headroom that grows slowly
        // with the limit, so a limit stuck at its floor can climb again.
        let headroom = self.limit.sqrt().max(4.0);
        let target = self.limit * gradient + headroom;
        self.limit = (self.limit * (1.0 - SMOOTHING) + target * SMOOTHING).clamp(self.min, self.max);
    }
}

/// What [`Admission::arrive`] decided.
pub(crate) enum Decision {
    /// Not subject to admission control (off, or an exempt path).
    Exempt,
    Admitted(Permit),
    /// Over the limit: wait for a place, until the deadline.
    Queued(Ticket),
    /// Over the limit and no room to wait (or waited too long already):
    /// refuse.
    Shed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitState {
    Waiting,
    /// A place was handed over: the ticket holds a permit.
    Granted(Instant),
    /// Refused to make room for a newer request: the ticket's request is
    /// answered 503.
    Dropped,
    /// Given up (deadline, or the client went away), or taken.
    Cancelled,
}

struct Waiter {
    state: Cell<WaitState>,
    waker: RefCell<Option<Waker>>,
    /// When the request's head was read, for the wait histogram.
    arrived: Instant,
}

/// One worker's admission controller.
pub(crate) struct Admission {
    config: AdmissionConfig,
    gradient: RefCell<Gradient>,
    /// The limit as a whole number of requests, read on every arrival.
    limit: Cell<u32>,
    in_flight: Cell<u32>,
    /// Waiting requests; entries given up are skipped and dropped lazily.
    reads: RefCell<VecDeque<Rc<Waiter>>>,
    writes: RefCell<VecDeque<Rc<Waiter>>>,
    /// Live (not given up) waiters in both queues.
    queued: Cell<usize>,
    admitted: Cell<u64>,
    shed: Cell<u64>,
    wait_buckets: RefCell<Vec<u64>>,
    wait_sum_us: Cell<u64>,
    /// When a full queue last refused its oldest waiter: for a [`WINDOW`]
    /// after, the newest waiters are served first.
    overflowed: Cell<Option<Instant>>,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Rc<Self> {
        let gradient = Gradient::new(&config);
        let limit = gradient.limit() as u32;
        Rc::new(Self {
            config,
            gradient: RefCell::new(gradient),
            limit: Cell::new(limit),
            in_flight: Cell::new(0),
            reads: RefCell::new(VecDeque::new()),
            writes: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            admitted: Cell::new(0),
            shed: Cell::new(0),
            wait_buckets: RefCell::new(vec![0; WAIT_BUCKETS.len()]),
            wait_sum_us: Cell::new(0),
            overflowed: Cell::new(None),
        })
    }

    pub(crate) fn max_wait(&self) -> Duration {
        self.config.max_wait
    }

    /// A request for `path` whose head was read at `arrived` asks for a
    /// place. `read`: a GET, HEAD or OPTIONS.
    pub(crate) fn arrive(
        self: &Rc<Self>,
        path: &str,
        read: bool,
        arrived: Instant,
        now: Instant,
    ) -> Decision {
        if !self.config.enabled || self.is_exempt(path) {
            return Decision::Exempt;
        }
        if self.in_flight.get() < self.limit.get() && self.queued.get() == 0 {
            self.record_wait(now.saturating_duration_since(arrived));
            return Decision::Admitted(self.permit(now));
        }
        if now.saturating_duration_since(arrived) >= self.config.max_wait {
            self.shed.set(self.shed.get() + 1);
            return Decision::Shed;
        }
        let read = read && self.config.prefer_reads;
        if self.queued.get() >= self.config.queue {
            // Full: the oldest waiter of the lowest priority makes room. A
            // write that would be served after every waiting read is itself
            // the one to refuse.
            let dropped = self.drop_oldest(&self.writes) || (read && self.drop_oldest(&self.reads));
            if !dropped {
                self.shed.set(self.shed.get() + 1);
                return Decision::Shed;
            }
            self.overflowed.set(Some(now));
        }
        let waiter =
            Rc::new(Waiter { state: Cell::new(WaitState::Waiting), waker: RefCell::new(None), arrived });
        let queue = if read { &self.reads } else { &self.writes };
        queue.borrow_mut().push_back(waiter.clone());
        self.queued.set(self.queued.get() + 1);
        Decision::Queued(Ticket { admission: self.clone(), waiter })
    }

    /// Refuses the oldest live waiter of `queue`, if there is one: it is
    /// woken to answer 503.
    fn drop_oldest(&self, queue: &RefCell<VecDeque<Rc<Waiter>>>) -> bool {
        let mut queue = queue.borrow_mut();
        while let Some(waiter) = queue.pop_front() {
            if waiter.state.get() != WaitState::Waiting {
                continue;
            }
            waiter.state.set(WaitState::Dropped);
            self.queued.set(self.queued.get() - 1);
            self.shed.set(self.shed.get() + 1);
            let waker = waiter.waker.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
            }
            return true;
        }
        false
    }

    fn is_exempt(&self, path: &str) -> bool {
        self.config
            .exempt
            .iter()
            .any(|exempt| path == exempt || (exempt.ends_with('/') && path.starts_with(exempt.as_str())))
    }

    fn permit(self: &Rc<Self>, now: Instant) -> Permit {
        self.in_flight.set(self.in_flight.get() + 1);
        self.admitted.set(self.admitted.get() + 1);
        Permit { admission: Some(self.clone()), admitted: now }
    }

    fn record_wait(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        if let Some(bucket) = WAIT_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.wait_buckets.borrow_mut()[bucket] += 1;
        }
        self.wait_sum_us.set(self.wait_sum_us.get() + waited.as_micros() as u64);
    }

    /// A permit is given back; `took` is how long its request took, when it
    /// was answered (not abandoned).
    fn release(self: &Rc<Self>, took: Option<Duration>, now: Instant) {
        let in_flight = self.in_flight.get();
        if let Some(took) = took {
            let limit = self.gradient.borrow_mut().on_sample(took, in_flight, now);
            self.limit.set((limit as u32).max(1));
        }
        self.in_flight.set(in_flight - 1);
        self.grant(now);
    }

    /// Hands free places to waiting requests, reads first when preferred.
    fn grant(self: &Rc<Self>, now: Instant) {
        while self.in_flight.get() < self.limit.get() && self.queued.get() > 0 {
            // A full queue lately, or a wait of a quarter of max_wait, means
            // the queue is standing, not absorbing a burst: serve the newest
            // first (adaptive LIFO), which can still be answered in time,
            // and let the oldest be dropped or reach their deadline, instead
            // of answering every request late.
            let overflowing =
                self.overflowed.get().is_some_and(|at| now.saturating_duration_since(at) < WINDOW);
            let stale = now.checked_sub(self.config.max_wait / 4);
            let next = next_waiter(&mut self.reads.borrow_mut(), overflowing, stale)
                .or_else(|| next_waiter(&mut self.writes.borrow_mut(), overflowing, stale));
            let Some(waiter) = next else { break };
            self.queued.set(self.queued.get() - 1);
            self.in_flight.set(self.in_flight.get() + 1);
            self.admitted.set(self.admitted.get() + 1);
            self.record_wait(now.saturating_duration_since(waiter.arrived));
            waiter.state.set(WaitState::Granted(now));
            let waker = waiter.waker.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// A waiter gave up: its place in the queue is dropped, and a queue
    /// made mostly of such entries is swept.
    fn cancel(&self, waiter: &Waiter, shed: bool) {
        waiter.state.set(WaitState::Cancelled);
        self.queued.set(self.queued.get() - 1);
        if shed {
            self.shed.set(self.shed.get() + 1);
        }
        for queue in [&self.reads, &self.writes] {
            let mut queue = queue.borrow_mut();
            if queue.len() > 2 * self.queued.get() + 64 {
                queue.retain(|w| w.state.get() == WaitState::Waiting);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> AdmissionCounters {
        AdmissionCounters {
            limit: if self.config.enabled { self.gradient.borrow().limit() } else { 0.0 },
            in_flight: u64::from(self.in_flight.get()),
            queued: self.queued.get() as u64,
            admitted: self.admitted.get(),
            shed: self.shed.get(),
            wait_buckets: self.wait_buckets.borrow().clone(),
            wait_sum_us: self.wait_sum_us.get(),
        }
    }
}

/// The next live waiter of `queue`: the oldest, unless `newest_first` or
/// the oldest arrived before `stale`, then the newest. Entries given up are
/// dropped on the way.
fn next_waiter(
    queue: &mut VecDeque<Rc<Waiter>>,
    newest_first: bool,
    stale: Option<Instant>,
) -> Option<Rc<Waiter>> {
    let live = |waiter: &Rc<Waiter>| waiter.state.get() == WaitState::Waiting;
    while queue.front().is_some_and(|waiter| !live(waiter)) {
        queue.pop_front();
    }
    let oldest = queue.front()?;
    if newest_first || stale.is_some_and(|stale| oldest.arrived < stale) {
        while let Some(waiter) = queue.pop_back() {
            if live(&waiter) {
                return Some(waiter);
            }
        }
        None
    } else {
        queue.pop_front()
    }
}

/// A place among the admitted: given back when dropped.
pub(crate) struct Permit {
    admission: Option<Rc<Admission>>,
    admitted: Instant,
}

impl Permit {
    /// The request was answered at `now`: its time feeds the limit.
    pub(crate) fn finish(mut self, now: Instant) {
        if let Some(admission) = self.admission.take() {
            admission.release(Some(now.saturating_duration_since(self.admitted)), now);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Abandoned (the client went away): the place is freed, but a
        // request cut short says nothing about how long requests take.
        if let Some(admission) = self.admission.take() {
            admission.release(None, Instant::now());
        }
    }
}

/// A request waiting for a place.
pub(crate) struct Ticket {
    admission: Rc<Admission>,
    waiter: Rc<Waiter>,
}

impl Ticket {
    /// Ready with a permit once a place is handed over, or with `None` when
    /// the request was refused to make room for a newer one.
    pub(crate) fn poll_granted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Permit>> {
        match self.waiter.state.get() {
            WaitState::Granted(at) => {
                self.waiter.state.set(WaitState::Cancelled);
                Poll::Ready(Some(Permit { admission: Some(self.admission.clone()), admitted: at }))
            }
            WaitState::Dropped => Poll::Ready(None),
            WaitState::Waiting => {
                let mut waker = self.waiter.waker.borrow_mut();
                match waker.as_ref() {
                    Some(known) if known.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            WaitState::Cancelled => unreachable!("a ticket is not polled after it is given up"),
        }
    }

    /// The deadline passed: the request is refused.
    pub(crate) fn expire(self) {
        if self.waiter.state.get() == WaitState::Waiting {
            self.admission.cancel(&self.waiter, true);
        }
        // A place granted just now is given back by Drop.
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        match self.waiter.state.get() {
            WaitState::Waiting => self.admission.cancel(&self.waiter, false),
            // Granted but never taken: give the place back.
            WaitState::Granted(_) => {
                self.waiter.state.set(WaitState::Cancelled);
                self.admission.release(None, Instant::now());
            }
            WaitState::Dropped | WaitState::Cancelled => {}
        }
    }
}

/// The answer to a request refused for overload: cheap, and it tells the
/// client when to come back.
pub(crate) fn overloaded() -> Response {
    // A fixed body, not serialised per refusal: under overload refusals are
    // most of what the worker does.
    const BODY: &[u8] =
        br#"{"error":{"code":"overloaded","message":"the server is over capacity; retry shortly"}}"#;
    let mut response = Response::new(crate::Body::new(bytes::Bytes::from_static(BODY)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: u32, queue: usize) -> AdmissionConfig {
        AdmissionConfig {
            initial_limit: limit,
            min_limit: 1,
            max_limit: 1000,
            queue,
            ..AdmissionConfig::default()
        }
    }

    fn admitted(decision: Decision) -> Permit {
        match decision {
            Decision::Admitted(permit) => permit,
            _ => panic!("expected an admission"),
        }
    }

    fn queued(decision: Decision) -> Ticket {
        match decision {
            Decision::Queued(ticket) => ticket,
            _ => panic!("expected a place in the queue"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_limit_requests_wait_and_a_full_queue_drops_its_oldest() {
        let admission = Admission::new(config(2, 1));
        let now = Instant::now();
        let a = admitted(admission.arrive("/v1/x", true, now, now));
        let _b = admitted(admission.arrive("/v1/x", true, now, now));
        let mut c = queued(admission.arrive("/v1/x", true, now, now));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(c.poll_granted(&mut cx).is_pending());
        // The queue is full: the oldest waiter is refused to make room.
        let mut d = queued(admission.arrive("/v1/x", true, now, now));
        assert!(matches!(c.poll_granted(&mut cx), Poll::Ready(None)), "the oldest is dropped");
        // Health checks are never limited.
        assert!(matches!(admission.arrive("/healthz", true, now, now), Decision::Exempt));

        a.finish(now + Duration::from_millis(1));
        let Poll::Ready(Some(_d)) = d.poll_granted(&mut cx) else {
            panic!("the freed place goes to the waiting request")
        };
        let snapshot = admission.snapshot();
        assert_eq!((snapshot.admitted, snapshot.shed, snapshot.queued, snapshot.in_flight), (3, 1, 0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_queue_requests_over_the_limit_are_refused_at_once() {
        let admission = Admission::new(config(1, 0));
        let now = Instant::now();
        let _a = admitted(admission.arrive("/v1/x", true, now, now));
        assert!(matches!(admission.arrive("/v1/x", true, now, now), Decision::Shed));
        assert_eq!(admission.snapshot().shed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_room_for_reads_before_writes() {
        let admission = Admission::new(config(1, 2));
        let now = Instant::now();
        let _first = admitted(admission.arrive("/v1/x", true, now, now));
        let mut read = queued(admission.arrive("/v1/x", true, now, now));
        let mut write = queued(admission.arrive("/v1/x", false, now, now));
        let mut cx = Context::from_waker(Waker::noop());
        // A newer read: the waiting write, served after every read, goes.
        let mut newer_read = queued(admission.arrive("/v1/x", true, now, now));
        assert!(matches!(write.poll_granted(&mut cx), Poll::Ready(None)));
        // A newer write with only reads waiting would be served last: it is
        // the one refused.
        assert!(matches!(admission.arrive("/v1/x", false, now, now), Decision::Shed));
        assert!(read.poll_granted(&mut cx).is_pending());
        assert!(newer_read.poll_granted(&mut cx).is_pending());
        assert_eq!((admission.snapshot().queued, admission.snapshot().shed), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_overflow_the_newest_waiters_go_first_for_a_window() {
        let admission = Admission::new(config(1, 2));
        let start = Instant::now();
        let first = admitted(admission.arrive("/v1/x", true, start, start));
        let _dropped = queued(admission.arrive("/v1/x", true, start, start));
        let mut old = queued(admission.arrive("/v1/x", true, start, start));
        let mut new = queued(admission.arrive("/v1/x", true, start, start));
        let mut cx = Context::from_waker(Waker::noop());
        first.finish(start);
        assert!(old.poll_granted(&mut cx).is_pending());
        let Poll::Ready(Some(second)) = new.poll_granted(&mut cx) else { panic!("the newest goes first") };
        // A window later without an overflow: first come, first served.
        let later = start + WINDOW;
        let mut newest = queued(admission.arrive("/v1/x", true, later, later));
        second.finish(later);
        assert!(newest.poll_granted(&mut cx).is_pending());
        assert!(matches!(old.poll_granted(&mut cx), Poll::Ready(Some(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_granted_before_writes_and_abandoned_waiters_are_skipped() {
        let admission = Admission::new(config(1, 10));
        let now = Instant::now();
        let first = admitted(admission.arrive("/v1/x", false, now, now));
        let mut write = queued(admission.arrive("/v1/x", false, now, now));
        let gone = queued(admission.arrive("/v1/x", true, now, now));
        let mut read = queued(admission.arrive("/v1/x", true, now, now));
        drop(gone);
        assert_eq!(admission.snapshot().queued, 2);
        first.finish(now);
        let mut cx = Context::from_waker(Waker::noop());
        // Held: a permit dropped would hand its place straight on.
        let Poll::Ready(Some(_read_permit)) = read.poll_granted(&mut cx) else {
            panic!("the read goes first")
        };
        assert!(write.poll_granted(&mut cx).is_pending());
        // The write's deadline passes: refused, counted as shed.
        write.expire();
        let snapshot = admission.snapshot();
        assert_eq!((snapshot.queued, snapshot.shed), (0, 1));
    }

    #[tokio::test]
    async fn the_refusal_has_the_one_error_shape() {
        let expected =
            crate::error::json_error_body("overloaded", "the server is over capacity; retry shortly", &[]);
        let response = overloaded();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        assert_eq!(body, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_standing_queue_serves_the_newest_first() {
        let admission = Admission::new(AdmissionConfig { max_wait: Duration::from_secs(1), ..config(1, 10) });
        let start = Instant::now();
        let first = admitted(admission.arrive("/v1/x", true, start, start));
        let mut old = queued(admission.arrive("/v1/x", true, start, start));
        let later = start + Duration::from_millis(400);
        let mut new = queued(admission.arrive("/v1/x", true, later, later));
        let mut cx = Context::from_waker(Waker::noop());
        // The oldest waited 400 ms of 1 s: the newest goes first.
        first.finish(later);
        assert!(old.poll_granted(&mut cx).is_pending());
        let Poll::Ready(Some(second)) = new.poll_granted(&mut cx) else { panic!("the newest goes first") };
        // The last one left is served, however long it waited.
        second.finish(later);
        assert!(old.poll_granted(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_granted_but_never_taken_is_given_back() {
        let admission = Admission::new(config(1, 10));
        let now = Instant::now();
        let first = admitted(admission.arrive("/v1/x", true, now, now));
        let ticket = queued(admission.arrive("/v1/x", true, now, now));
        first.finish(now);
        assert_eq!(admission.snapshot().in_flight, 1);
        drop(ticket);
        assert_eq!(admission.snapshot().in_flight, 0);
        assert!(matches!(admission.arrive("/v1/x", true, now, now), Decision::Admitted(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waited_past_max_wait_before_arriving_is_refused() {
        let admission = Admission::new(config(1, 10));
        let now = Instant::now();
        let _first = admitted(admission.arrive("/v1/x", true, now, now));
        let later = now + Duration::from_secs(2);
        assert!(matches!(admission.arrive("/v1/x", true, now, later), Decision::Shed));
    }

    /// Feeds `windows` windows of `per_window` samples taking `took` with
    /// the limit fully used; returns the limit after.
    fn feed(gradient: &mut Gradient, start: &mut Instant, windows: u32, took: Duration) -> f64 {
        for _ in 0..windows {
            for i in 0..WINDOW_SAMPLES {
                let at = *start + WINDOW * i / WINDOW_SAMPLES;
                let in_flight = gradient.limit() as u32;
                gradient.on_sample(took, in_flight, at);
            }
            *start += WINDOW;
        }
        gradient.on_sample(took, gradient.limit() as u32, *start)
    }

    #[test]
    fn the_limit_grows_while_latency_holds_and_shrinks_when_it_rises() {
        let mut gradient = Gradient::new(&config(20, 10));
        let mut now = Instant::now();
        let steady = feed(&mut gradient, &mut now, 50, Duration::from_millis(2));
        assert!(steady > 40.0, "grows while latency is steady: {steady}");
        // Latency triples: the limit comes down, by at most half per window.
        let before = gradient.limit();
        let after_one = feed(&mut gradient, &mut now, 1, Duration::from_millis(6));
        assert!(after_one < before && after_one >= before * 0.5, "{before} -> {after_one}");
        let loaded = feed(&mut gradient, &mut now, 30, Duration::from_millis(6));
        assert!(loaded < before / 2.0, "{before} -> {loaded}");
        // Back to normal: it grows again.
        let recovered = feed(&mut gradient, &mut now, 60, Duration::from_millis(2));
        assert!(recovered > loaded * 2.0, "{loaded} -> {recovered}");
    }

    #[test]
    fn an_idle_worker_keeps_its_limit() {
        let mut gradient = Gradient::new(&config(100, 10));
        let mut now = Instant::now();
        for _ in 0..20 {
            for i in 0..WINDOW_SAMPLES {
                gradient.on_sample(Duration::from_millis(1), 3, now + WINDOW * i / WINDOW_SAMPLES);
            }
            now += WINDOW;
        }
        assert_eq!(gradient.limit(), 100.0);
    }
}
