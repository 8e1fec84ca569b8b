//! The embedded queue as a [`Transport`]: messages in the application
//! database's `job_messages` (see [`crate::jobs::queue`] for its SQL).

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Dead, Delivery, Depth, Token, Transport, TransportError};
use crate::jobs::queue;
use crate::repo::sql;
use crate::repo::{Database, Repos};
use crate::resources::events::Message;

pub struct Embedded {
    db: Rc<Database>,
    lease: Duration,
}

impl Embedded {
    pub fn new(db: Rc<Database>, lease: Duration) -> Self {
        Self { db, lease }
    }
}

/// "Now", as stored: to the millisecond.
fn now() -> SystemTime {
    sql::from_millis(sql::millis(SystemTime::now()))
}

fn claim(delivery: &Delivery) -> &queue::Delivery {
    match &delivery.token {
        Token::Embedded(claim) => claim,
        Token::Amqp(_) => unreachable!("an embedded transport only settles its own deliveries"),
    }
}

#[async_trait(?Send)]
impl Transport for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn publish_is_idempotent(&self) -> bool {
        true
    }

    async fn publish(&self, message: &Message, queues: &[&'static str]) -> Result<(), TransportError> {
        let sql = self.db.sql();
        for queue in queues {
            queue::publish(&*sql, queue, message, now()).await?;
        }
        Ok(())
    }

    async fn receive(&self, name: &'static str, max: usize) -> Result<Vec<Delivery>, TransportError> {
        let claimed = queue::claim(&*self.db.sql(), name, max as i64, self.lease, now()).await?;
        Ok(claimed
            .into_iter()
            .map(|claim| Delivery {
                queue: name,
                message: claim.message.clone(),
                attempts: claim.attempts,
                token: Token::Embedded(claim),
            })
            .collect())
    }

    async fn wait(&self, idle: Duration) {
        tokio::time::sleep(idle).await;
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        Ok(queue::ack(&*self.db.sql(), claim(delivery)).await?)
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration, error: &str) -> Result<(), TransportError> {
        Ok(queue::retry(&*self.db.sql(), claim(delivery), now() + delay, error).await?)
    }

    async fn bury(&self, delivery: &Delivery, error: &str) -> Result<(), TransportError> {
        Ok(queue::bury(&*self.db.sql(), claim(delivery), error, now()).await?)
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), TransportError> {
        Ok(queue::release(&*self.db.sql(), claim(delivery)).await?)
    }

    async fn depths(&self) -> Result<Vec<Depth>, TransportError> {
        Ok(queue::depths(&*self.db.sql()).await?)
    }

    async fn dead(&self, queue_name: Option<&str>, limit: usize) -> Result<Vec<Dead>, TransportError> {
        Ok(queue::dead(&*self.db.sql(), queue_name, limit as i64).await?)
    }

    async fn revive(&self, id: Option<&str>) -> Result<u64, TransportError> {
        let id = match id {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                TransportError::Broker(format!("{text:?} is not a dead message id (a number)"))
            })?),
        };
        Ok(queue::revive(&*self.db.sql(), id, now()).await?)
    }
}
