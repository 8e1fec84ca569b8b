//! Notifications, stored: one implementation for every backend.

use std::time::SystemTime;

use super::Notification;
use crate::domain::UserId;
use crate::params;
use crate::repo::sql::{Row, Sql};
use crate::repo::RepoError;

pub async fn insert(
    sql: &dyn Sql,
    user: UserId,
    kind: &str,
    message: &str,
    event_id: &str,
    now: SystemTime,
) -> Result<(), RepoError> {
    sql.execute(
        "INSERT INTO notifications (user_id, kind, message, event_id, created_at) VALUES (?, ?, ?, ?, ?)",
        params![user.0, kind, message, event_id, now],
    )
    .await?;
    Ok(())
}

/// A user's notifications, newest first, before id `before`.
pub async fn list(
    sql: &dyn Sql,
    user: UserId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Notification>, RepoError> {
    let rows = sql
        .query(
            "SELECT id, user_id, kind, message, created_at FROM notifications \
             WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            params![user.0, before.unwrap_or(i64::MAX), limit],
        )
        .await?;
    rows.iter().map(notification).collect()
}

fn notification(row: &Row) -> Result<Notification, RepoError> {
    Ok(Notification {
        id: row.int(0)?,
        user: UserId(row.int(1)?),
        kind: row.text(2)?,
        message: row.text(3)?,
        created_at: row.time(4)?,
    })
}
