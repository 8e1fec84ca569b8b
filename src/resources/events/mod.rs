//! Domain events and the transactional outbox. A service records an event
//! with [`record`] inside the transaction of the change that causes it, so
//! the event exists exactly when the change does; the relay
//! ([`crate::jobs`]) publishes outbox rows to the broker afterwards and
//! marks them sent only once the broker has them. Consumers may therefore
//! see an event twice (a crash between publishing and marking), never
//! zero times; handlers apply each event id once ([`handled_once`]).

mod repo;

use serde::{Deserialize, Serialize};

pub use repo::{backlog, handled_once, mark_published, prune, record, unpublished, Pending, OUTBOX_CHANNEL};

/// What happened, with what a consumer needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Event {
    #[serde(rename = "order.placed")]
    OrderPlaced { order_id: i64, user_id: i64, total_amount: i64, currency: String, lines: Vec<EventLine> },
    #[serde(rename = "order.cancelled")]
    OrderCancelled { order_id: i64, user_id: i64 },
    #[serde(rename = "order.shipped")]
    OrderShipped { order_id: i64, user_id: i64 },
    #[serde(rename = "subscription.changed")]
    SubscriptionChanged { subscription_id: i64, user_id: i64, plan: String, status: String },
    #[serde(rename = "invoice.created")]
    InvoiceCreated { invoice_id: i64, user_id: i64, number: String, total_amount: i64, currency: String },
}

/// A line of a placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub product_id: i64,
    pub quantity: i64,
}

impl Event {
    /// `order.placed`, ...: the routing key.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::OrderPlaced { .. } => "order.placed",
            Event::OrderCancelled { .. } => "order.cancelled",
            Event::OrderShipped { .. } => "order.shipped",
            Event::SubscriptionChanged { .. } => "subscription.changed",
            Event::InvoiceCreated { .. } => "invoice.created",
        }
    }

    pub fn to_json(&self) -> String {
        // Plain fields: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// An event as it travels: its id (unique, the key of idempotent handling),
/// its kind and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event_id: String,
    pub kind: String,
    pub payload: String,
}
