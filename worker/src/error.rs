//! The one JSON error shape of the whole API:
//! `{"error":{"code":"...","message":"...","details":[{"field":"...","issue":"..."}]}}`.
//!
//! The worker uses it for the refusals it makes itself (408, 413, 431, 503);
//! the application's error type renders through the same function, so a
//! client parses one shape whatever refused it.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use crate::{Body, Response};

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    pub field: String,
    pub issue: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[ErrorDetail]>::is_empty")]
    details: &'a [ErrorDetail],
}

/// The JSON body alone.
pub fn json_error_body(code: &str, message: &str, details: &[ErrorDetail]) -> Bytes {
    let envelope = Envelope { error: Inner { code, message, details } };
    // Strings and a slice of plain structs always serialise.
    Bytes::from(serde_json::to_vec(&envelope).expect("error envelope serialises"))
}

/// A complete error response with the JSON shape.
pub fn json_error(status: StatusCode, code: &str, message: &str, details: &[ErrorDetail]) -> Response {
    let mut response = Response::new(Body::new(json_error_body(code, message, details)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The raw bytes of an HTTP/1.1 error response that closes the connection,
/// for refusals written without hyper (a header timeout, a connection over
/// the limit). `request_id` goes out as `x-request-id`, as on every other
/// response.
pub fn raw_http1_error(status: StatusCode, code: &str, message: &str, request_id: &HeaderValue) -> Vec<u8> {
    let body = json_error_body(code, message, &[]);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_omitted_when_empty_and_listed_otherwise() {
        assert_eq!(
            json_error_body("not_found", "no such route", &[]),
            Bytes::from_static(br#"{"error":{"code":"not_found","message":"no such route"}}"#)
        );
        let details = [ErrorDetail { field: "email".into(), issue: "invalid".into() }];
        assert_eq!(
            json_error_body("invalid", "bad input", &details),
            Bytes::from_static(
                br#"{"error":{"code":"invalid","message":"bad input","details":[{"field":"email","issue":"invalid"}]}}"#
            )
        );
    }

    #[test]
    fn raw_responses_are_complete_http() {
        let raw = raw_http1_error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "too slow",
            &HeaderValue::from_static("r-1"),
        );
        let text = String::from_utf8(raw).unwrap();
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("\r\nx-request-id: r-1"));
    }
}
