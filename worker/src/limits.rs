//! Protection from slow or hostile clients: the per-request checks made
//! before the application sees a request, and the settings of every limit.

use std::time::Duration;

use http::{header, HeaderValue, StatusCode, Version};

use crate::error::json_error;
use crate::Response;

/// The limits a worker enforces. Defaults are the documented ones in
/// `config/default.toml`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time from the first byte of a request to the end of its headers;
    /// past it the client gets 408 and the connection closes.
    pub header_read_timeout: Duration,
    /// The longest pause allowed between two pieces of a request body while
    /// the application waits for it; past it the request is answered 408.
    pub body_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Zero disables
    /// keep-alive.
    pub keep_alive_timeout: Duration,
    /// Request line plus all header lines, in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// Number of header fields; more gets 431.
    pub max_headers: usize,
    /// Declared or streamed body size; more gets 413.
    pub max_body_bytes: u64,
    /// Open connections per worker; more get 503 and are closed.
    pub max_connections: usize,
    /// Open connections per worker from one client address; more get 503
    /// and are closed. Zero: no such cap.
    pub max_connections_per_ip: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_concurrent_streams: 256,
        }
    }
}

impl Limits {
    /// The buffer hyper may fill with one request head. It is larger than
    /// our own limit so that a head between the two gets our JSON 431; past
    /// it hyper refuses with a bare 431 before we see the request.
    pub(crate) fn hyper_max_buf_size(&self) -> usize {
        (self.max_header_bytes * 2).max(16 * 1024)
    }

    /// Same reasoning for the header count.
    pub(crate) fn hyper_max_headers(&self) -> usize {
        self.max_headers * 2
    }
}

/// Refuses a request that breaks a limit, before the application runs.
/// `body_limit` overrides `limits.max_body_bytes` for this request's route
/// (see [`crate::App::body_limit`]).
pub(crate) fn check<B>(
    request: &http::Request<B>,
    limits: &Limits,
    body_limit: Option<u64>,
) -> Option<Response> {
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Some(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("more than {} header fields", limits.max_headers),
        ));
    }
    // One pass over the fields serves every check below: this runs for
    // every request, and a lookup by name costs a hash each.
    // The request line plus "name: value\r\n" for each field.
    let mut head = request.method().as_str().len() + uri_len(request.uri()) + 12;
    let mut hosts = 0;
    let mut length = None;
    for (name, value) in headers {
        head += name.as_str().len() + value.len() + 4;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            length = Some(value);
        }
    }
    if head > limits.max_header_bytes {
        return Some(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("request head larger than {} bytes", limits.max_header_bytes),
        ));
    }
    // RFC 9112 3.2: an HTTP/1.1 request without a Host header, or with more
    // than one, is answered 400 (proxies and caches would each pick their
    // own idea of the target).
    if hosts != 1 && request.version() == Version::HTTP_11 {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    if let Some(length) = length {
        let declared = length.to_str().ok().and_then(|s| s.parse::<u64>().ok());
        // hyper has already rejected a malformed Content-Length.
        let limit = body_limit.unwrap_or(limits.max_body_bytes);
        if declared.is_some_and(|n| n > limit) {
            return Some(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("request body larger than {limit} bytes"),
            ));
        }
    }
    None
}

/// The length of the request target as sent, without allocating.
fn uri_len(uri: &http::Uri) -> usize {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    scheme + authority + target
}

/// A refusal that also closes the connection: the rest of the request (an
/// unread body, more oversized headers) is not worth reading.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = json_error(status, code, message, &[]);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/x").version(Version::HTTP_10);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn status(headers: &[(&str, &str)], limits: &Limits) -> Option<u16> {
        check(&request(headers), limits, None).map(|r| r.status().as_u16())
    }

    #[test]
    fn limits_refuse_with_the_right_status() {
        let limits =
            Limits { max_headers: 3, max_header_bytes: 200, max_body_bytes: 10, ..Limits::default() };
        assert_eq!(status(&[("a", "1")], &limits), None);
        assert_eq!(status(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")], &limits), Some(431));
        assert_eq!(status(&[("a", &"x".repeat(300))], &limits), Some(431));
        assert_eq!(status(&[("content-length", "11")], &limits), Some(413));
        assert_eq!(status(&[("content-length", "10")], &limits), None);
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let limits = Limits::default();
        let check11 = |hosts: &[&str]| {
            let mut builder = http::Request::builder().uri("/x").version(Version::HTTP_11);
            for host in hosts {
                builder = builder.header("host", *host);
            }
            check(&builder.body(()).unwrap(), &limits, None).map(|r| r.status().as_u16())
        };
        assert_eq!(check11(&["a"]), None);
        assert_eq!(check11(&[]), Some(400));
        assert_eq!(check11(&["a", "b"]), Some(400));
        // HTTP/1.0 had no Host requirement.
        assert_eq!(status(&[], &limits), None);
    }
}
