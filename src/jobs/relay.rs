//! The outbox relay: publishes events the services wrote to the outbox,
//! oldest first, to the queues that take them, and marks each sent only
//! after the transport has it (committed, or confirmed by the broker). A
//! crash between the two publishes it again, which handlers apply once;
//! nothing is ever lost. A broker that is down leaves events in the outbox
//! until it is back; requests that write them never wait for it.

use std::time::{Duration, SystemTime};

use super::lease;
use super::transport::{Transport, TransportError};
use crate::repo::sql::Sql;
use crate::resources::events;

/// Events published per round.
const BATCH: i64 = 100;

/// The lease that lets one relay at a time publish to a transport that
/// would store an event twice; past it (its holder died), another takes
/// over.
const RELAY: &str = "outbox.relay";
const RELAY_LEASE: Duration = Duration::from_secs(10);

/// Publishes up to one batch of the outbox; how many events it published.
pub async fn run_once(
    sql: &dyn Sql,
    transport: &dyn Transport,
    now: SystemTime,
) -> Result<usize, TransportError> {
    if transport.publish_is_idempotent() {
        return publish_batch(sql, transport, now).await;
    }
    lease::ensure(sql, RELAY).await?;
    let token = super::schedule::token();
    if !lease::claim_now(sql, RELAY, &token, now, now + RELAY_LEASE).await? {
        // Another process is relaying.
        return Ok(0);
    }
    // Within the lease, with room to spare: past it another relay may
    // publish the same events. A batch cut short leaves the rest unmarked,
    // for the next round.
    let published = tokio::time::timeout(RELAY_LEASE / 2, publish_batch(sql, transport, now)).await;
    lease::release(sql, RELAY, &token).await?;
    match published {
        Ok(published) => published,
        Err(_) => Err(TransportError::Broker(format!("publishing took longer than {:?}", RELAY_LEASE / 2))),
    }
}

async fn publish_batch(
    sql: &dyn Sql,
    transport: &dyn Transport,
    now: SystemTime,
) -> Result<usize, TransportError> {
    let pending = events::unpublished(sql, BATCH).await?;
    for event in &pending {
        let queues: Vec<&'static str> = super::queues_for(&event.message.kind).collect();
        transport.publish(&event.message, &queues).await?;
        events::mark_published(sql, event.id, now).await?;
    }
    Ok(pending.len())
}
