//! Where queue messages live between the relay and the handlers: one trait,
//! two transports, chosen by `jobs.broker_url`. The embedded queue
//! ([`embedded`], the default) keeps them in the application database, so
//! the two-command start needs nothing else; RabbitMQ ([`amqp`], an
//! `amqp://` URL) keeps them in durable queues, with publisher confirms,
//! manual acknowledgements under a prefetch limit, delayed retries and a
//! dead-letter exchange.
//!
//! Both deliver at least once: the relay marks an event sent only after the
//! transport has it, and a message is acknowledged only after its handler's
//! transaction committed. Handlers apply an event once however often it
//! arrives (`events::handled_once`).

pub mod amqp;
pub mod embedded;

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::repo::{Database, RepoError};
use crate::resources::events::Message;

/// What a transport can fail with: the database's errors, or the broker's
/// (unreachable, refused), which are waited out like a database outage.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("message broker: {0}")]
    Broker(String),
}

/// A message taken from a queue, to settle with [`Transport::ack`],
/// [`Transport::retry`], [`Transport::bury`] or [`Transport::release`].
pub struct Delivery {
    pub queue: &'static str,
    pub message: Message,
    /// Deliveries so far, this one included.
    pub attempts: i64,
    token: Token,
}

/// How the transport finds the message again to settle it.
enum Token {
    Embedded(crate::jobs::queue::Delivery),
    Amqp(lapin::Acker),
}

/// A dead message, for `drover jobs dead`.
#[derive(Debug, Clone)]
pub struct Dead {
    /// What `drover jobs retry` takes: the row id (embedded), or the event
    /// id (RabbitMQ).
    pub id: String,
    pub queue: String,
    pub event_id: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: String,
    pub dead_at: SystemTime,
}

/// A queue's depth: messages waiting (and, embedded, being handled), and
/// dead ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub queue: String,
    pub ready: i64,
    pub dead: i64,
}

#[async_trait(?Send)]
pub trait Transport {
    /// Which transport, for logs and `drover jobs status`.
    fn name(&self) -> &'static str;

    /// Whether publishing an event twice stores it once (the embedded
    /// queue's rows are unique per event and queue). When it does not, one
    /// relay at a time publishes, so that job processes do not all publish
    /// the same events.
    fn publish_is_idempotent(&self) -> bool;

    /// Puts `message` on each of `queues`; returns once the transport has
    /// it for good (committed, or confirmed by the broker). Publishing the
    /// same event twice may deliver it twice; handlers apply it once.
    async fn publish(&self, message: &Message, queues: &[&'static str]) -> Result<(), TransportError>;

    /// Up to `max` messages of `queue` that are due now; none waits.
    async fn receive(&self, queue: &'static str, max: usize) -> Result<Vec<Delivery>, TransportError>;

    /// Waits until a message may be there to receive, at most `idle`.
    async fn wait(&self, idle: Duration);

    /// Handled: gone.
    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError>;

    /// Failed: delivered again after `delay`, counted as an attempt.
    async fn retry(&self, delivery: &Delivery, delay: Duration, error: &str) -> Result<(), TransportError>;

    /// Dead (out of attempts, or unreadable), with its last error.
    async fn bury(&self, delivery: &Delivery, error: &str) -> Result<(), TransportError>;

    /// Not begun (the process is stopping): due again now, the attempt not
    /// counted.
    async fn release(&self, delivery: &Delivery) -> Result<(), TransportError>;

    /// Every queue's depth.
    async fn depths(&self) -> Result<Vec<Depth>, TransportError>;

    /// Dead messages, oldest first (of one queue, or all), at most `limit`.
    async fn dead(&self, queue: Option<&str>, limit: usize) -> Result<Vec<Dead>, TransportError>;

    /// Revives dead message `id` (or every one): due now, attempts from
    /// zero. How many were revived.
    async fn revive(&self, id: Option<&str>) -> Result<u64, TransportError>;
}

/// How a transport is set up (`[jobs]`).
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Empty: the embedded queue; `amqp://...`: RabbitMQ.
    pub broker_url: String,
    /// RabbitMQ: names of the exchanges and queues start with this.
    pub prefix: String,
    /// RabbitMQ: unacknowledged messages a consumer holds at once, per queue.
    pub prefetch: u16,
    /// Embedded: how long a claim holds before another consumer may take it.
    pub lease: Duration,
}

/// The transport `settings` names, over `db` for the embedded queue.
/// RabbitMQ is connected on first use (and again after a failure), so a
/// broker that is down delays messages, never the start.
pub fn open(settings: &TransportSettings, db: Rc<Database>) -> Rc<dyn Transport> {
    if settings.broker_url.is_empty() {
        Rc::new(embedded::Embedded::new(db, settings.lease))
    } else {
        Rc::new(amqp::Amqp::new(settings))
    }
}
