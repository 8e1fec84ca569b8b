//! `GET /v1/reports/orders?from=&to=&format=csv|ndjson` (admin): every
//! order created in the range, streamed as it is read. CSV per RFC 4180,
//! with cells that a spreadsheet would run as a formula (`= + - @`, tab,
//! CR) defused; NDJSON one object per line. Compressed when the client
//! accepts it, piece by piece (`[http.compression]`).

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_worker::{Body, BoxError, Request};
use http::{header, HeaderValue, Method, StatusCode};
use hyper::body::Frame;
use serde::Serialize;

use super::{OrderReportRow, ReportPieces, ReportRange, RowWriter};
use crate::http::openapi::errors;
use crate::http::{extract, ApiError, Params, Reply, RouteTable, State};
use crate::resources::products::http::rfc3339;

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/reports/orders", Method::GET, orders);
}

/// This route in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(orders))]
pub struct Api;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None | Some("csv") => Ok(Format::Csv),
            Some("ndjson") => Ok(Format::Ndjson),
            Some(_) => Err(ApiError::invalid("format", "must be csv or ndjson")),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// `2026-12-04` (midnight UTC) or an RFC 3339 time.
fn parse_time(field: &str, raw: &str) -> Result<SystemTime, ApiError> {
    let full = if raw.len() == 10 { format!("{raw}T00:00:00Z") } else { raw.to_owned() };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|_| ApiError::invalid(field, "must be a date (2026-12-04) or an RFC 3339 time"))
}

/// The end of the range when none is given: the last second of year 9999.
const NO_END: Duration = Duration::from_secs(253_402_300_799);

/// Every order created in a range, streamed (administrators only).
#[utoipa::path(
    get,
    path = "/v1/reports/orders",
    tag = "reports",
    params(
        ("from" = Option<String>, Query, nullable = false, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z)?$",
         description = "A date (2026-12-04, midnight UTC) or an RFC 3339 time; the beginning when absent."),
        ("to" = Option<String>, Query, nullable = false, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z)?$",
         description = "A date or an RFC 3339 time, not before `from`; no end when absent."),
        ("format" = Option<String>, Query, nullable = false, pattern = "^(csv|ndjson)$",
         description = "`csv` (the default) or `ndjson`."),
    ),
    responses(
        (status = 200, description = "The report, as an attachment.",
         content(
             (String = "text/csv", example = "id,user_id,email,status,currency,total_amount,lines,created_at\r\n"),
             (RowBody = "application/x-ndjson"),
         )),
        errors::Invalid,
        errors::AdminOnly,
    ),
    security(("bearerAuth" = []))
)]
fn orders(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request).and_then(|principal| {
        let from_raw = extract::query_param(&request, "from");
        let to_raw = extract::query_param(&request, "to");
        let from = from_raw.as_deref().map(|raw| parse_time("from", raw)).transpose()?.unwrap_or(UNIX_EPOCH);
        let to =
            to_raw.as_deref().map(|raw| parse_time("to", raw)).transpose()?.unwrap_or(UNIX_EPOCH + NO_END);
        let format = Format::parse(extract::query_param(&request, "format").as_deref())?;
        let name = format!(
            "orders-{}-{}.{}",
            from_raw.as_deref().map_or("start", |raw| raw.get(..10).unwrap_or(raw)),
            to_raw.as_deref().map_or("now", |raw| raw.get(..10).unwrap_or(raw)),
            format.extension()
        );
        Ok((principal, ReportRange { from, to }, format, name))
    });
    let (principal, range, format, name) = crate::ready_or_return!(parsed);
    let pieces = crate::ready_or_return!(state
        .reports
        .orders(principal, range, Writer(format))
        .map_err(ApiError::from));
    let mut response = drover_worker::Response::new(body(pieces));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    // The name holds only digits, dashes and letters of our own.
    let disposition = format!(
        "attachment; filename=\"{}\"",
        name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.', "_")
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Reply::ready(response)
}

/// The report's body: its pieces as they are written. A database error
/// ends the body early (the client sees a truncated transfer, never a
/// complete-looking report).
fn body(pieces: ReportPieces) -> Body {
    let frames = futures_util::stream::unfold(Some(pieces), |pieces| async move {
        let mut pieces = pieces?;
        match pieces.next().await? {
            Ok(piece) => Some((Ok(Frame::data(piece)), Some(pieces))),
            Err(error) => {
                tracing::error!(%error, "the orders report failed while streaming; the response is cut short");
                Some((Err(BoxError::from(error.to_string())), None))
            }
        }
    });
    Body::stream(http_body_util::StreamBody::new(frames))
}

/// Writes the report in one format.
struct Writer(Format);

impl RowWriter for Writer {
    fn header(&self, out: &mut Vec<u8>) {
        if self.0 == Format::Csv {
            out.extend_from_slice(b"id,user_id,email,status,currency,total_amount,lines,created_at\r\n");
        }
    }

    fn row(&self, out: &mut Vec<u8>, row: &OrderReportRow) {
        write_row(out, row, self.0);
    }
}

/// One line of the NDJSON report.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OrderReportRow)]
struct RowBody<'a> {
    id: i64,
    user_id: i64,
    email: &'a str,
    status: &'a str,
    currency: &'a str,
    total_amount: i64,
    lines: i64,
    #[schema(format = DateTime)]
    created_at: String,
}

fn write_row(out: &mut Vec<u8>, row: &OrderReportRow, format: Format) {
    use std::io::Write;
    match format {
        Format::Ndjson => {
            let body = RowBody {
                id: row.id,
                user_id: row.user_id,
                email: &row.email,
                status: &row.status,
                currency: &row.currency,
                total_amount: row.total_amount,
                lines: row.lines,
                created_at: rfc3339(row.created_at),
            };
            // Writing plain fields to memory cannot fail.
            let _ = serde_json::to_writer(&mut *out, &body);
            out.push(b'\n');
        }
        Format::Csv => {
            let _ = write!(out, "{},{},", row.id, row.user_id);
            csv_text(out, &row.email);
            out.push(b',');
            csv_text(out, &row.status);
            out.push(b',');
            csv_text(out, &row.currency);
            let _ = write!(out, ",{},{},{}\r\n", row.total_amount, row.lines, rfc3339(row.created_at));
        }
    }
}

/// A text cell per RFC 4180 (quoted when it holds a comma, quote or line
/// break; quotes doubled), and defused when a spreadsheet would run it as a
/// formula: a leading `= + - @`, tab or CR gets a `'` in front, inside
/// quotes (OWASP's CSV injection advice).
fn csv_text(out: &mut Vec<u8>, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = formula || text.contains([',', '"', '\r', '\n']);
    if quoted {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for byte in text.bytes() {
        if byte == b'"' {
            out.extend_from_slice(b"\"\"");
        } else {
            out.push(byte);
        }
    }
    if quoted {
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> String {
        let mut out = Vec::new();
        csv_text(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_per_rfc_4180_and_formulas_are_defused() {
        assert_eq!(cell("ada@example.com"), "ada@example.com");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://x\")"] {
            let out = cell(formula);
            assert!(out.starts_with("\"'"), "{formula:?} -> {out}");
        }
        assert_eq!(cell("=A1,\"x\""), "\"'=A1,\"\"x\"\"\"");
    }

    #[test]
    fn times_are_dates_or_rfc_3339_and_formats_are_named() {
        assert_eq!(parse_time("from", "1970-01-02").unwrap(), UNIX_EPOCH + Duration::from_secs(86_400));
        assert_eq!(parse_time("to", "1970-01-01T00:01:00Z").unwrap(), UNIX_EPOCH + Duration::from_secs(60));
        assert!(parse_time("from", "yesterday").is_err());
        assert_eq!(Format::parse(None).unwrap(), Format::Csv);
        assert_eq!(Format::parse(Some("ndjson")).unwrap(), Format::Ndjson);
        assert!(Format::parse(Some("xlsx")).is_err());
    }
}
