//! The HTTP layer's error type: the one place errors become statuses. Every
//! variant documents the status it answers with; all render through the
//! worker's single JSON error shape. 500s carry only an id; the cause goes
//! to the log.

use std::fmt::Display;

use drover_worker::{json_error, ErrorDetail, Response};
use http::{header, HeaderValue, StatusCode};

use crate::service::{ServiceError, TokenError};

// The OpenAPI document's description of the one error shape, which
// `drover_worker::json_error` writes: these types are never serialised, and
// a test below checks that what the worker writes has this shape.

/// The one JSON shape of every 4xx and 5xx answer.
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct ErrorBody {
    #[schema(inline)]
    pub error: ErrorContent,
}

/// What went wrong: a stable `code` for programs, a `message` for people,
/// and for input errors the fields at fault. A 500 names the request's id
/// (also sent as `x-request-id`) and nothing of its cause.
#[derive(utoipa::ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct ErrorContent {
    /// Stable and machine-readable, such as `invalid_request`, `not_found`,
    /// `out_of_stock`, `too_many_requests`.
    #[schema(example = "invalid_request")]
    pub code: String,
    #[schema(example = "the request is invalid")]
    pub message: String,
    /// Present only when there is something to name.
    #[schema(inline, nullable = false, required = false)]
    #[cfg_attr(test, serde(default))]
    pub details: Option<Vec<ErrorDetailBody>>,
}

/// One field at fault and what is wrong with it.
#[derive(utoipa::ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct ErrorDetailBody {
    /// The field (`email`, `items[0].quantity`), header or parameter.
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "is required")]
    pub issue: String,
}

/// An error a request ends with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the input is invalid; each detail names a field and the issue.
    Invalid { details: Vec<ErrorDetail> },
    /// 401: no bearer token.
    Unauthenticated,
    /// 401: a bearer token that is malformed, forged, expired or not ours.
    InvalidToken { expired: bool },
    /// 401: login with a wrong email or password (never says which).
    BadCredentials,
    /// 404: no route matches the path.
    NoRoute,
    /// 404: the resource does not exist, or is not visible to the caller.
    NotFound,
    /// 405: the path exists but not with this method; `allow` lists those
    /// that do.
    MethodNotAllowed { allow: String },
    /// A CORS preflight asked for what `[http.cors]` does not allow.
    CorsRefused(String),
    /// 409: a unique value (such as an email) is taken.
    Conflict { field: &'static str },
    /// 403: signed in, but not allowed to do this.
    Forbidden,
    /// 409 `out_of_stock`: names the products that lack stock.
    OutOfStock { products: Vec<i64> },
    /// 409 `stock_reserved`: an adjustment below the reserved units.
    StockReserved,
    /// 409 `invalid_transition`: names both states.
    InvalidTransition { from: &'static str, to: &'static str },
    /// 422 `mixed_currencies`.
    MixedCurrencies { issue: String },
    /// 422 `idempotency_key_reused`: the key came with another request.
    IdempotencyKeyReused,
    /// 409 `request_in_progress`: the key's first request still runs.
    RequestInProgress,
    /// 503 `not_set_up`: the benchmark tables are missing.
    NotSetUp,
    /// 408: the client paused its body for longer than
    /// `http.body_read_timeout` (the connection closes).
    BodyTimeout,
    /// 413: the body is larger than `http.max_body_bytes`.
    PayloadTooLarge { limit: u64 },
    /// 415: the body's `Content-Type` is absent, malformed or not one the
    /// route accepts; `accepted` lists those it does.
    UnsupportedMediaType { accepted: &'static [&'static str] },
    /// 406: the client's `Accept-Encoding` refuses identity and every
    /// coding `offered`.
    NotAcceptable { offered: String },
    /// 415: a body in a content coding other than gzip; `Accept-Encoding`
    /// on the response says what is.
    UnsupportedEncoding,
    /// 415: an upload in a content coding; files are stored as sent.
    EncodedUpload,
    /// 416: a `Range` that lies outside the file's `size` bytes.
    RangeNotSatisfiable { size: u64 },
    /// 415: a JSON body declared in a charset other than UTF-8. 415 rather
    /// than 400, as most servers answer: the charset is part of the media
    /// type, and the body was not read.
    UnsupportedCharset,
    /// 503 with `Retry-After`: the database is unreachable; fails fast.
    Unavailable,
    /// 503 with `Retry-After`: the CPU pool (password hashing) is full.
    Busy,
    /// 429 `too_many_requests`: over a `[rate_limit]`; `policy` names it,
    /// with its quota (`limit` per `window_secs`), for the `RateLimit`
    /// headers.
    TooManyRequests { policy: &'static str, limit: u32, window_secs: u64, retry_after_secs: u64 },
    /// 500: a bug or an unexpected failure, logged under `id`.
    Internal { id: String },
}

impl ApiError {
    /// Logs `cause` and returns an opaque 500 that carries only an id.
    /// The error id is the request's id (`x-request-id` on the response),
    /// so the client's report and the log line meet.
    pub fn internal(cause: impl Display) -> Self {
        let id = error_id();
        tracing::error!(error_id = %id, request_id = %id, cause = %cause, "internal error");
        ApiError::Internal { id }
    }

    /// A 400 about one field.
    pub fn invalid(field: &str, issue: &str) -> Self {
        ApiError::Invalid { details: vec![ErrorDetail { field: field.into(), issue: issue.into() }] }
    }

    /// The status and the JSON body of this error (what
    /// [`ApiError::into_response`] sends, without its headers): stored to
    /// replay the answer to an idempotent request.
    pub fn status_and_body(&self) -> (StatusCode, bytes::Bytes) {
        let (status, code, message, details) = self.describe();
        (status, drover_worker::json_error_body(code, &message, &details))
    }

    fn describe(&self) -> (StatusCode, &'static str, String, Vec<ErrorDetail>) {
        match self {
            ApiError::TooManyRequests { retry_after_secs, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many requests; retry in {retry_after_secs} s"),
                vec![],
            ),
            ApiError::Invalid { details } => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request is invalid".to_owned(),
                details.clone(),
            ),
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a bearer token: Authorization: Bearer <token>".to_owned(),
                vec![],
            ),
            ApiError::InvalidToken { expired } => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                if *expired { "the token has expired" } else { "the token is not valid" }.to_owned(),
                vec![],
            ),
            ApiError::BadCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "email or password is wrong".to_owned(),
                vec![],
            ),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found", "no such route".to_owned(), vec![]),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource".to_owned(), vec![]),
            ApiError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this route accepts {allow}"),
                vec![],
            ),
            ApiError::CorsRefused(why) => (StatusCode::FORBIDDEN, "cors_refused", why.clone(), vec![]),
            ApiError::Conflict { field } => (
                StatusCode::CONFLICT,
                "conflict",
                format!("this {field} is already taken"),
                vec![ErrorDetail { field: (*field).to_owned(), issue: "already taken".into() }],
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body was not received in time".to_owned(),
                vec![],
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {limit} bytes"),
                vec![],
            ),
            ApiError::UnsupportedMediaType { accepted } => {
                let accepted = accepted.join(" or ");
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("send the body as {accepted}"),
                    vec![ErrorDetail { field: "content-type".into(), issue: format!("must be {accepted}") }],
                )
            }
            ApiError::NotAcceptable { offered } => (
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("the response is available as identity or {offered}; accept one of them"),
                vec![ErrorDetail {
                    field: "accept-encoding".into(),
                    issue: format!("accept identity or {offered}"),
                }],
            ),
            ApiError::UnsupportedEncoding => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as it is, or gzip-encoded (Content-Encoding: gzip)".to_owned(),
                vec![ErrorDetail {
                    field: "content-encoding".into(),
                    issue: "must be gzip or identity".into(),
                }],
            ),
            ApiError::EncodedUpload => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "files are stored as sent: upload the bytes without a Content-Encoding".to_owned(),
                vec![ErrorDetail { field: "content-encoding".into(), issue: "must be identity".into() }],
            ),
            ApiError::RangeNotSatisfiable { size } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the range is outside the file's {size} bytes"),
                vec![ErrorDetail { field: "range".into(), issue: format!("must start before byte {size}") }],
            ),
            ApiError::UnsupportedCharset => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as UTF-8: charset=utf-8, or no charset".to_owned(),
                vec![ErrorDetail { field: "content-type".into(), issue: "charset must be utf-8".into() }],
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry shortly".to_owned(),
                vec![],
            ),
            ApiError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy; retry shortly".to_owned(),
                vec![],
            ),
            ApiError::Internal { id } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("internal error; quote id {id} when reporting it"),
                vec![],
            ),
            ApiError::Forbidden => {
                (StatusCode::FORBIDDEN, "forbidden", "this needs an administrator".to_owned(), vec![])
            }
            ApiError::OutOfStock { products } => (
                StatusCode::CONFLICT,
                "out_of_stock",
                format!(
                    "not enough stock for product{} {}",
                    if products.len() == 1 { "" } else { "s" },
                    products.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                ),
                products
                    .iter()
                    .map(|id| ErrorDetail {
                        field: format!("product {id}"),
                        issue: "not enough stock".into(),
                    })
                    .collect(),
            ),
            ApiError::StockReserved => (
                StatusCode::CONFLICT,
                "stock_reserved",
                "on hand would fall below the units reserved by placed orders".to_owned(),
                vec![ErrorDetail { field: "delta".into(), issue: "too low for the reserved units".into() }],
            ),
            ApiError::InvalidTransition { from, to } => (
                StatusCode::CONFLICT,
                "invalid_transition",
                format!("cannot go from {from} to {to}"),
                vec![ErrorDetail { field: "status".into(), issue: format!("{from} -> {to} is not allowed") }],
            ),
            ApiError::MixedCurrencies { issue } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "mixed_currencies",
                "all amounts must be in one currency".to_owned(),
                vec![ErrorDetail { field: "items".into(), issue: issue.clone() }],
            ),
            ApiError::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request".to_owned(),
                vec![ErrorDetail {
                    field: "idempotency-key".into(),
                    issue: "used with another request".into(),
                }],
            ),
            ApiError::NotSetUp => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_set_up",
                "the benchmark tables are missing: run `drover bench setup` with this server's database"
                    .to_owned(),
                vec![],
            ),
            ApiError::RequestInProgress => (
                StatusCode::CONFLICT,
                "request_in_progress",
                "a request with this Idempotency-Key is still in progress; retry shortly".to_owned(),
                vec![],
            ),
        }
    }

    pub fn into_response(self) -> Response {
        let (status, code, message, details) = self.describe();
        let mut response = json_error(status, code, &message, &details);
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            ApiError::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::TooManyRequests { policy, limit, window_secs, retry_after_secs } => {
                // draft-ietf-httpapi-ratelimit-headers: the policy's quota
                // and window, and what is left of it with when it resets.
                let values = [
                    (header::RETRY_AFTER.as_str(), retry_after_secs.to_string()),
                    ("ratelimit-policy", format!("\"{policy}\";q={limit};w={window_secs}")),
                    ("ratelimit", format!("\"{policy}\";r=0;t={retry_after_secs}")),
                ];
                for (name, value) in values {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
            }
            ApiError::UnsupportedEncoding => {
                // RFC 9110 §12.5.3: say which codings a body may come in.
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            }
            ApiError::EncodedUpload => {
                headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
            ApiError::RangeNotSatisfiable { size } => {
                // RFC 9110 §15.5.17: the current length, for a retry.
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            ApiError::Unavailable | ApiError::Busy | ApiError::RequestInProgress => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Internal { id } => {
                if let Ok(value) = HeaderValue::from_str(&id) {
                    headers.insert("x-request-id", value);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(invalid) => ApiError::invalid(invalid.field, &invalid.issue),
            ServiceError::Taken(field) => ApiError::Conflict { field },
            ServiceError::NotFound => ApiError::NotFound,
            ServiceError::BadCredentials => ApiError::BadCredentials,
            ServiceError::SessionEnded => ApiError::InvalidToken { expired: false },
            ServiceError::CurrentPasswordWrong => {
                ApiError::invalid("current_password", "is not the current password")
            }
            ServiceError::Forbidden => ApiError::Forbidden,
            ServiceError::OutOfStock(products) => ApiError::OutOfStock { products },
            ServiceError::StockReserved => ApiError::StockReserved,
            ServiceError::InvalidTransition { from, to } => ApiError::InvalidTransition { from, to },
            ServiceError::MixedCurrencies(issue) => ApiError::MixedCurrencies { issue },
            ServiceError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            ServiceError::RequestInProgress => ApiError::RequestInProgress,
            ServiceError::Busy => ApiError::Busy,
            ServiceError::Unavailable(why) | ServiceError::Contention(why) => {
                // Debug, not warn: during an outage every request lands here,
                // and the outage itself is logged once where it is noticed.
                tracing::debug!(%why, "dependency unavailable; answering 503");
                ApiError::Unavailable
            }
            ServiceError::Internal(why) => ApiError::internal(why),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        tracing::debug!(%error, "token refused");
        ApiError::InvalidToken { expired: error == TokenError::Expired }
    }
}

/// The current request's id, or outside a request (a job, the CLI) a
/// process-unique one: pid, then a per-process counter, in hex.
fn error_id() -> String {
    use std::cell::Cell;
    if let Some(id) = drover_worker::request_id::read_current(|id| id.map(str::to_owned)) {
        return id;
    }
    thread_local! { static NEXT: Cell<u64> = const { Cell::new(0) }; }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    format!("{:x}-{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_500_carries_only_an_id_never_the_cause() {
        let response =
            ApiError::internal("password authentication failed for user \"app\" at 10.0.0.5").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains(&id), "{text}");
        assert!(!text.contains("password") && !text.contains("10.0.0.5"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "internal");
    }

    #[tokio::test]
    async fn every_error_has_the_shape_the_document_describes() {
        let errors = [
            ApiError::invalid("email", "is required"),
            ApiError::NotFound,
            ApiError::OutOfStock { products: vec![1, 2] },
            ApiError::internal("cause"),
        ];
        for error in errors {
            let body = error.into_response().into_body().collect().await.unwrap().to_bytes();
            let parsed: Result<ErrorBody, _> = serde_json::from_slice(&body);
            assert!(parsed.is_ok(), "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn unavailable_and_busy_say_when_to_retry() {
        for error in [ApiError::Unavailable, ApiError::Busy] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
    }
}
