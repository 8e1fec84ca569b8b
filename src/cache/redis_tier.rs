//! The Redis tier: one multiplexed connection per worker (the `redis`
//! crate's `ConnectionManager`, which pipelines concurrent commands and
//! reconnects by itself), a timeout on every call, a circuit breaker, and a
//! pub/sub subscription for invalidations from other hosts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::time::Instant;
use tracing::{info, warn};

use super::CacheSettings;

/// Pause between attempts to (re)connect or resubscribe while Redis is
/// away.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Deletes that failed (Redis was down) and must be retried once it is back,
/// or a value written before the outage could be served after it. Bounded:
/// past this, the oldest are dropped and the TTL bounds the staleness.
const MAX_PENDING_DELETES: usize = 10_000;

/// A Redis call was not made or did not succeed; the caller goes to the
/// database instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped;

/// Redis as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisStatus {
    NotConfigured,
    Up,
    /// Down, slow or not connected yet: requests read the database.
    Degraded,
}

impl RedisStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisStatus::NotConfigured => "not_configured",
            RedisStatus::Up => "up",
            RedisStatus::Degraded => "degraded",
        }
    }
}

/// What the subscription reports.
pub enum Event {
    Invalidate(String),
    /// (Re)subscribed: messages sent while we were not may be lost.
    Resubscribed,
}

/// Stops calling Redis for a while after repeated failures, so an outage
/// costs each request nothing rather than a timeout.
struct Breaker {
    failures: Cell<u32>,
    open_until: Cell<Option<Instant>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    fn allow(&self) -> bool {
        // Past the cooldown, calls go through again; the next failure
        // reopens the circuit at once (half-open).
        self.open_until.get().is_none_or(|until| Instant::now() >= until)
    }

    fn success(&self) {
        if self.open_until.take().is_some() {
            info!("Redis is answering again; cache tier restored");
        }
        self.failures.set(0);
    }

    fn failure(&self) {
        let failures = self.failures.get() + 1;
        self.failures.set(failures);
        if failures >= self.threshold {
            if self.open_until.get().is_none() {
                warn!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "Redis failing; reading the database directly for a while"
                );
            }
            self.open_until.set(Some(Instant::now() + self.cooldown));
        }
    }

    fn is_open(&self) -> bool {
        self.open_until.get().is_some()
    }
}

#[derive(Clone)]
pub struct RedisTier {
    client: redis::Client,
    connection: Rc<RefCell<Option<ConnectionManager>>>,
    breaker: Rc<Breaker>,
    timeout: Duration,
    pending_deletes: Rc<RefCell<VecDeque<String>>>,
}

impl RedisTier {
    /// `None` (logged) for a URL the client cannot use.
    pub fn new(url: &str, settings: &CacheSettings) -> Option<Self> {
        match redis::Client::open(url) {
            Ok(client) => Some(Self {
                client,
                connection: Rc::new(RefCell::new(None)),
                breaker: Rc::new(Breaker {
                    failures: Cell::new(0),
                    open_until: Cell::new(None),
                    threshold: settings.breaker_threshold,
                    cooldown: settings.breaker_cooldown,
                }),
                timeout: settings.redis_timeout,
                pending_deletes: Rc::new(RefCell::new(VecDeque::new())),
            }),
            Err(error) => {
                warn!(%error, url = %crate::repo::redact_url(url), "invalid Redis URL; caching in-process only");
                None
            }
        }
    }

    /// Starts the background tasks: connecting (and retrying deletes that
    /// failed) and the invalidation subscription.
    pub fn start(&self, channel: &'static str, on_event: impl Fn(Event) + 'static) {
        let tier = self.clone();
        tokio::task::spawn_local(async move { tier.maintain().await });
        let client = self.client.clone();
        tokio::task::spawn_local(subscribe(client, channel, on_event));
    }

    pub fn status(&self) -> RedisStatus {
        if self.connection.borrow().is_some() && !self.breaker.is_open() {
            RedisStatus::Up
        } else {
            RedisStatus::Degraded
        }
    }

    /// Runs one command with the timeout and the breaker.
    async fn call<T, F, Fut>(&self, command: F) -> Result<T, Skipped>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(Skipped);
        }
        let Some(connection) = self.connection.borrow().clone() else {
            return Err(Skipped);
        };
        match tokio::time::timeout(self.timeout, command(connection)).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "Redis call failed");
                self.breaker.failure();
                Err(Skipped)
            }
            Err(_) => {
                tracing::debug!(timeout_ms = self.timeout.as_millis() as u64, "Redis call timed out");
                self.breaker.failure();
                Err(Skipped)
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Skipped> {
        let bytes: Option<Vec<u8>> = self.call(|mut c| async move { c.get(key).await }).await?;
        Ok(bytes.map(Bytes::from))
    }

    /// Stores in the background: the reader that loaded the value does not
    /// wait for Redis.
    pub fn set_later(&self, key: &str, bytes: Bytes, ttl: Duration) {
        let (tier, key) = (self.clone(), key.to_owned());
        tokio::task::spawn_local(async move {
            let seconds = ttl.as_secs().max(1);
            let _ = tier
                .call(|mut c| async move { c.set_ex::<_, _, ()>(&key, bytes.as_ref(), seconds).await })
                .await;
        });
    }

    /// Deletes the key and publishes it for other hosts, in one round trip.
    /// A delete that cannot be made now is queued and retried when Redis is
    /// back.
    pub async fn delete_and_publish(&self, key: &str, channel: &str) {
        let result = self
            .call(|mut c| async move {
                redis::pipe().del(key).ignore().publish(channel, key).ignore().query_async::<()>(&mut c).await
            })
            .await;
        if result.is_err() {
            let mut pending = self.pending_deletes.borrow_mut();
            if pending.len() >= MAX_PENDING_DELETES {
                pending.pop_front();
            }
            pending.push_back(key.to_owned());
        }
    }

    async fn maintain(&self) {
        loop {
            if self.connection.borrow().is_none() {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(RECONNECT_PAUSE)
                    .set_response_timeout(self.timeout.max(Duration::from_millis(100)));
                match self.client.get_connection_manager_with_config(config).await {
                    Ok(connection) => {
                        info!("connected to Redis");
                        *self.connection.borrow_mut() = Some(connection);
                    }
                    Err(error) => tracing::debug!(%error, "cannot connect to Redis yet"),
                }
            }
            self.retry_deletes().await;
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }

    async fn retry_deletes(&self) {
        loop {
            let Some(key) = self.pending_deletes.borrow_mut().pop_front() else { return };
            let done = self.call(|mut c| async move { c.del::<_, ()>(&key).await.map(|()| key) }).await;
            if let Err(Skipped) = done {
                // Still down: put it back and try on the next round.
                return;
            }
        }
    }
}

/// Keeps a subscription to `channel` for the worker's whole life.
async fn subscribe(client: redis::Client, channel: &'static str, on_event: impl Fn(Event)) {
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await {
            if pubsub.subscribe(channel).await.is_ok() {
                on_event(Event::Resubscribed);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(key) = message.get_payload::<String>() {
                        on_event(Event::Invalidate(key));
                    }
                }
                warn!("Redis invalidation subscription lost; resubscribing");
            }
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
