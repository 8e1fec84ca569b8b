//! The outbox relay: publishes events the services wrote to the outbox,
//! oldest first, and marks each sent only after the queue has it. A crash
//! between the two publishes it again, which the queue ignores (one row
//! per event and queue); nothing is ever lost.

use std::time::SystemTime;

use crate::repo::sql::Sql;
use crate::repo::RepoError;
use crate::resources::events;

/// Events published per round.
const BATCH: i64 = 100;

/// Publishes up to one batch of the outbox; how many events it published.
pub async fn run_once(sql: &dyn Sql, now: SystemTime) -> Result<usize, RepoError> {
    let pending = events::unpublished(sql, BATCH).await?;
    for event in &pending {
        for queue in super::queues_for(&event.message.kind) {
            super::queue::publish(sql, queue, &event.message, now).await?;
        }
        events::mark_published(sql, event.id, now).await?;
    }
    Ok(pending.len())
}
