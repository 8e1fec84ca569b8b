//! The body of every response: the whole of it in one buffer (almost every
//! response), or a stream of pieces produced while it is sent (reports,
//! downloads), never held whole in memory.
//!
//! A streamed body keeps its request counted as in flight until its last
//! piece is sent or the client goes away (see `conn.rs`), so a connection
//! sending one is neither parked nor closed as idle, and a draining worker
//! waits for it.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Why a stream stopped early; the connection is closed without the rest.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of body pieces.
pub type BodyStream = Pin<Box<dyn HttpBody<Data = Bytes, Error = BoxError>>>;

pub struct Body {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream {
        stream: BodyStream,
        /// Dropped when the stream ends or the body is dropped.
        guard: Option<Box<dyn Any>>,
    },
}

impl Body {
    /// A body sent as it is.
    pub fn new(bytes: Bytes) -> Self {
        let bytes = if bytes.is_empty() { None } else { Some(bytes) };
        Self { kind: Kind::Full(bytes) }
    }

    pub fn empty() -> Self {
        Self { kind: Kind::Full(None) }
    }

    /// A body produced while it is sent.
    pub fn stream<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        let stream = http_body_util::BodyExt::map_err(body, Into::into);
        Self { kind: Kind::Stream { stream: Box::pin(stream), guard: None } }
    }

    /// Whether the body is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream { .. })
    }

    /// The whole body, if it is not a stream.
    pub fn bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(bytes) => Some(bytes.clone().unwrap_or_default()),
            Kind::Stream { .. } => None,
        }
    }

    /// The stream, taken out (an empty body is left), to be wrapped and put
    /// back; `None` for a full body, which stays.
    pub fn take_stream(&mut self) -> Option<BodyStream> {
        match std::mem::replace(&mut self.kind, Kind::Full(None)) {
            // A guard is attached only once the app has answered, after
            // any wrapping: none is lost here.
            Kind::Stream { stream, .. } => Some(stream),
            full => {
                self.kind = full;
                None
            }
        }
    }

    /// Keeps `guard` until the stream ends or the body is dropped. A full
    /// body drops it at once.
    pub(crate) fn guard_until_end(&mut self, guard: Box<dyn Any>) {
        if let Kind::Stream { guard: slot, .. } = &mut self.kind {
            *slot = Some(guard);
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => write!(f, "Body::Full({} bytes)", bytes.as_ref().map_or(0, Bytes::len)),
            Kind::Stream { .. } => f.write_str("Body::Stream"),
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Stream { stream, guard } => {
                let polled = stream.as_mut().poll_frame(cx);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    guard.take();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream { stream, .. } => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { stream, .. } => stream.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    struct Flag(Rc<Cell<bool>>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    fn pieces(n: usize) -> Body {
        let frames = (0..n).map(|i| Ok::<_, BoxError>(Frame::data(Bytes::from(format!("{i},")))));
        Body::stream(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_full_body_is_one_frame_with_an_exact_length() {
        let body = Body::new(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(Body::empty().is_end_stream());
    }

    #[tokio::test]
    async fn a_stream_keeps_its_guard_until_its_last_piece() {
        let ended = Rc::new(Cell::new(false));
        let mut body = pieces(3);
        body.guard_until_end(Box::new(Flag(ended.clone())));
        assert!(body.is_stream() && body.bytes().is_none());
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "0,");
        assert!(!ended.get());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "1,2,");
        assert!(ended.get());
    }

    #[test]
    fn a_stream_dropped_early_drops_its_guard() {
        let ended = Rc::new(Cell::new(false));
        let mut body = pieces(3);
        body.guard_until_end(Box::new(Flag(ended.clone())));
        drop(body);
        assert!(ended.get());
    }
}
