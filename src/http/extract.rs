//! Reading requests: JSON bodies (size-limited, exactly one object sent as
//! `application/json` in UTF-8, typed, validated with garde), bearer tokens
//! and query parameters. Every failure is an [`ApiError`] that names what was
//! wrong in the API's words, never serde's.

use bytes::Bytes;
use drover_worker::{BodyError, ErrorDetail, Request};
use garde::Validate;
use http::{header, HeaderMap};
use http_body_util::{BodyExt, Limited};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::error::Category;

use super::{ApiError, State};
use crate::service::{AuthError, Principal};

/// The media types a JSON body may be sent as on a route that documents no
/// other. `+json` types (`application/merge-patch+json`, ...) promise
/// semantics of their own, so a route accepts one only when it documents it,
/// by passing its own list to [`json_accepting`].
pub const JSON: &[&str] = &["application/json"];

/// The issue of a body that is JSON, but not an object.
const NOT_AN_OBJECT: &str = "must be a JSON object";
/// The issue of a body that is not JSON at all. Deliberately without serde's
/// line and column: they describe our parser, not the API.
const NOT_JSON: &str = "is not valid JSON";

/// Reads, parses and validates a JSON body sent as `application/json`.
/// A new email address (registration, or a change): normalised, and with a
/// dotted domain unless `auth.allow_dotless_email_domains`.
pub fn new_email(state: &super::State, raw: &str) -> Result<crate::domain::UserEmail, ApiError> {
    let email = crate::domain::UserEmail::parse(raw).map_err(|e| ApiError::invalid(e.field, &e.issue))?;
    if !state.allow_dotless_email_domains && !email.has_dotted_domain() {
        return Err(ApiError::invalid("email", "must have a domain with a dot, such as example.com"));
    }
    Ok(email)
}

pub async fn json<T>(request: Request, limit: u64) -> Result<T, ApiError>
where
    T: DeserializeOwned + Validate<Context = ()>,
{
    json_accepting(request, limit, JSON).await
}

/// Reads, parses and validates a JSON body sent as one of `accepted` (media
/// types in lower case, without parameters).
pub async fn json_accepting<T>(
    request: Request,
    limit: u64,
    accepted: &'static [&'static str],
) -> Result<T, ApiError>
where
    T: DeserializeOwned + Validate<Context = ()>,
{
    check_content_type(request.headers(), accepted)?;
    let bytes = body(request, limit).await?;
    let value: T = parse_json(&bytes)?;
    value.validate().map_err(|report| ApiError::Invalid {
        details: report
            .iter()
            .map(|(path, error)| ErrorDetail { field: path.to_string(), issue: error.to_string() })
            .collect(),
    })?;
    Ok(value)
}

/// Refuses a body whose `Content-Type` is absent, malformed, repeated, not
/// one of `accepted`, or declares a charset other than UTF-8 (JSON is UTF-8,
/// RFC 8259 §8.1; a body read as Latin-1 by one tool and as UTF-8 by another
/// is the kind of disagreement this check exists to prevent).
fn check_content_type(headers: &HeaderMap, accepted: &'static [&'static str]) -> Result<(), ApiError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        // Two Content-Type fields are read as either one by different tools.
        (Some(value), None) => check_media_type(value.to_str().unwrap_or(""), accepted),
        _ => Err(ApiError::UnsupportedMediaType { accepted }),
    }
}

/// [`check_content_type`] for one header value.
fn check_media_type(value: &str, accepted: &'static [&'static str]) -> Result<(), ApiError> {
    let Some(media) = MediaType::parse(value) else {
        return Err(ApiError::UnsupportedMediaType { accepted });
    };
    // Exact matches only: a prefix test would take `application/jsonx`.
    if !accepted.iter().any(|a| a.eq_ignore_ascii_case(&media.essence)) {
        return Err(ApiError::UnsupportedMediaType { accepted });
    }
    // Other parameters change nothing about how JSON is read and are ignored,
    // as RFC 8259 says of them; a repeated charset is ambiguous.
    let mut charsets = media.params.iter().filter(|(name, _)| name == "charset");
    match (charsets.next(), charsets.next()) {
        (None, _) => Ok(()),
        (Some((_, charset)), None) if charset.eq_ignore_ascii_case("utf-8") => Ok(()),
        _ => Err(ApiError::UnsupportedCharset),
    }
}

/// A `Content-Type` value parsed as RFC 9110 §8.3.1 defines it:
/// `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`.
#[derive(Debug, PartialEq)]
struct MediaType {
    /// `type/subtype`, lower-cased: both are case-insensitive.
    essence: String,
    /// The parameters in order, names lower-cased and values unquoted. Values
    /// keep their case: whether it matters depends on the parameter.
    params: Vec<(String, String)>,
}

impl MediaType {
    /// The media type of `value`, or `None` when it breaks the grammar.
    fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches(is_ows);
        let (kind, rest) = token(value)?;
        let (subtype, mut rest) = token(rest.strip_prefix('/')?)?;
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(is_ows);
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix(';')?.trim_start_matches(is_ows);
            // The grammar allows empty parameters (`a/b;;`, `a/b;`).
            if rest.is_empty() || rest.starts_with(';') {
                continue;
            }
            let (name, after) = token(rest)?;
            let after = after.strip_prefix('=')?;
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => quoted_string(quoted)?,
                None => token(after).map(|(v, after)| (v.to_owned(), after))?,
            };
            params.push((name.to_ascii_lowercase(), value));
            rest = after;
        }
        Some(Self { essence: format!("{kind}/{subtype}").to_ascii_lowercase(), params })
    }
}

/// Optional whitespace (RFC 9110 §5.6.3).
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A non-empty token at the start of `s` and what follows it (RFC 9110
/// §5.6.2).
fn token(s: &str) -> Option<(&str, &str)> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let end = s.find(|c: char| !is_tchar(c)).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// The unescaped content of a quoted string whose opening quote is already
/// consumed, and what follows its closing quote (RFC 9110 §5.6.4).
fn quoted_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c if c == '\t' || !c.is_control() => out.push(c),
            _ => return None,
        }
    }
    None
}

/// Parses `bytes` as exactly one JSON object, translating every failure into
/// the API's own words (see [`describe`]).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs also accept an array of their fields in order
    // (`["ada@example.com","pw"]` would log in), which no other JSON tool
    // reads as an object; only an object is a body here.
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') => {}
        None => return Err(ApiError::invalid("body", "is required: send a JSON object")),
        Some(_) => {
            // Say whether it is JSON of another kind or not JSON at all.
            let issue =
                if serde_json::from_slice::<IgnoredAny>(bytes).is_ok() { NOT_AN_OBJECT } else { NOT_JSON };
            return Err(ApiError::invalid("body", issue));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| ApiError::Invalid { details: vec![describe(&error)] })?;
    // Without this, `{...}garbage` or two objects in a row would be read as
    // the first object alone, while other tools refuse them or read both.
    deserializer
        .end()
        .map_err(|_| ApiError::invalid("body", "has data after the JSON object: send exactly one object"))?;
    Ok(value)
}

/// One deserialisation error as a field and an issue in the API's words:
/// never serde's text, which names Rust types and structs and counts lines
/// and columns of our parser.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> ErrorDetail {
    let inner = error.inner();
    match inner.classify() {
        Category::Data => translate(&message_of(inner), &error.path().to_string()),
        // Syntax, end of input, and I/O (impossible on a slice): the body is
        // broken as a whole, whichever field the parser had reached.
        Category::Syntax | Category::Eof | Category::Io => detail("body".to_owned(), NOT_JSON),
    }
}

/// serde_json's message without the position it appends.
fn message_of(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.line() == 0 {
        return text;
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&position).map(str::to_owned).unwrap_or(text)
}

/// A data error's message (serde's `de::Error` wording) at `path` (as
/// serde_path_to_error prints it: `.` for the root) as a detail.
fn translate(message: &str, path: &str) -> ErrorDetail {
    // The field a message names between backticks, for errors serde raises
    // at the parent object (missing and duplicate fields name fields of our
    // own structs, never the client's text).
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| child(path, field))
    };
    let at_path = || if is_root(path) { "body".to_owned() } else { path.to_owned() };
    if let Some(field) = named("missing field `") {
        return detail(field, "is required");
    }
    if let Some(field) = named("duplicate field `") {
        return detail(field, "appears more than once");
    }
    if message.starts_with("unknown field `") {
        // The path already ends with the client's key.
        return detail(at_path(), "is not a known field");
    }
    if message.starts_with("unknown variant `") {
        return detail(at_path(), "is not one of the allowed values");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        // The client's value comes first and may contain anything; serde's
        // expectation is after the last ", expected ".
        let expected = rest.rsplit_once(", expected ").map_or("", |(_, expected)| expected);
        return detail(at_path(), expected_in_words(expected));
    }
    if message.starts_with("invalid value: ") {
        return detail(at_path(), "is out of range or not allowed");
    }
    if message.starts_with("invalid length ") {
        return detail(at_path(), "has the wrong number of items");
    }
    // Custom messages (a `deserialize_with` helper, an untagged enum) may
    // name Rust types; say only that the field is wrong.
    detail(at_path(), "is not valid")
}

/// What a field must be, given serde's description of what it expected
/// (a visitor's `expecting`).
fn expected_in_words(expected: &str) -> &'static str {
    let unsigned = ["u8", "u16", "u32", "u64", "u128", "usize"];
    let signed = ["i8", "i16", "i32", "i64", "i128", "isize"];
    match expected.strip_prefix("a nonzero ").unwrap_or(expected) {
        "a string" | "a borrowed string" => "must be a string",
        "a character" => "must be a single character",
        "a boolean" => "must be true or false",
        "f32" | "f64" => "must be a number",
        e if unsigned.contains(&e) => "must be a whole number, not negative",
        e if signed.contains(&e) => "must be a whole number",
        "a sequence" | "an empty array" => "must be an array",
        "a map" => "must be an object",
        "unit" => "must be null",
        e if e.starts_with("struct ") => "must be an object",
        e if e.starts_with("tuple") || e.starts_with("a tuple") => "must be an array",
        e if e.starts_with("enum ") => "is not one of the allowed values",
        _ => "has the wrong type",
    }
}

/// serde_path_to_error prints the root as `.` and unknown steps as `?`.
fn is_root(path: &str) -> bool {
    path == "." || path == "?"
}

/// The path of `field` inside the object at `parent`.
fn child(parent: &str, field: &str) -> String {
    if is_root(parent) {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn detail(field: String, issue: &str) -> ErrorDetail {
    ErrorDetail { field, issue: issue.to_owned() }
}

/// The whole body, refused past `limit` bytes even when no length was
/// declared (chunked). A gzip body (`Content-Encoding: gzip`) is decoded,
/// and `limit` applies to what it inflates to as well. Decoding runs on the
/// event loop: inflating is bounded by `limit` output bytes (about 2 ms for
/// the default 1 MiB).
async fn body(request: Request, limit: u64) -> Result<Bytes, ApiError> {
    let gzip = is_gzip(request.headers())?;
    let raw = raw_body(request, limit).await?;
    if !gzip {
        return Ok(raw);
    }
    super::compress::gunzip(&raw, limit).map(Bytes::from)
}

/// Whether the body is gzip-encoded (`false`: as it is); 415 for any other
/// coding, or a chain of them.
fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut codings = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    match (codings.next(), codings.next()) {
        (None, _) => Ok(false),
        (Some(coding), None)
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") =>
        {
            Ok(true)
        }
        _ => Err(ApiError::UnsupportedEncoding),
    }
}

async fn raw_body(request: Request, limit: u64) -> Result<Bytes, ApiError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(request.into_body(), limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(error) => match error.downcast_ref::<BodyError>() {
            Some(error) => Err(body_error(error)),
            None => Err(ApiError::invalid("body", "the body could not be read")),
        },
    }
}

/// What a client is told when its body could not be read.
pub fn body_error(error: &BodyError) -> ApiError {
    match error {
        BodyError::TimedOut(_) => ApiError::BodyTimeout,
        BodyError::Read(_) => ApiError::invalid("body", "the body could not be read"),
    }
}

/// The bearer token of a request: `None` without an `Authorization`
/// header; an error for one that is not a bearer token.
pub fn bearer(request: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::InvalidToken { expired: false })?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::Unauthenticated),
    }
}

/// Whom a request's bearer token speaks for, as the router found out before
/// calling the handler: the answer needs the user's record, so it awaits,
/// and handlers read it synchronously with [`principal`].
#[derive(Clone)]
pub struct Authenticated(Result<Principal, Refusal>);

/// [`ApiError`] is not `Clone`; what a request extension keeps of one.
#[derive(Clone)]
enum Refusal {
    Token { expired: bool },
    Unavailable,
    Internal { id: String },
}

impl Authenticated {
    /// The principal, when the token was accepted.
    pub fn principal(&self) -> Option<Principal> {
        self.0.as_ref().ok().copied()
    }

    pub async fn resolve(state: &State, token: &str) -> Self {
        let refusal = match state.auth.authenticate(token).await {
            Ok(principal) => return Self(Ok(principal)),
            Err(AuthError::Token(error)) => ApiError::from(error),
            Err(AuthError::Revoked) => {
                tracing::debug!("token refused: revoked, or its user deleted");
                ApiError::InvalidToken { expired: false }
            }
            Err(AuthError::Service(error)) => ApiError::from(error),
        };
        Self(Err(match refusal {
            ApiError::InvalidToken { expired } => Refusal::Token { expired },
            ApiError::Internal { id } => Refusal::Internal { id },
            _ => Refusal::Unavailable,
        }))
    }
}

/// The principal of the request's bearer token.
pub fn principal(_state: &State, request: &Request) -> Result<Principal, ApiError> {
    if let Some(Authenticated(outcome)) = request.extensions().get::<Authenticated>() {
        return outcome.clone().map_err(|refusal| match refusal {
            Refusal::Token { expired } => ApiError::InvalidToken { expired },
            Refusal::Unavailable => ApiError::Unavailable,
            Refusal::Internal { id } => ApiError::Internal { id },
        });
    }
    match bearer(request)? {
        None => Err(ApiError::Unauthenticated),
        // Only a request that did not come through the router.
        Some(_) => Err(ApiError::internal("a bearer token was not resolved before its handler ran")),
    }
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

/// The same for an optional email, which may be absent but not `null`
/// (see [`present`]).
pub fn normalized_email_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    normalized_email(d).map(Some)
}

/// For `#[serde(default, deserialize_with)]` on an optional field of a
/// change (a PATCH body): absent is "no change", and `null` is refused as
/// the wrong type rather than read as absent. A client sending `null` may
/// mean "remove", which no field here supports, and the OpenAPI document
/// then says exactly what is accepted: the field's type, or nothing.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For `#[serde(deserialize_with)]` on an integer field: a whole number,
/// also when written with a zero fraction (`2.0`, `1e3`). JSON does not
/// tell the two apart, and JSON Schema (so the OpenAPI document's
/// `integer`) counts `2.0` as the integer 2; tools that write every number
/// as a float send it so.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};

    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = i64;

        // serde's own name for the type, which `describe` words as "must be
        // a whole number".
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("i64")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // -2^63 is exact as an f64, 2^63 is the first value past i64.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(E::invalid_type(Unexpected::Float(v), &self));
            }
            if !(-LIMIT..LIMIT).contains(&v) {
                return Err(E::invalid_value(Unexpected::Float(v), &self));
            }
            Ok(v as i64)
        }
    }
    d.deserialize_i64(Whole)
}

/// The principal of the request and its path's `{id}`: what every handler
/// of one resource's item needs first.
pub fn principal_and_id(
    state: &State,
    request: &Request,
    params: &super::Params,
) -> Result<(Principal, i64), ApiError> {
    Ok((principal(state, request)?, id(params)?))
}

/// The path parameter `{id}` (the first one) as a positive integer.
pub fn id(params: &super::Params) -> Result<i64, ApiError> {
    params
        .first()
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("id", "must be a positive integer"))
}

/// `?limit=` (1 to `max`, `default` when absent) and `?cursor=` (from a
/// page's `next`) of a keyset-paginated list.
pub fn page(request: &Request, default: i64, max: i64) -> Result<(i64, Option<i64>), ApiError> {
    let limit = match query_param(request, "limit") {
        None => default,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", &format!("must be an integer from 1 to {max}")))?,
    };
    let after = match query_param(request, "cursor") {
        None => None,
        Some(raw) => Some(
            crate::resources::parse_cursor(&raw)
                .ok_or_else(|| ApiError::invalid("cursor", "must be the `next` of a previous page"))?,
        ),
    };
    Ok((limit, after))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// What `check_media_type` decided, in one word.
    fn media(value: &str, accepted: &'static [&'static str]) -> &'static str {
        match check_media_type(value, accepted) {
            Ok(()) => "ok",
            Err(ApiError::UnsupportedMediaType { .. }) => "type",
            Err(ApiError::UnsupportedCharset) => "charset",
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn only_the_accepted_media_types_pass() {
        let check = |value: &str, expect: &str| assert_eq!(media(value, JSON), expect, "{value:?}");
        check("application/json", "ok");
        check("Application/JSON", "ok");
        check("  application/json  ", "ok");
        check("application/json;", "ok");
        check("application/json ; ; foo=bar", "ok");
        check("application/json; charset=utf-8", "ok");
        check("application/json;charset=UTF-8", "ok");
        check("application/json; Charset=\"utf-8\"", "ok");
        check("application/json; charset=latin1", "charset");
        check("application/json; charset=iso-8859-1", "charset");
        check("application/json; charset=\"utf-16\"", "charset");
        check("application/json; charset=utf8", "charset");
        check("application/json; charset=utf-8; charset=latin1", "charset");
        check("application/json; charset=utf-8; charset=utf-8", "charset");
        check("application/jsonx", "type");
        check("application/json-patch+json", "type");
        check("application/merge-patch+json", "type");
        check("application/vnd.api+json", "type");
        check("text/json", "type");
        check("application/json garbage", "type");
        check("application/json; charset", "type");
        check("application/json; charset = utf-8", "type");
        check("application/json; charset=\"utf-8", "type");
        check("application /json", "type");
        check("application/", "type");
        check("/json", "type");
        check("", "type");
    }

    #[test]
    fn a_route_may_accept_a_documented_json_suffix_type() {
        const PATCH: &[&str] = &["application/json", "application/merge-patch+json"];
        assert_eq!(media("application/merge-patch+json; charset=utf-8", PATCH), "ok");
        assert_eq!(media("application/json", PATCH), "ok");
        assert_eq!(media("application/json-patch+json", PATCH), "type");
        let message = ApiError::UnsupportedMediaType { accepted: PATCH }.into_response();
        assert_eq!(message.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn media_type_parameters_are_unquoted_and_names_lower_cased() {
        let parsed = MediaType::parse(r#"Text/Plain; Charset="a \"b\"; c"; x=Y"#).unwrap();
        assert_eq!(parsed.essence, "text/plain");
        assert_eq!(
            parsed.params,
            [("charset".to_owned(), r#"a "b"; c"#.to_owned()), ("x".to_owned(), "Y".to_owned())]
        );
    }

    #[test]
    fn only_one_content_type_field_is_accepted() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers, JSON).is_err(), "absent");
        headers.append(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(check_content_type(&headers, JSON).is_ok());
        headers.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(check_content_type(&headers, JSON).is_err(), "repeated");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct LoginBody {
        email: String,
        password: String,
        #[serde(default)]
        age: Option<u8>,
        #[serde(default)]
        admin: Option<bool>,
        #[serde(default)]
        score: Option<f64>,
        #[serde(default)]
        tags: Option<Vec<String>>,
        #[serde(default)]
        address: Option<Address>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Address {
        city: String,
    }

    /// Parses `input` as a `LoginBody`; `expect` is `None` for success or
    /// the one field and issue of the 400.
    fn check(input: &str, expect: Option<(&str, &str)>) {
        let got = match parse_json::<LoginBody>(input.as_bytes()) {
            Ok(_) => None,
            Err(ApiError::Invalid { details }) => {
                assert_eq!(details.len(), 1, "{input}: {details:?}");
                Some((details[0].field.clone(), details[0].issue.clone()))
            }
            Err(other) => panic!("{input}: unexpected {other:?}"),
        };
        if let Some((_, issue)) = &got {
            for leak in ["struct", "LoginBody", "Address", "line", "column", "expected", "`", "u8", "f64"] {
                assert!(!issue.contains(leak), "{input}: {issue:?} leaks {leak:?}");
            }
        }
        let got = got.as_ref().map(|(field, issue)| (field.as_str(), issue.as_str()));
        assert_eq!(got, expect, "{input}");
    }

    #[test]
    fn a_body_is_exactly_one_json_object() {
        let ok = r#"{"email":"a@b.io","password":"pw"}"#;
        check(ok, None);
        check(&format!(" \r\n\t{ok} \n"), None);
        check(
            &format!("{ok}garbage"),
            Some(("body", "has data after the JSON object: send exactly one object")),
        );
        check(
            &format!("{ok}{ok}"),
            Some(("body", "has data after the JSON object: send exactly one object")),
        );
        check(&format!("{ok} {{"), Some(("body", "has data after the JSON object: send exactly one object")));
        check(r#"["a@b.io","pw"]"#, Some(("body", "must be a JSON object")));
        check("5", Some(("body", "must be a JSON object")));
        check(r#""a@b.io""#, Some(("body", "must be a JSON object")));
        check("null", Some(("body", "must be a JSON object")));
        check("", Some(("body", "is required: send a JSON object")));
        check("  \n", Some(("body", "is required: send a JSON object")));
        check(r#"["a@b.io","pw""#, Some(("body", "is not valid JSON")));
        check("nope", Some(("body", "is not valid JSON")));
        check("{nope", Some(("body", "is not valid JSON")));
        check(r#"{"email":"a@b.io","password":pw}"#, Some(("body", "is not valid JSON")));
        check(r#"{"email":"a@b.io","#, Some(("body", "is not valid JSON")));
        check("\u{feff}{}", Some(("body", "is not valid JSON")));
    }

    #[test]
    fn data_errors_name_the_field_in_plain_words() {
        check(r#"{"email":"a@b.io"}"#, Some(("password", "is required")));
        check(r#"{"email":5,"password":"pw"}"#, Some(("email", "must be a string")));
        check(r#"{"email":null,"password":"pw"}"#, Some(("email", "must be a string")));
        check(r#"{"email":{},"password":"pw"}"#, Some(("email", "must be a string")));
        check(r#"{"email":"a@b.io","password":"pw","role":"admin"}"#, Some(("role", "is not a known field")));
        check(
            r#"{"email":"a@b.io","email":"c@d.io","password":"pw"}"#,
            Some(("email", "appears more than once")),
        );
        let with = |extra: &str| format!(r#"{{"email":"a@b.io","password":"pw",{extra}}}"#);
        check(&with(r#""age":"x""#), Some(("age", "must be a whole number, not negative")));
        check(&with(r#""age":-1"#), Some(("age", "is out of range or not allowed")));
        check(&with(r#""age":300"#), Some(("age", "is out of range or not allowed")));
        check(&with(r#""admin":"yes""#), Some(("admin", "must be true or false")));
        check(&with(r#""score":"x""#), Some(("score", "must be a number")));
        check(&with(r#""tags":"x""#), Some(("tags", "must be an array")));
        check(&with(r#""tags":[1]"#), Some(("tags[0]", "must be a string")));
        check(&with(r#""address":"x""#), Some(("address", "must be an object")));
        check(&with(r#""address":{}"#), Some(("address.city", "is required")));
        check(&with(r#""address":{"city":1}"#), Some(("address.city", "must be a string")));
        check(&with(r#""address":{"zip":1}"#), Some(("address.zip", "is not a known field")));
        // The client's own text is never echoed as the issue.
        check(r#"{"email":"x, expected struct Evil","password":5}"#, Some(("password", "must be a string")));
    }

    #[test]
    fn messages_serde_may_produce_are_translated() {
        let check = |message: &str, path: &str, field: &str, issue: &str| {
            let got = translate(message, path);
            assert_eq!((got.field.as_str(), got.issue.as_str()), (field, issue), "{message}");
        };
        check("missing field `city`", "address", "address.city", "is required");
        check("unknown field `x`, there are no fields", "x", "x", "is not a known field");
        check(
            "unknown variant `boss`, expected `user` or `admin`",
            "role",
            "role",
            "is not one of the allowed values",
        );
        check("invalid type: sequence, expected struct LoginBody", ".", "body", "must be an object");
        check(
            "invalid type: string \"x\", expected a nonzero u32",
            "n",
            "n",
            "must be a whole number, not negative",
        );
        check("invalid type: map, expected tuple struct Pair", "p", "p", "must be an array");
        check("invalid type: map, expected something odd", "p", "p", "has the wrong type");
        check("invalid length 1, expected a tuple of size 2", "p", "p", "has the wrong number of items");
        check("data did not match any variant of untagged enum Shape", "s", "s", "is not valid");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Counted {
        #[serde(deserialize_with = "whole_number")]
        n: i64,
        #[serde(default, deserialize_with = "present")]
        label: Option<String>,
    }

    #[test]
    fn whole_numbers_may_have_a_zero_fraction_and_changes_may_not_be_null() {
        let check = |input: &str, expect: Result<i64, (&str, &str)>| {
            let got = match parse_json::<Counted>(input.as_bytes()) {
                Ok(counted) => Ok(counted.n),
                Err(ApiError::Invalid { details }) => {
                    Err((details[0].field.clone(), details[0].issue.clone()))
                }
                Err(other) => panic!("{input}: unexpected {other:?}"),
            };
            let got = got.as_ref().map(|n| *n).map_err(|(f, i)| (f.as_str(), i.as_str()));
            assert_eq!(got, expect, "{input}");
        };
        check(r#"{"n":2}"#, Ok(2));
        check(r#"{"n":-2.0}"#, Ok(-2));
        check(r#"{"n":1e3}"#, Ok(1000));
        check(r#"{"n":2.5}"#, Err(("n", "must be a whole number")));
        check(r#"{"n":"2"}"#, Err(("n", "must be a whole number")));
        check(r#"{"n":1e300}"#, Err(("n", "is out of range or not allowed")));
        check(r#"{"n":9223372036854775808}"#, Err(("n", "is out of range or not allowed")));
        check(r#"{"n":1,"label":"x"}"#, Ok(1));
        check(r#"{"n":1,"label":null}"#, Err(("label", "must be a string")));
    }

    #[test]
    fn positions_are_cut_from_serde_json_messages() {
        let error = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        assert!(error.to_string().contains("line"), "{error}");
        assert_eq!(message_of(&error), "invalid type: string \"x\", expected u8");
    }
}
