//! What a handler returns: a response now, or a future of one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use drover_worker::{Body, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use super::ApiError;

/// A response that is ready, or one that waits on I/O.
pub enum Reply {
    Ready(Option<Response>),
    Pending(Pin<Box<dyn Future<Output = Response>>>),
}

impl Reply {
    pub fn ready(response: Response) -> Self {
        Reply::Ready(Some(response))
    }

    /// A handler that awaits: its result or its error becomes the response.
    pub fn later<F>(future: F) -> Self
    where
        F: Future<Output = Result<Response, ApiError>> + 'static,
    {
        Reply::Pending(Box::pin(async move { future.await.unwrap_or_else(ApiError::into_response) }))
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Self {
        Reply::ready(error.into_response())
    }
}

impl Future for Reply {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.get_mut() {
            Reply::Ready(response) => Poll::Ready(response.take().expect("Reply polled after completion")),
            Reply::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, Bytes::from(body), "application/json"),
        Err(error) => ApiError::internal(error).into_response(),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response {
    with_type(status, Bytes::from_static(body.as_bytes()), "text/plain; charset=utf-8")
}

/// A response without a body (204, ...).
pub fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// `response` marked as not to be stored by any cache: tokens, and user
/// records, whatever a proxy in between is configured to do.
pub fn private(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    // Room for what the worker adds to every response (Server, nosniff,
    // x-request-id) and a couple more, so the map is not grown and rehashed
    // on the way out.
    let mut headers = http::HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    *response.headers_mut() = headers;
    response
}

/// The value of a `Result<_, ApiError>`, or, from a handler, its error as
/// the reply: `let principal = ready_or_return!(extract::principal(state, &request));`.
#[macro_export]
macro_rules! ready_or_return {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(error) => return $crate::http::Reply::from(error),
        }
    };
}
