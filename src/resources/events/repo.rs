//! The outbox and the processed-message table, stored: one implementation
//! for every backend on the portable statement layer.

use std::time::SystemTime;

use rand_core::{OsRng, RngCore};

use super::{Event, Message};
use crate::params;
use crate::repo::sql::{self, Row, Sql};
use crate::repo::RepoError;

/// A new event id: 128 random bits in hex.
fn new_event_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `event` to the outbox on `sql`, which must be the executor of the
/// transaction making the change.
pub async fn record(sql: &dyn Sql, event: &Event, now: SystemTime) -> Result<(), RepoError> {
    sql.execute(
        "INSERT INTO outbox (event_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        params![new_event_id(), event.kind(), event.to_json(), now],
    )
    .await?;
    Ok(())
}

/// The PostgreSQL notification channel that says "the outbox has news":
/// a trigger on `outbox` notifies it as the writing transaction commits
/// (migration 0013), and job processes listen on it.
pub const OUTBOX_CHANNEL: &str = "drover_outbox";

/// An outbox row not yet published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub message: Message,
}

/// The oldest `limit` events not yet published.
pub async fn unpublished(sql: &dyn Sql, limit: i64) -> Result<Vec<Pending>, RepoError> {
    let rows = sql
        .query(
            "SELECT id, event_id, kind, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
            params![limit],
        )
        .await?;
    rows.iter().map(pending).collect()
}

fn pending(row: &Row) -> Result<Pending, RepoError> {
    Ok(Pending {
        id: row.int(0)?,
        message: Message { event_id: row.text(1)?, kind: row.text(2)?, payload: row.text(3)? },
    })
}

/// Marks outbox row `id` published.
pub async fn mark_published(sql: &dyn Sql, id: i64, now: SystemTime) -> Result<(), RepoError> {
    sql.execute("UPDATE outbox SET published_at = ? WHERE id = ? AND published_at IS NULL", params![now, id])
        .await?;
    Ok(())
}

/// Events not yet published (for `drover jobs status` and tests).
pub async fn backlog(sql: &dyn Sql) -> Result<i64, RepoError> {
    sql.query_one("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", &[]).await?.int(0)
}

/// Claims `event_id` for `handler` inside the transaction of the handler's
/// effect: `false` when it was applied before (a redelivery), and the
/// handler then does nothing.
pub async fn handled_once(
    sql: &dyn Sql,
    handler: &str,
    event_id: &str,
    now: SystemTime,
) -> Result<bool, RepoError> {
    let insert = sql::insert_ignore(
        sql.backend(),
        "INSERT INTO processed_messages (handler, event_id, processed_at) VALUES (?, ?, ?)",
    );
    Ok(sql.execute(&insert, params![handler, event_id, now]).await? == 1)
}

/// Forgets what is no longer needed before `before`: published outbox rows
/// and processed-message records (a redelivery older than that is not
/// expected). The number of rows removed.
pub async fn prune(sql: &dyn Sql, before: SystemTime) -> Result<u64, RepoError> {
    let outbox = sql
        .execute("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?", params![before])
        .await?;
    let processed =
        sql.execute("DELETE FROM processed_messages WHERE processed_at < ?", params![before]).await?;
    Ok(outbox + processed)
}
