//! RabbitMQ as a [`Transport`] (lapin, AMQP 0-9-1), when `jobs.broker_url`
//! is an `amqp://` URL. With `jobs.broker_prefix` = `P`, every job process
//! declares (idempotently, durable):
//!
//! - exchange `P.events` (direct): the relay publishes each event there once
//!   per queue that takes it, routing key = the queue, persistent, with
//!   publisher confirms; the outbox row is marked sent only once every copy
//!   is confirmed;
//! - per queue `Q`: `P.Q`, consumed with manual acknowledgements and at most
//!   `jobs.prefetch` unacknowledged messages (per queue), whose dead-letter exchange is
//!   `P.dead`; `P.Q.retry`, where a failed message waits (its per-message
//!   expiration is the backoff delay) before its own dead-letter route takes
//!   it back to `P.Q`; `P.Q.dead`, bound to exchange `P.dead`, where a
//!   message out of attempts goes with its last error in its headers.
//!
//! A message's attempts travel in its `x-attempts` header (a redelivery
//! after its process died is not counted: see README). A failed one is
//! republished (confirmed) to its retry queue before the original is
//! acknowledged, so a crash in between repeats it, never loses it. The
//! connection is made on first use and again after any failure; messages
//! a process held unacknowledged when it died go back to their queue.
//!
//! RabbitMQ expires messages only at the head of a queue: a retry waiting
//! longer than the one behind it holds that one back until it leaves.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;

use super::{Dead, Delivery, Depth, Token, Transport, TransportError, TransportSettings};
use crate::jobs::QUEUES;
use crate::resources::events::Message;

/// How long connecting may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const ATTEMPTS: &str = "x-attempts";
const LAST_ERROR: &str = "x-last-error";
const DEAD_AT: &str = "x-dead-at";

pub struct Amqp {
    url: String,
    prefix: String,
    prefetch: u16,
    link: RefCell<Option<Rc<Link>>>,
    /// Wakes [`Transport::wait`] when a delivery arrives.
    arrived: Rc<Notify>,
}

/// One connection and what was set up on it.
struct Link {
    connection: Connection,
    /// Publishes, with confirms.
    publisher: Channel,
    /// Consumes every queue, each consumer with `prefetch` unacknowledged
    /// messages at most, once asked to.
    consumer: Channel,
    consuming: Cell<bool>,
    /// Deliveries received and not yet handed out, per queue.
    inbox: RefCell<HashMap<&'static str, VecDeque<AmqpDelivery>>>,
    /// A channel or the connection failed: reconnect before the next use.
    broken: Cell<bool>,
}

fn broker(error: impl std::fmt::Display) -> TransportError {
    TransportError::Broker(error.to_string())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(*key), value.clone());
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

fn header_int(properties: &BasicProperties, key: &str) -> i64 {
    match header(properties, key) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        Some(AMQPValue::Timestamp(n)) => i64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn header_text(properties: &BasicProperties, key: &str) -> String {
    match header(properties, key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

fn message_of(delivery: &AmqpDelivery) -> Message {
    let properties = &delivery.properties;
    Message {
        event_id: properties.message_id().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        kind: properties.kind().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        payload: String::from_utf8_lossy(&delivery.data).into_owned(),
    }
}

fn properties(message: &Message, attempts: i64, extra: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut headers = vec![(ATTEMPTS, AMQPValue::LongLongInt(attempts))];
    headers.extend(extra.iter().cloned());
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message.event_id.as_str().into())
        .with_type(message.kind.as_str().into())
        .with_headers(table(&headers))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An acknowledgement's result: lapin answers `false` when the delivery's
/// channel is closed (the broker delivers the message again).
fn settled(result: lapin::Result<bool>) -> Result<(), TransportError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err(broker("the delivery's channel closed before it was settled; the broker delivers it again"))
        }
        Err(error) => Err(broker(error)),
    }
}

/// Waits for the broker's confirmation of one publish.
async fn confirmed(confirm: lapin::PublisherConfirm) -> Result<(), TransportError> {
    match confirm.await.map_err(broker)? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(broker("a message could not be routed to its queue")),
        Confirmation::Nack(_) => Err(broker("the broker refused a message")),
        Confirmation::NotRequested => Err(broker("publisher confirms are off")),
    }
}

impl Amqp {
    pub fn new(settings: &TransportSettings) -> Self {
        Self {
            url: settings.broker_url.clone(),
            prefix: settings.prefix.clone(),
            prefetch: settings.prefetch,
            link: RefCell::new(None),
            arrived: Rc::new(Notify::new()),
        }
    }

    fn name_of(&self, queue: &str) -> String {
        format!("{}.{queue}", self.prefix)
    }

    fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The live link, connecting (and declaring the topology) if there is
    /// none or the last one failed.
    async fn link(&self) -> Result<Rc<Link>, TransportError> {
        if let Some(link) = self.link.borrow().as_ref() {
            if !link.broken.get() && link.connection.status().connected() {
                return Ok(link.clone());
            }
        }
        let old = self.link.borrow_mut().take();
        if let Some(old) = old {
            old.broken.set(true);
            let _ = old.connection.close(200, "reconnecting".into()).await;
        }
        let connect = Connection::connect(&self.url, ConnectionProperties::default());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| broker(format!("no answer from the broker within {CONNECT_TIMEOUT:?}")))?
            .map_err(broker)?;
        let publisher = connection.create_channel().await.map_err(broker)?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker)?;
        self.declare(&publisher).await?;
        let consumer = connection.create_channel().await.map_err(broker)?;
        consumer.basic_qos(self.prefetch, BasicQosOptions::default()).await.map_err(broker)?;
        tracing::info!(prefix = %self.prefix, "connected to the message broker");
        let link = Rc::new(Link {
            connection,
            publisher,
            consumer,
            consuming: Cell::new(false),
            inbox: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
        });
        *self.link.borrow_mut() = Some(link.clone());
        Ok(link)
    }

    /// Marks the link failed after `error`, so the next use reconnects.
    fn failed(&self, link: &Link, error: impl std::fmt::Display) -> TransportError {
        link.broken.set(true);
        link.inbox.borrow_mut().clear();
        broker(error)
    }

    /// The exchanges and queues (module docs); declaring again is a no-op.
    async fn declare(&self, channel: &Channel) -> Result<(), TransportError> {
        let exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for name in [self.events_exchange(), self.dead_exchange()] {
            channel
                .exchange_declare(name.into(), ExchangeKind::Direct, exchange, FieldTable::default())
                .await
                .map_err(broker)?;
        }
        for (queue, _) in QUEUES {
            let main = self.name_of(queue);
            let dead_route = [
                ("x-dead-letter-exchange", text(&self.dead_exchange())),
                ("x-dead-letter-routing-key", text(queue)),
            ];
            channel
                .queue_declare(main.as_str().into(), durable(), table(&dead_route))
                .await
                .map_err(broker)?;
            channel
                .queue_bind(
                    main.as_str().into(),
                    self.events_exchange().into(),
                    (*queue).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            let back = [
                ("x-dead-letter-exchange", text(&self.events_exchange())),
                ("x-dead-letter-routing-key", text(queue)),
            ];
            let retry = format!("{main}.retry");
            channel.queue_declare(retry.as_str().into(), durable(), table(&back)).await.map_err(broker)?;
            let dead = format!("{main}.dead");
            channel
                .queue_declare(dead.as_str().into(), durable(), FieldTable::default())
                .await
                .map_err(broker)?;
            channel
                .queue_bind(
                    dead.as_str().into(),
                    self.dead_exchange().into(),
                    (*queue).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
        }
        Ok(())
    }

    /// Starts consuming every queue on the link: each delivery goes to the
    /// link's inbox, and wakes [`Transport::wait`].
    async fn consume(&self, link: &Rc<Link>) -> Result<(), TransportError> {
        if link.consuming.replace(true) {
            return Ok(());
        }
        for (queue, _) in QUEUES {
            let tag = format!("drover-{}-{queue}", std::process::id());
            let mut consumer = link
                .consumer
                .basic_consume(
                    self.name_of(queue).into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.failed(link, e))?;
            let (weak, arrived) = (Rc::downgrade(link), self.arrived.clone());
            tokio::task::spawn_local(async move {
                while let Some(next) = consumer.next().await {
                    let Some(link) = weak.upgrade() else { return };
                    match next {
                        Ok(delivery) => {
                            link.inbox.borrow_mut().entry(queue).or_default().push_back(delivery);
                            arrived.notify_one();
                        }
                        Err(error) => {
                            tracing::warn!(%error, queue, "the message broker connection failed; reconnecting");
                            link.broken.set(true);
                            link.inbox.borrow_mut().clear();
                            arrived.notify_one();
                            return;
                        }
                    }
                }
                if let Some(link) = weak.upgrade() {
                    // Cancelled by the broker (the queue was deleted):
                    // reconnecting declares it again.
                    link.broken.set(true);
                }
            });
        }
        Ok(())
    }

    fn acker<'a>(&self, delivery: &'a Delivery) -> &'a lapin::Acker {
        match &delivery.token {
            Token::Amqp(acker) => acker,
            Token::Embedded(_) => unreachable!("a RabbitMQ transport only settles its own deliveries"),
        }
    }

    /// The delivery's channel is gone (the connection dropped): the broker
    /// delivers it again, so settling it now would only add a copy.
    fn settleable(&self, delivery: &Delivery) -> Result<(), TransportError> {
        if self.acker(delivery).usable() {
            Ok(())
        } else {
            Err(broker("the delivery's channel closed; the broker delivers it again"))
        }
    }

    /// Publishes `message` to `exchange` (with `routing_key`), confirmed,
    /// then acknowledges `delivery`: the order that never loses it.
    async fn move_to(
        &self,
        delivery: &Delivery,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Result<(), TransportError> {
        self.settleable(delivery)?;
        let link = self.link().await?;
        let confirm = link
            .publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                delivery.message.payload.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| self.failed(&link, e))?;
        confirmed(confirm).await.map_err(|e| self.failed(&link, e))?;
        settled(self.acker(delivery).ack(BasicAckOptions::default()).await)
    }

    /// A channel of its own for the commands (`status`, `dead`, `retry`),
    /// closed when done: what it took and did not acknowledge goes back.
    async fn command_channel(&self) -> Result<Channel, TransportError> {
        let link = self.link().await?;
        let channel = link.connection.create_channel().await.map_err(|e| self.failed(&link, e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker)?;
        Ok(channel)
    }
}

#[async_trait(?Send)]
impl Transport for Amqp {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn publish_is_idempotent(&self) -> bool {
        false
    }

    async fn publish(&self, message: &Message, queues: &[&'static str]) -> Result<(), TransportError> {
        let link = self.link().await?;
        let mut confirms = Vec::new();
        for queue in queues {
            let confirm = link
                .publisher
                .basic_publish(
                    self.events_exchange().into(),
                    (*queue).into(),
                    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                    message.payload.as_bytes(),
                    properties(message, 0, &[]),
                )
                .await
                .map_err(|e| self.failed(&link, e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirmed(confirm).await.map_err(|e| self.failed(&link, e))?;
        }
        Ok(())
    }

    async fn receive(&self, queue: &'static str, max: usize) -> Result<Vec<Delivery>, TransportError> {
        let link = self.link().await?;
        self.consume(&link).await?;
        let mut inbox = link.inbox.borrow_mut();
        let Some(waiting) = inbox.get_mut(queue) else { return Ok(Vec::new()) };
        let taken = waiting.len().min(max);
        Ok(waiting
            .drain(..taken)
            .map(|delivery| Delivery {
                queue,
                message: message_of(&delivery),
                attempts: header_int(&delivery.properties, ATTEMPTS) + 1,
                token: Token::Amqp(delivery.acker),
            })
            .collect())
    }

    async fn wait(&self, idle: Duration) {
        let waiting = self.link.borrow().as_ref().is_some_and(|l| l.consuming.get() && !l.broken.get());
        if !waiting {
            tokio::time::sleep(idle).await;
            return;
        }
        let _ = tokio::time::timeout(idle, self.arrived.notified()).await;
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), TransportError> {
        settled(self.acker(delivery).ack(BasicAckOptions::default()).await)
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration, error: &str) -> Result<(), TransportError> {
        let retry_queue = format!("{}.retry", self.name_of(delivery.queue));
        let properties = properties(&delivery.message, delivery.attempts, &[(LAST_ERROR, text(error))])
            .with_expiration(delay.as_millis().max(1).to_string().into());
        // The default exchange routes to the queue named by the key.
        self.move_to(delivery, "", &retry_queue, properties).await
    }

    async fn bury(&self, delivery: &Delivery, error: &str) -> Result<(), TransportError> {
        let extra = [(LAST_ERROR, text(error)), (DEAD_AT, AMQPValue::LongLongInt(now_ms()))];
        let properties = properties(&delivery.message, delivery.attempts, &extra);
        self.move_to(delivery, &self.dead_exchange(), delivery.queue, properties).await
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
        settled(self.acker(delivery).nack(requeue).await)
    }

    async fn depths(&self) -> Result<Vec<Depth>, TransportError> {
        let channel = self.command_channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let mut depths = Vec::new();
        for (queue, _) in QUEUES {
            let count = |name: String| {
                let channel = &channel;
                async move {
                    let declared = channel.queue_declare(name.into(), passive, FieldTable::default()).await;
                    declared.map(|q| i64::from(q.message_count())).map_err(broker)
                }
            };
            let ready = count(self.name_of(queue)).await?;
            let retrying = count(format!("{}.retry", self.name_of(queue))).await?;
            let dead = count(format!("{}.dead", self.name_of(queue))).await?;
            depths.push(Depth { queue: (*queue).to_owned(), ready: ready + retrying, dead });
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }

    async fn dead(&self, queue: Option<&str>, limit: usize) -> Result<Vec<Dead>, TransportError> {
        let channel = self.command_channel().await?;
        let mut found = Vec::new();
        for (name, _) in QUEUES.iter().filter(|(name, _)| queue.is_none_or(|q| q == *name)) {
            let dead_queue = format!("{}.dead", self.name_of(name));
            // Taken without acknowledging: closing the channel puts each
            // back where it was.
            while found.len() < limit {
                let got = channel
                    .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(broker)?;
                let Some(got) = got else { break };
                let properties = &got.delivery.properties;
                let message = message_of(&got.delivery);
                found.push(Dead {
                    id: message.event_id.clone(),
                    queue: (*name).to_owned(),
                    event_id: message.event_id,
                    kind: message.kind,
                    attempts: header_int(properties, ATTEMPTS),
                    last_error: header_text(properties, LAST_ERROR),
                    dead_at: SystemTime::UNIX_EPOCH
                        + Duration::from_millis(header_int(properties, DEAD_AT).max(0) as u64),
                });
            }
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(found)
    }

    async fn revive(&self, id: Option<&str>) -> Result<u64, TransportError> {
        let channel = self.command_channel().await?;
        let mut revived = 0;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        for (queue, _) in QUEUES {
            let dead_queue = format!("{}.dead", self.name_of(queue));
            // At most the messages there now: one revived and dead again
            // meanwhile (a job process is running) is not taken twice.
            let declared =
                channel.queue_declare(dead_queue.as_str().into(), passive, FieldTable::default()).await;
            let there = declared.map_err(broker)?.message_count();
            for _ in 0..there {
                let got = channel
                    .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(broker)?;
                let Some(got) = got else { break };
                let message = message_of(&got.delivery);
                if id.is_some_and(|id| id != message.event_id) {
                    // Not this one: left unacknowledged, it goes back when
                    // the channel closes.
                    continue;
                }
                let confirm = channel
                    .basic_publish(
                        self.events_exchange().into(),
                        (*queue).into(),
                        BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                        message.payload.as_bytes(),
                        properties(&message, 0, &[]),
                    )
                    .await
                    .map_err(broker)?;
                confirmed(confirm).await?;
                settled(got.delivery.acker.ack(BasicAckOptions::default()).await)?;
                revived += 1;
            }
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(revived)
    }
}
