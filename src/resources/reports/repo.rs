//! The orders report, stored: one query for every backend on the portable
//! statement layer, streamed on a connection of its own
//! ([`crate::repo::sql::Streamer`]).

use tokio::sync::mpsc;

use super::{OrderReportRow, ReportRange};
use crate::params;
use crate::repo::sql::{Row, Streamer};
use crate::repo::RepoError;

/// Rows fetched from the database per round trip (PostgreSQL's portal).
pub(super) const FETCH: usize = 500;

/// Sends every order in `range` to `rows`, oldest first, until the last or
/// until `rows` is closed.
pub(super) async fn orders(
    streamer: &dyn Streamer,
    range: ReportRange,
    rows: &mpsc::Sender<Row>,
) -> Result<(), RepoError> {
    streamer
        .stream(
            "SELECT o.id, o.user_id, u.email, o.status, o.currency, o.total_amount, \
             (SELECT COUNT(*) FROM order_lines l WHERE l.order_id = o.id), o.created_at \
             FROM orders o JOIN users u ON u.id = o.user_id \
             WHERE o.created_at >= ? AND o.created_at < ? ORDER BY o.id",
            params![range.from, range.to],
            FETCH,
            rows,
        )
        .await
}

pub(super) fn report_row(row: &Row) -> Result<OrderReportRow, RepoError> {
    Ok(OrderReportRow {
        id: row.int(0)?,
        user_id: row.int(1)?,
        email: row.text(2)?,
        status: row.text(3)?,
        currency: row.text(4)?,
        total_amount: row.int(5)?,
        lines: row.int(6)?,
        created_at: row.time(7)?,
    })
}
