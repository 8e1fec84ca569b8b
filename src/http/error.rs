//! The HTTP layer's error type: the one place errors become statuses. Every
//! variant documents the status it answers with; all render through the
//! worker's single JSON error shape.

use std::fmt::Display;

use drover_worker::{json_error, ErrorDetail, Response};
use http::{header, HeaderValue, StatusCode};

/// An error a request ends with.
#[derive(Debug)]
pub enum ApiError {
    /// 404: no route matches the path.
    NoRoute,
    /// 405: the path exists but not with this method; `allow` lists those
    /// that do.
    MethodNotAllowed { allow: String },
    /// 400: the input is invalid; each detail names a field and what is
    /// wrong with it.
    Invalid { details: Vec<ErrorDetail> },
    /// 500: a bug or an unexpected failure. The cause goes to the log with
    /// an id; the client sees only the id.
    Internal { id: String },
}

impl ApiError {
    /// Logs `cause` and returns an opaque 500 that carries only an id.
    pub fn internal(cause: impl Display) -> Self {
        let id = request_id();
        tracing::error!(error_id = %id, cause = %cause, "internal error");
        ApiError::Internal { id }
    }

    /// A 400 about one field.
    pub fn invalid(field: &str, issue: &str) -> Self {
        ApiError::Invalid {
            details: vec![ErrorDetail {
                field: field.into(),
                issue: issue.into(),
            }],
        }
    }

    pub fn into_response(self) -> Response {
        match self {
            ApiError::Invalid { details } => json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request is invalid",
                &details,
            ),
            ApiError::NoRoute => {
                json_error(StatusCode::NOT_FOUND, "not_found", "no such route", &[])
            }
            ApiError::MethodNotAllowed { allow } => {
                let mut response = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("this route accepts {allow}"),
                    &[],
                );
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
            ApiError::Internal { id } => {
                let mut response = json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &format!("internal error; quote id {id} when reporting it"),
                    &[],
                );
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert("x-request-id", value);
                }
                response
            }
        }
    }
}

/// A process-unique id: pid, then a per-process counter, in hex.
fn request_id() -> String {
    use std::cell::Cell;
    thread_local! { static NEXT: Cell<u64> = const { Cell::new(0) }; }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    format!("{:x}-{n:x}", std::process::id())
}
