//! Jobs: the same services driven by events instead of requests. A job
//! process (`drover jobs work`) relays the transactional outbox to the
//! queue ([`relay`]) and consumes the queue ([`consumer`]), calling the
//! services the HTTP routes call. Delivery is at least once; every handler
//! applies an event id once (`events::handled_once`, in the transaction of
//! its effect). A failure is retried with exponential backoff and jitter up
//! to `jobs.max_attempts`, then the message is dead, with its last error,
//! until `drover jobs retry` revives it.
//!
//! The queue is embedded in the application database ([`queue`]): rows
//! claimed with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so any
//! number of job processes share it and a process that dies mid-message
//! only delays it until its lease runs out.

pub mod consumer;
pub mod lease;
pub mod process;
pub mod queue;
pub mod relay;
pub mod schedule;
pub mod transport;

use crate::resources::events::Event;

/// Every queue, and the events each receives.
pub const QUEUES: &[(&str, &[&str])] = &[
    ("notifications", &["order.placed", "order.shipped", "order.cancelled", "invoice.created"]),
    ("sales", &["order.placed"]),
];

/// The queues an event of `kind` goes to (none: it is only marked sent).
pub fn queues_for(kind: &str) -> impl Iterator<Item = &'static str> + '_ {
    QUEUES.iter().filter(move |(_, kinds)| kinds.contains(&kind)).map(|(queue, _)| *queue)
}

/// What a handler made of a message.
#[derive(Debug)]
pub enum Outcome {
    /// Applied now, or before (a redelivery).
    Done,
    /// Failed; may succeed later (the database was down, a lock timed out).
    Retry(String),
    /// Can never succeed (an event this build cannot read): dead at once.
    Poison(String),
}

/// Calls the service that handles `queue`'s messages.
pub async fn handle(services: &crate::app::Services, queue: &str, event_id: &str, payload: &str) -> Outcome {
    let event = match Event::from_json(payload) {
        Ok(event) => event,
        Err(error) => return Outcome::Poison(format!("unreadable event: {error}")),
    };
    let result = match queue {
        "notifications" => services.notifications.apply(event_id, &event).await.map(drop),
        "sales" => match &event {
            Event::OrderPlaced { lines, .. } => {
                let lines: Vec<_> = lines
                    .iter()
                    .map(|l| (crate::resources::products::ProductId(l.product_id), l.quantity))
                    .collect();
                services.products.count_sales(event_id, &lines).await
            }
            _ => Ok(()),
        },
        other => return Outcome::Poison(format!("no handler for queue {other}")),
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(error) => Outcome::Retry(error.to_string()),
    }
}
