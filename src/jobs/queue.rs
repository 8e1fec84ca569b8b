//! The embedded queue, stored in the application database (`job_messages`):
//! one row per event and queue, claimed by a consumer for a lease, deleted
//! once handled, delayed when it failed, dead when out of attempts. The
//! SQL of claiming differs per backend: PostgreSQL skips rows other
//! consumers hold (`FOR UPDATE SKIP LOCKED`), MariaDB updates the first
//! rows in one statement (`ORDER BY id LIMIT`), SQLite has one writer.

use std::time::{Duration, SystemTime};

use rand_core::{OsRng, RngCore};

use crate::params;
use crate::repo::sql::{self, Row, Sql};
use crate::repo::{Backend, RepoError};
use crate::resources::events::Message;

/// A claimed message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub queue: String,
    pub message: Message,
    /// Including this one.
    pub attempts: i64,
    /// The claim token: only its holder may settle the message.
    claim: String,
}

pub use super::transport::{Dead, Depth};

/// Puts `message` on `queue`; a second publish of the same event (the
/// relay retried) adds nothing.
pub async fn publish(
    sql: &dyn Sql,
    queue: &str,
    message: &Message,
    now: SystemTime,
) -> Result<(), RepoError> {
    let insert = sql::insert_ignore(
        sql.backend(),
        "INSERT INTO job_messages (queue, event_id, kind, payload, available_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    sql.execute(
        &insert,
        params![queue, message.event_id.as_str(), message.kind.as_str(), message.payload.as_str(), now, now],
    )
    .await?;
    Ok(())
}

/// Claims up to `max` messages of `queue` that are due, for `lease`.
pub async fn claim(
    sql: &dyn Sql,
    queue: &str,
    max: i64,
    lease: Duration,
    now: SystemTime,
) -> Result<Vec<Delivery>, RepoError> {
    let mut token = [0u8; 16];
    OsRng.fill_bytes(&mut token);
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let due = "queue = ? AND dead_at IS NULL AND available_at <= ? AND locked_until <= ?";
    let update = match sql.backend() {
        Backend::Postgres => format!(
            "UPDATE job_messages SET claim = ?, locked_until = ?, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM job_messages WHERE {due} ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED)"
        ),
        Backend::Sqlite => format!(
            "UPDATE job_messages SET claim = ?, locked_until = ?, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM job_messages WHERE {due} ORDER BY id LIMIT ?)"
        ),
        Backend::MySql => format!(
            "UPDATE job_messages SET claim = ?, locked_until = ?, attempts = attempts + 1 \
             WHERE {due} ORDER BY id LIMIT ?"
        ),
    };
    let claimed = sql.execute(&update, params![token.as_str(), now + lease, queue, now, now, max]).await?;
    if claimed == 0 {
        return Ok(Vec::new());
    }
    let rows = sql
        .query(
            "SELECT id, queue, event_id, kind, payload, attempts FROM job_messages WHERE claim = ? ORDER BY id",
            params![token.as_str()],
        )
        .await?;
    rows.iter()
        .map(|row: &Row| {
            Ok(Delivery {
                id: row.int(0)?,
                queue: row.text(1)?,
                message: Message { event_id: row.text(2)?, kind: row.text(3)?, payload: row.text(4)? },
                attempts: row.int(5)?,
                claim: token.clone(),
            })
        })
        .collect()
}

/// Handled: gone from the queue.
pub async fn ack(sql: &dyn Sql, delivery: &Delivery) -> Result<(), RepoError> {
    sql.execute(
        "DELETE FROM job_messages WHERE id = ? AND claim = ?",
        params![delivery.id, delivery.claim.as_str()],
    )
    .await?;
    Ok(())
}

/// Failed: due again at `at`.
pub async fn retry(sql: &dyn Sql, delivery: &Delivery, at: SystemTime, error: &str) -> Result<(), RepoError> {
    sql.execute(
        "UPDATE job_messages SET available_at = ?, locked_until = 0, claim = NULL, last_error = ? \
         WHERE id = ? AND claim = ?",
        params![at, error, delivery.id, delivery.claim.as_str()],
    )
    .await?;
    Ok(())
}

/// Not handled, through no fault of its own (the process is stopping): due
/// again now, the attempt not counted.
pub async fn release(sql: &dyn Sql, delivery: &Delivery) -> Result<(), RepoError> {
    sql.execute(
        "UPDATE job_messages SET locked_until = 0, claim = NULL, attempts = attempts - 1 WHERE id = ? AND claim = ?",
        params![delivery.id, delivery.claim.as_str()],
    )
    .await?;
    Ok(())
}

/// Out of attempts, or unreadable: dead, with its last error.
pub async fn bury(sql: &dyn Sql, delivery: &Delivery, error: &str, now: SystemTime) -> Result<(), RepoError> {
    sql.execute(
        "UPDATE job_messages SET dead_at = ?, last_error = ?, claim = NULL WHERE id = ? AND claim = ?",
        params![now, error, delivery.id, delivery.claim.as_str()],
    )
    .await?;
    Ok(())
}

/// Every queue's depth.
pub async fn depths(sql: &dyn Sql) -> Result<Vec<Depth>, RepoError> {
    let rows = sql
        .query(
            "SELECT queue, COUNT(*) - COUNT(dead_at), COUNT(dead_at) FROM job_messages GROUP BY queue ORDER BY queue",
            &[],
        )
        .await?;
    rows.iter().map(|row| Ok(Depth { queue: row.text(0)?, ready: row.int(1)?, dead: row.int(2)? })).collect()
}

/// Dead messages, oldest first (of one queue, or all).
pub async fn dead(sql: &dyn Sql, queue: Option<&str>, limit: i64) -> Result<Vec<Dead>, RepoError> {
    let columns = "SELECT id, queue, event_id, kind, attempts, last_error, dead_at FROM job_messages";
    let rows = match queue {
        Some(queue) => {
            let sql_text = format!("{columns} WHERE dead_at IS NOT NULL AND queue = ? ORDER BY id LIMIT ?");
            sql.query(&sql_text, params![queue, limit]).await?
        }
        None => {
            let sql_text = format!("{columns} WHERE dead_at IS NOT NULL ORDER BY id LIMIT ?");
            sql.query(&sql_text, params![limit]).await?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(Dead {
                id: row.int(0)?.to_string(),
                queue: row.text(1)?,
                event_id: row.text(2)?,
                kind: row.text(3)?,
                attempts: row.int(4)?,
                last_error: row.opt_text(5)?.unwrap_or_default(),
                dead_at: row.time(6)?,
            })
        })
        .collect()
}

/// Revives dead message `id` (or every dead message): due now, attempts
/// from zero. The number revived.
pub async fn revive(sql: &dyn Sql, id: Option<i64>, now: SystemTime) -> Result<u64, RepoError> {
    let revive = "UPDATE job_messages SET dead_at = NULL, attempts = 0, available_at = ?, locked_until = 0, \
                  claim = NULL WHERE dead_at IS NOT NULL";
    match id {
        Some(id) => sql.execute(&format!("{revive} AND id = ?"), params![now, id]).await,
        None => sql.execute(revive, params![now]).await,
    }
}
