//! Reading requests: JSON bodies (size-limited, typed, validated with
//! garde), bearer tokens and query parameters. Every failure is an
//! [`ApiError`] that names what was wrong.

use bytes::Bytes;
use drover_worker::{ErrorDetail, Request};
use garde::Validate;
use http::header;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::{ApiError, State};
use crate::service::Principal;

/// Reads, parses and validates a JSON body.
pub async fn json<T>(request: Request, limit: u64) -> Result<T, ApiError>
where
    T: DeserializeOwned + Validate<Context = ()>,
{
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body(request, limit).await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let issue = e.inner().to_string();
        let path = e.path().to_string();
        // serde reports a missing field at its parent; name the field.
        let missing =
            issue.strip_prefix("missing field `").and_then(|rest| rest.split_once('`')).map(|(f, _)| f);
        let field = match (missing, path.as_str()) {
            // "." is the root; "?" means the syntax broke before any field.
            (Some(field), "." | "?") => field.to_owned(),
            (Some(field), parent) => format!("{parent}.{field}"),
            (None, "." | "?") => "body".to_owned(),
            (None, _) => path,
        };
        ApiError::Invalid { details: vec![ErrorDetail { field, issue }] }
    })?;
    value.validate().map_err(|report| ApiError::Invalid {
        details: report
            .iter()
            .map(|(path, error)| ErrorDetail { field: path.to_string(), issue: error.to_string() })
            .collect(),
    })?;
    Ok(value)
}

/// The whole body, refused past `limit` bytes even when no length was
/// declared (chunked).
async fn body(request: Request, limit: u64) -> Result<Bytes, ApiError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(request.into_body(), limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::invalid("body", "the body could not be read")),
    }
}

/// The principal of the request's bearer token.
pub fn principal(state: &State, request: &Request) -> Result<Principal, ApiError> {
    let value = request.headers().get(header::AUTHORIZATION).ok_or(ApiError::Unauthenticated)?;
    let value = value.to_str().map_err(|_| ApiError::InvalidToken { expired: false })?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::Unauthenticated),
    };
    Ok(state.auth.authenticate(token)?)
}

/// A query parameter's decoded value.
pub fn query_param(request: &Request, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// For `#[serde(deserialize_with)]`: an email trimmed and lower-cased before
/// it is validated, so `" Ada@Example.com"` is accepted as
/// `ada@example.com` rather than refused for its spaces.
pub fn normalized_email<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = <String as serde::Deserialize>::deserialize(d)?;
    Ok(raw.trim().to_lowercase())
}

/// The same for an optional email.
pub fn normalized_email_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = <Option<String> as serde::Deserialize>::deserialize(d)?;
    Ok(raw.map(|s| s.trim().to_lowercase()))
}
