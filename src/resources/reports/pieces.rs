//! A report on its way out: read, decoded and written as text on the
//! worker's idle loop (`drover_worker::idle`: a thread in the idle
//! scheduling class), on a database connection kept for streamed reads;
//! the worker's event loop only receives the finished pieces. Decoding and
//! writing hundreds of thousands of rows a second on the loop kept it 42%
//! busy beside 16 downloads, and every other request on the worker waited
//! behind them (`bench/reports.sh`: 5% busy once moved here).
//!
//! Backpressure runs through bounded channels: a client that reads slowly
//! fills the pieces, then the rows, and the database is no longer fetched
//! from. A client that goes away closes the pieces; the report then stops
//! and its query ends on the server.

use bytes::Bytes;
use drover_worker::idle::{IdleLoop, Stopped};
use tokio::sync::{mpsc, oneshot};

use super::service::Running;
use super::{repo, OrderReportRow, ReportRange};
use crate::repo::sql::{Row, StreamerRef};
use crate::repo::RepoError;

/// A piece is sent once it holds this much, or when no more rows are ready.
const PIECE: usize = 32 * 1024;
/// Rows fetched but not yet written, at most.
const ROWS_BUFFERED: usize = 1000;
/// Pieces written but not yet taken by the event loop, at most.
const PIECES_BUFFERED: usize = 4;

/// How rows become bytes (CSV, NDJSON): given by the caller, run on the
/// idle loop.
pub trait RowWriter: Send + 'static {
    /// Written once, before the first row.
    fn header(&self, out: &mut Vec<u8>);
    fn row(&self, out: &mut Vec<u8>, row: &OrderReportRow);
}

/// The pieces of a report as they are written. Dropping it stops the
/// report.
pub struct ReportPieces {
    pieces: mpsc::Receiver<Bytes>,
    /// Its place among the reports running; given back when it is dropped.
    _running: Running,
    /// How the report ended, once every piece is taken.
    outcome: Option<oneshot::Receiver<Result<(), RepoError>>>,
}

impl ReportPieces {
    /// Starts the report on `idle`.
    pub(super) fn start(
        idle: &IdleLoop,
        streamer: StreamerRef,
        range: ReportRange,
        writer: impl RowWriter,
        running: Running,
    ) -> Result<Self, Stopped> {
        let (sender, pieces) = mpsc::channel(PIECES_BUFFERED);
        let (done, outcome) = oneshot::channel();
        idle.spawn(move || async move {
            let _ = done.send(produce(&*streamer, range, &writer, sender).await);
        })?;
        Ok(Self { pieces, _running: running, outcome: Some(outcome) })
    }

    /// The next piece; `None` after the last. An error ends the report.
    pub async fn next(&mut self) -> Option<Result<Bytes, RepoError>> {
        match self.pieces.recv().await {
            Some(piece) => Some(Ok(piece)),
            None => match self.outcome.take()?.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(Err(error)),
                // The report's task panicked, or the idle loop is gone.
                Err(_) => Some(Err(RepoError::Other("the report stopped unexpectedly".into()))),
            },
        }
    }
}

/// The report on the idle loop: the query on one side of a channel of rows,
/// the writer on the other. Ends with the query's outcome once every piece is
/// sent, or early when the pieces' reader is gone.
async fn produce(
    streamer: &dyn crate::repo::sql::Streamer,
    range: ReportRange,
    writer: &dyn RowWriter,
    pieces: mpsc::Sender<Bytes>,
) -> Result<(), RepoError> {
    let (rows_in, rows) = mpsc::channel(ROWS_BUFFERED);
    let query = async move {
        let result = repo::orders(streamer, range, &rows_in).await;
        // Closes the rows, so the writer ends.
        drop(rows_in);
        result
    };
    let (queried, written) = tokio::join!(query, write(rows, writer, pieces));
    written.and(queried)
}

/// Writes rows into pieces of about [`PIECE`] bytes, each sent as soon as
/// it is full or no more rows are ready.
async fn write(
    mut rows: mpsc::Receiver<Row>,
    writer: &dyn RowWriter,
    pieces: mpsc::Sender<Bytes>,
) -> Result<(), RepoError> {
    let mut out = Vec::with_capacity(PIECE + 512);
    writer.header(&mut out);
    while let Some(first) = rows.recv().await {
        let mut next = Some(first);
        while let Some(row) = next.take() {
            writer.row(&mut out, &repo::report_row(&row)?);
            if out.len() < PIECE {
                next = rows.try_recv().ok();
            }
        }
        let piece = std::mem::replace(&mut out, Vec::with_capacity(PIECE + 512));
        if pieces.send(Bytes::from(piece)).await.is_err() {
            // The client is gone; dropping `rows` stops the query.
            return Ok(());
        }
    }
    if !out.is_empty() {
        let _ = pieces.send(Bytes::from(out)).await;
    }
    Ok(())
}
