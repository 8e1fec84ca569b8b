//! The orders report, stored: one query for every backend on the portable
//! statement layer, streamed ([`crate::repo::sql::Sql::stream`]).

use tokio::sync::{mpsc, oneshot};

use super::{OrderReportRow, ReportRange};
use crate::params;
use crate::repo::sql::{Row, SqlRef};
use crate::repo::RepoError;

/// Rows fetched from the database per round trip (PostgreSQL's portal).
const FETCH: usize = 500;
/// Rows fetched but not yet sent, at most: the backpressure between a slow
/// client and the database.
const BUFFERED: usize = 1000;

/// The rows of a report as the database produces them. Dropping it stops
/// the query: nothing more is fetched.
pub struct OrderRows {
    rows: mpsc::Receiver<Row>,
    /// Its place among the reports running; given back when it is dropped.
    _running: super::service::Running,
    /// How the query ended, once every row is read.
    outcome: Option<oneshot::Receiver<Result<(), RepoError>>>,
}

impl OrderRows {
    /// Starts the query on its own task (the worker's event loop).
    pub(super) fn start(sql: SqlRef, range: ReportRange, running: super::service::Running) -> Self {
        let (sender, rows) = mpsc::channel(BUFFERED);
        let (done, outcome) = oneshot::channel();
        tokio::task::spawn_local(async move {
            let result = sql
                .stream(
                    "SELECT o.id, o.user_id, u.email, o.status, o.currency, o.total_amount, \
                     (SELECT COUNT(*) FROM order_lines l WHERE l.order_id = o.id), o.created_at \
                     FROM orders o JOIN users u ON u.id = o.user_id \
                     WHERE o.created_at >= ? AND o.created_at < ? ORDER BY o.id",
                    params![range.from, range.to],
                    FETCH,
                    &sender,
                )
                .await;
            let _ = done.send(result);
        });
        Self { rows, _running: running, outcome: Some(outcome) }
    }

    /// The next row; `None` after the last. An error ends the report.
    pub async fn next(&mut self) -> Option<Result<OrderReportRow, RepoError>> {
        match self.rows.recv().await {
            Some(row) => Some(report_row(&row)),
            None => self.ended().await,
        }
    }

    /// The next row if one is ready now, without waiting.
    pub fn ready(&mut self) -> Option<Result<OrderReportRow, RepoError>> {
        self.rows.try_recv().ok().map(|row| report_row(&row))
    }

    async fn ended(&mut self) -> Option<Result<OrderReportRow, RepoError>> {
        match self.outcome.take()?.await {
            Ok(Err(error)) => Some(Err(error)),
            // Done, or the task was torn down with the worker.
            Ok(Ok(())) | Err(_) => None,
        }
    }
}

fn report_row(row: &Row) -> Result<OrderReportRow, RepoError> {
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
