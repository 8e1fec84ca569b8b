//! Notifications: what a user is told about their orders and invoices (the
//! stand-in for an email). Written by the notifications job handler from
//! events ([`NotificationService::apply`]), each event once however often
//! it is delivered; read at `GET /v1/notifications`.

pub mod http;
mod repo;

use std::rc::Rc;
use std::time::SystemTime;

use crate::domain::money::{Currency, Money};
use crate::domain::time::Clock;
use crate::domain::UserId;
use crate::repo::sql;
use crate::repo::{Database, Repos};
use crate::resources::events::{self, Event};
use crate::service::{Principal, ServiceError};

/// The handler name its applied events are recorded under.
pub const HANDLER: &str = "notifications";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub user: UserId,
    /// The event kind it tells of (`order.placed`, ...).
    pub kind: String,
    pub message: String,
    pub created_at: SystemTime,
}

/// `19.99 EUR`, as the money type writes it.
fn amount(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(currency) => Money::new(minor, currency).to_string(),
        Err(_) => format!("{minor} {currency}"),
    }
}

/// The message for an event, and whom it is for; `None` for events users
/// are not told about.
fn message(event: &Event) -> Option<(i64, String)> {
    match event {
        Event::OrderPlaced { order_id, user_id, total_amount, currency, .. } => Some((
            *user_id,
            format!("Your order {order_id} was placed: {}.", amount(*total_amount, currency)),
        )),
        Event::OrderShipped { order_id, user_id } => {
            Some((*user_id, format!("Your order {order_id} has shipped.")))
        }
        Event::OrderCancelled { order_id, user_id } => {
            Some((*user_id, format!("Your order {order_id} was cancelled.")))
        }
        Event::InvoiceCreated { number, user_id, total_amount, currency, .. } => {
            Some((*user_id, format!("Invoice {number} was issued: {}.", amount(*total_amount, currency))))
        }
        Event::SubscriptionChanged { .. } => None,
    }
}

#[derive(Clone)]
pub struct NotificationService {
    db: Rc<Database>,
    clock: Rc<dyn Clock>,
}

impl NotificationService {
    pub fn new(db: Rc<Database>, clock: Rc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Tells the user about `event` (id `event_id`), once: a redelivered
    /// event changes nothing. Returns whether a notification was written.
    pub async fn apply(&self, event_id: &str, event: &Event) -> Result<bool, ServiceError> {
        let Some((user, text)) = message(event) else { return Ok(false) };
        let now = sql::from_millis(sql::millis(self.clock.now()));
        let kind = event.kind();
        self.db
            .transaction(|repos| {
                let text = text.clone();
                Box::pin(async move {
                    let sql = repos.sql();
                    if !events::handled_once(&*sql, HANDLER, event_id, now).await? {
                        return Ok(false);
                    }
                    repo::insert(&*sql, UserId(user), kind, &text, event_id, now).await?;
                    Ok::<_, ServiceError>(true)
                })
            })
            .await
    }

    /// The caller's notifications, newest first: a page of at most `limit`
    /// before id `before`, and where the next page starts.
    pub async fn list(
        &self,
        by: Principal,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<Notification>, Option<i64>), ServiceError> {
        let mut page = repo::list(&*self.db.sql(), by.user, before, limit + 1).await?;
        let more = page.len() as i64 > limit;
        page.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more { page.last().map(|n| n.id) } else { None };
        Ok((page, next))
    }
}
