//! Reports: exports too large to hold in memory, streamed from the database
//! to the client row by row (`GET /v1/reports/orders`). The rows come from
//! the repository as the database produces them and leave as CSV or NDJSON
//! as they arrive, so a report's memory does not grow with its size, and a
//! client that goes away stops the query. The rows are read and written on
//! a thread of the report's own, below the event loop (`pieces.rs`).

pub mod http;
mod pieces;
mod repo;
mod service;

use std::time::SystemTime;

pub use pieces::{ReportPieces, RowWriter};
pub use service::ReportService;

/// One order in the orders report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReportRow {
    pub id: i64,
    pub user_id: i64,
    /// The customer's email, as they typed it: untrusted text.
    pub email: String,
    pub status: String,
    pub currency: String,
    /// In minor units (cents).
    pub total_amount: i64,
    /// Order lines.
    pub lines: i64,
    pub created_at: SystemTime,
}

/// Which orders: created at or after `from` and before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRange {
    pub from: SystemTime,
    pub to: SystemTime,
}
