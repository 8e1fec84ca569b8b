//! The request body as the application reads it: hyper's body, plus a limit
//! on how long the client may pause between two pieces of it.
//!
//! A client that sends a request head and then stalls its body would
//! otherwise hold a connection, and a request in flight, for as long as it
//! likes, and delay every drain to its timeout. The timer exists only while
//! the application waits for body bytes that have not arrived; a body that
//! came with its head (nearly all JSON requests) never starts one.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent nothing for longer than allowed (`http.body_read_timeout`,
    /// or a much shorter grace once the worker drains). Answer 408.
    #[error("the client sent no body bytes for {0:?}")]
    TimedOut(Duration),
    /// The connection failed or the body was malformed (bad chunking).
    #[error("the body could not be read: {0}")]
    Read(#[from] hyper::Error),
}

/// How long a body may pause; one per worker, shared by every body.
pub(crate) struct BodyPolicy {
    /// The pause allowed between two pieces of a body.
    pub gap: Duration,
    /// The pause allowed once the worker drains: a body that stalls then is
    /// not waited for.
    pub drain_gap: Duration,
    /// Flips to true when the worker starts draining.
    pub drain: watch::Receiver<bool>,
}

/// Told when a request body has been read to its end: until then the
/// connection's reading side is inside the body, and hyper's connection must
/// not be set aside (see `conn.rs`).
pub(crate) trait EndObserver {
    fn body_ended(&self);
}

/// A request body with the pause limit of [`BodyPolicy`].
pub struct RequestBody {
    inner: Incoming,
    policy: Rc<BodyPolicy>,
    /// Told once, when the end is seen; `None` after that.
    on_end: Option<Rc<dyn EndObserver>>,
    /// Made at the first wait and kept for the next ones; a body that never
    /// waits costs nothing more than this `None`.
    wait: Option<Wait>,
}

struct Wait {
    /// When the current wait began (the last piece arrived, or the first
    /// poll); `None` between waits.
    since: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    /// Completes when draining starts, so the deadline can shrink; `None`
    /// once draining.
    drained: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, policy: Rc<BodyPolicy>, on_end: Rc<dyn EndObserver>) -> Self {
        let mut body = Self { inner, policy, on_end: Some(on_end), wait: None };
        body.check_end();
        body
    }

    fn check_end(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(observer) = self.on_end.take() {
                observer.body_ended();
            }
        }
    }

    /// Ready with the error once the client has paused for too long.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<BodyError> {
        let policy = &self.policy;
        let now = Instant::now();
        let wait = self.wait.get_or_insert_with(|| {
            let drained = (!*policy.drain.borrow()).then(|| {
                let mut drain = policy.drain.clone();
                Box::pin(async move {
                    // An error means the worker is going away: as good as draining.
                    let _ = drain.wait_for(|draining| *draining).await;
                }) as Pin<Box<dyn Future<Output = ()>>>
            });
            Wait { since: None, sleep: Box::pin(tokio::time::sleep_until(now)), drained }
        });
        let mut reset = false;
        if wait.drained.as_mut().is_some_and(|drained| drained.as_mut().poll(cx).is_ready()) {
            wait.drained = None;
            reset = true;
        }
        let gap = if wait.drained.is_some() { policy.gap } else { policy.gap.min(policy.drain_gap) };
        if wait.since.is_none() {
            wait.since = Some(now);
            reset = true;
        }
        if reset {
            let since = wait.since.unwrap_or(now);
            wait.sleep.as_mut().reset(since + gap);
        }
        wait.sleep.as_mut().poll(cx).map(|()| BodyError::TimedOut(gap))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Progress: the next wait starts afresh.
                if let Some(wait) = this.wait.as_mut() {
                    wait.since = None;
                }
                if frame.is_none() {
                    if let Some(observer) = this.on_end.take() {
                        observer.body_ended();
                    }
                } else {
                    this.check_end();
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)))
            }
            Poll::Pending => this.poll_timeout(cx).map(|error| Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
