//! `/v1/files`: a signed-in user's files. `PUT /v1/files/{name}` streams
//! the body to the store; `GET` and `HEAD` stream it back with validators
//! (`ETag` is the SHA-256, `Last-Modified`), conditional requests (304) and
//! single byte ranges (206, 416, `If-Range`); `DELETE` removes it; `GET
//! /v1/files` lists the caller's files. Names are per user: nobody else
//! sees a file, whatever its name.

use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_worker::{Body, BoxError, Request};
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyDataStream;
use hyper::body::Frame;
use serde::Serialize;

use super::{FileMeta, FileName, PutError};
use crate::http::openapi::errors;
use crate::http::reply::{self, Reply};
use crate::http::{extract, ApiError, Params, RouteTable, State};
use crate::resources::products::http::rfc3339;
use crate::resources::{cursor, DEFAULT_PAGE, MAX_PAGE};

/// The upload route's pattern: its body limit is `files.max_bytes`, not
/// `http.max_body_bytes` (see [`crate::http::Routes`]).
pub const UPLOAD_PREFIX: &str = "/v1/files/";

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/files", Method::GET, list);
    table.add("/v1/files/{name}", Method::PUT, put);
    table.add("/v1/files/{name}", Method::GET, get);
    table.add("/v1/files/{name}", Method::HEAD, get);
    table.add("/v1/files/{name}", Method::DELETE, delete);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, put, get, delete), modifiers(&OptionalUpload))]
pub struct Api;

/// An upload without a body is an empty file, so the body is optional,
/// which `#[utoipa::path]` says only of an `Option` (and then as `null`).
struct OptionalUpload;

impl utoipa::Modify for OptionalUpload {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let upload = openapi.paths.paths.get_mut("/v1/files/{name}").and_then(|item| item.put.as_mut());
        if let Some(body) = upload.and_then(|put| put.request_body.as_mut()) {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// A file's bytes as they are, in the OpenAPI document (a binary string;
/// utoipa's derive cannot say so of a type of its own).
struct Bytes;

impl utoipa::PartialSchema for Bytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::{schema::Type, KnownFormat, ObjectBuilder, SchemaFormat};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("The file's bytes as they are."))
            .into()
    }
}

impl utoipa::ToSchema for Bytes {
    fn name() -> std::borrow::Cow<'static, str> {
        "FileBytes".into()
    }
}

/// A file as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = File)]
struct FileBody<'a> {
    name: &'a str,
    size: u64,
    /// Hex; the `ETag` is this in quotes.
    sha256: &'a str,
    content_type: &'a str,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl<'a> From<&'a FileMeta> for FileBody<'a> {
    fn from(file: &'a FileMeta) -> Self {
        Self {
            name: file.name.as_str(),
            size: file.size,
            sha256: &file.sha256,
            content_type: &file.content_type,
            created_at: rfc3339(file.created_at),
            updated_at: rfc3339(file.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FilePage)]
struct PageBody<'a> {
    items: Vec<FileBody<'a>>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

/// The `{name}` of the path, percent-decoded and checked.
fn name(params: &Params) -> Result<FileName, ApiError> {
    let raw = params.iter().find(|(k, _)| k == "name").map_or("", |(_, v)| v.as_str());
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::invalid("name", "must be UTF-8, percent-encoded"))?;
    FileName::parse(&decoded).map_err(|e| ApiError::invalid(e.field, &e.issue))
}

/// Your files, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "files",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, nullable = false,
         description = "Files per page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^c[0-9a-f]{1,15}$",
         description = "The `next` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of files.", body = PageBody),
        errors::Invalid,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request)
        .and_then(|p| extract::page(&request, DEFAULT_PAGE, MAX_PAGE).map(|page| (p, page)));
    let (principal, (limit, before)) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let (files, next) = state.files.list(principal, before, limit).await?;
        let body = PageBody { items: files.iter().map(FileBody::from).collect(), next: next.map(cursor) };
        Ok(reply::private(reply::json(StatusCode::OK, &body)))
    })
}

/// The media type stored with an upload: as sent, or
/// `application/octet-stream`.
fn upload_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok("application/octet-stream".to_owned());
    };
    value
        .to_str()
        .ok()
        .filter(|v| v.len() <= 255 && v.contains('/') && !v.trim().is_empty())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| ApiError::invalid("content-type", "must be a media type of at most 255 characters"))
}

/// Stores a file under a name, replacing the one there; the body is
/// streamed, up to `files.max_bytes`.
#[utoipa::path(
    put,
    path = "/v1/files/{name}",
    tag = "files",
    params(("name" = String, Path, min_length = 1, max_length = 255,
         pattern = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]{1,255}$",
         description = "The file's name, percent-encoded: 1 to 255 bytes of UTF-8, not `.` or `..`, without `/`, \
                        `\\`, control or bidi-control characters. (The document counts characters: a name of \
                        fewer than 256 that takes more than 255 bytes is refused too.)")),
    request_body(content = Bytes, content_type = "application/octet-stream",
                 description = "The bytes; `Content-Type` is stored with them (default `application/octet-stream`)."),
    responses(
        (status = 201, description = "Stored as a new file.", body = FileBody,
         headers(("etag" = String), ("location" = String))),
        (status = 200, description = "Stored over the file of that name.", body = FileBody,
         headers(("etag" = String))),
        errors::JsonBody,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn put(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let checked = extract::principal(state, &request).and_then(|principal| {
        let name = name(&params)?;
        let headers = request.headers();
        let coded = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity")));
        if coded {
            return Err(ApiError::EncodedUpload);
        }
        let limit = state.files.max_bytes();
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok((principal, name, upload_type(headers)?))
    });
    let (principal, name, content_type) = crate::ready_or_return!(checked);
    let state = state.clone();
    Reply::later(async move {
        let body = BodyDataStream::new(request.into_body());
        let (file, created) =
            state.files.put(principal, name, content_type, body).await.map_err(|error| match error {
                PutError::Body(error) => extract::body_error(&error),
                PutError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
                PutError::Service(error) => error.into(),
            })?;
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        let mut response = reply::private(reply::json(status, &FileBody::from(&file)));
        let headers = response.headers_mut();
        validators(headers, &file);
        let location = format!("{UPLOAD_PREFIX}{}", path_segment(file.name.as_str()));
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value);
        }
        Ok(response)
    })
}

/// Deletes a file.
#[utoipa::path(
    delete,
    path = "/v1/files/{name}",
    tag = "files",
    params(("name" = String, Path, min_length = 1, max_length = 255,
         pattern = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]{1,255}$",
         description = "The file's name, percent-encoded: 1 to 255 bytes of UTF-8, not `.` or `..`, without `/`, \
                        `\\`, control or bidi-control characters. (The document counts characters: a name of \
                        fewer than 256 that takes more than 255 bytes is refused too.)")),
    responses(
        (status = 204, description = "Deleted."),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
fn delete(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let checked = extract::principal(state, &request).and_then(|p| Ok((p, name(&params)?)));
    let (principal, name) = crate::ready_or_return!(checked);
    let state = state.clone();
    Reply::later(async move {
        state.files.delete(principal, &name).await?;
        Ok(reply::empty(StatusCode::NO_CONTENT))
    })
}

/// A file's bytes (`GET`) or only its headers (`HEAD`): conditional
/// requests (`If-None-Match`, `If-Modified-Since`) and one byte range
/// (`Range`, `If-Range`; GET only).
#[utoipa::path(
    method(get, head),
    path = "/v1/files/{name}",
    tag = "files",
    params(("name" = String, Path, min_length = 1, max_length = 255,
         pattern = r"^(?!\.\.?$)[^/\\\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]{1,255}$",
         description = "The file's name, percent-encoded: 1 to 255 bytes of UTF-8, not `.` or `..`, without `/`, \
                        `\\`, control or bidi-control characters. (The document counts characters: a name of \
                        fewer than 256 that takes more than 255 bytes is refused too.)")),
    responses(
        (status = 200, description = "The file, with its own `Content-Type`.",
         content((Bytes = "*/*")), headers(("etag" = String), ("last-modified" = String))),
        (status = 206, description = "The byte range asked for (`Content-Range`).", content((Bytes = "*/*"))),
        (status = 304, description = "Not modified since the client's copy."),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
        errors::Range,
    ),
    security(("bearerAuth" = []))
)]
fn get(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let checked = extract::principal(state, &request).and_then(|p| Ok((p, name(&params)?)));
    let (principal, name) = crate::ready_or_return!(checked);
    let state = state.clone();
    Reply::later(async move {
        let file = state.files.find(principal, &name).await?;
        let headers = request.headers();
        if not_modified(headers, &file) {
            let mut response = reply::empty(StatusCode::NOT_MODIFIED);
            validators(response.headers_mut(), &file);
            return Ok(response);
        }
        let head = request.method() == Method::HEAD;
        // RFC 9110 §14.2: range handling is defined for GET only.
        let range = if head { None } else { range(headers, &file)? };
        let (status, length) = match &range {
            Some(range) => (StatusCode::PARTIAL_CONTENT, range.end - range.start),
            None => (StatusCode::OK, file.size),
        };
        let body = if head || length == 0 {
            Body::empty()
        } else {
            let pieces = state.files.read(&file, range.clone()).await?;
            let frames = pieces.map(|piece| piece.map(Frame::data).map_err(BoxError::from));
            Body::stream(http_body_util::StreamBody::new(frames))
        };
        let mut response = drover_worker::Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        validators(headers, &file);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let content_type = HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        headers.insert(header::CONTENT_TYPE, content_type);
        // Whatever its type, an upload is the user's bytes, not the API's
        // page: a browser saves it rather than rendering it on our origin.
        let disposition = format!("attachment; filename*=UTF-8''{}", path_segment(file.name.as_str()));
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        headers
            .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
        if let Some(range) = &range {
            let value = format!("bytes {}-{}/{}", range.start, range.end - 1, file.size);
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        Ok(response)
    })
}

/// `ETag`, `Last-Modified` and the cache rule of a file's responses: only
/// the user's own client may keep it, and must check it is current.
fn validators(headers: &mut HeaderMap, file: &FileMeta) {
    if let Ok(value) = HeaderValue::from_str(&etag(file)) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(file.updated_at)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
}

fn etag(file: &FileMeta) -> String {
    format!("\"{}\"", file.sha256)
}

/// `Last-Modified` has whole seconds; comparisons use what it says.
fn whole_seconds(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Whether the client's copy is current (RFC 9110 §13.1.2, §13.1.3):
/// `If-None-Match` (weak comparison, `*`), or without it
/// `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, file: &FileMeta) -> bool {
    let ours = etag(file);
    let mut tags = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if tags.peek().is_some() {
        return tags.filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours
        });
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
        .is_some_and(|since| whole_seconds(file.updated_at) <= since)
}

/// The byte range to send: `None` for the whole file (no `Range`, one
/// that does not parse, several ranges, or an `If-Range` that no longer
/// holds); 416 for one outside the file.
fn range(headers: &HeaderMap, file: &FileMeta) -> Result<Option<Range<u64>>, ApiError> {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if let Some(condition) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let condition = condition.trim();
        // A strong comparison for tags; a date must be the exact one.
        let holds = if condition.starts_with('"') {
            condition == etag(file)
        } else {
            httpdate::parse_http_date(condition).is_ok_and(|date| date == whole_seconds(file.updated_at))
        };
        if !holds {
            return Ok(None);
        }
    }
    // An invalid Range is ignored (RFC 9110 §14.2).
    let Ok(parsed) = http_range_header::parse_range_header(raw) else { return Ok(None) };
    match parsed.validate(file.size) {
        Ok(ranges) if ranges.len() == 1 => Ok(Some(*ranges[0].start()..*ranges[0].end() + 1)),
        // Several ranges: the whole file, which RFC 9110 allows, rather than
        // a multipart/byteranges body.
        Ok(_) => Ok(None),
        Err(_) => Err(ApiError::RangeNotSatisfiable { size: file.size }),
    }
}

/// `name` as one path segment (and an RFC 8187 `filename*` value).
fn path_segment(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(name, KEEP).to_string()
}
