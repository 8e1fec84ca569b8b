//! The Redis tier: one multiplexed connection per worker (the `redis`
//! crate's `ConnectionManager`, which pipelines concurrent commands and
//! reconnects by itself), a timeout on every call, a circuit breaker, the
//! deletes still owed to Redis after a failure, and a pub/sub subscription
//! for invalidations from other hosts.
//!
//! A delete that fails (Redis down, slow, or the breaker open) leaves a
//! value in Redis that may be older than the database. The key stays in
//! [`PendingDeletes`] until a delete sent after it was queued has
//! succeeded, and until then reads of it skip Redis. Nothing is retried,
//! and so nothing dequeued, while the breaker is open. Past
//! [`MAX_PENDING_DELETES`] keys the queue gives way to one flush of every
//! drover key, and Redis serves no reads until that flush has completed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
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

/// How often owed deletes are retried while there are any. An attempt
/// costs nothing while the breaker is open, and once it lets calls through
/// again this bounds how long other hosts (which cannot know what this one
/// owes) may read a stale value from Redis.
const PENDING_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Owed deletes sent in one round trip (one `DEL` of many keys and their
/// `PUBLISH`es): small enough to fit well inside `redis_timeout`.
const RETRY_BATCH: usize = 100;

/// Keys a flush asks `SCAN` for per step; each step is one call bounded by
/// `redis_timeout`, so the page stays small.
const SCAN_COUNT: usize = 500;

/// Distinct keys whose Redis delete is owed. A write must never leave a
/// stale value readable, so past this the queue is not trimmed: it is
/// replaced by one flush of every drover key (see [`PendingDeletes::queue`]).
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

    /// Counts a failure; true when it opens (or reopens) the circuit.
    fn failure(&self) -> bool {
        let failures = self.failures.get() + 1;
        self.failures.set(failures);
        let opens = failures >= self.threshold;
        if opens {
            if self.open_until.get().is_none() {
                warn!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "Redis failing; reading the database directly for a while"
                );
            }
            self.open_until.set(Some(Instant::now() + self.cooldown));
        }
        opens
    }

    fn is_open(&self) -> bool {
        self.open_until.get().is_some()
    }
}

/// Keys whose Redis copy may be older than the database: a write changed
/// them and no delete sent since has succeeded. A pure state machine; the
/// tier performs the deletes it asks for.
struct PendingDeletes {
    /// Each key with the sequence number of its latest queuing. A delete
    /// settles a key only if it was sent after that: a key written again
    /// while its delete was in flight may have been cached anew in between.
    keys: HashMap<String, u64>,
    /// The sequence number the next queuing gets.
    next_seq: u64,
    /// How many keys may be tracked one by one.
    capacity: usize,
    /// Times the queue overflowed, and how many of those a completed flush
    /// covers. While they differ, any drover value in Redis may be stale.
    overflows: u64,
    flushed: u64,
}

/// Owed deletes to send together.
struct Batch {
    keys: Vec<String>,
    /// Every queuing numbered below this happened before the batch was
    /// sent, so its success settles them.
    mark: u64,
}

impl PendingDeletes {
    fn new(capacity: usize) -> Self {
        Self { keys: HashMap::new(), next_seq: 0, capacity, overflows: 0, flushed: 0 }
    }

    /// Owes a delete of `key` (once, however often it is queued). Says
    /// whether the queue overflowed.
    fn queue(&mut self, key: &str) -> bool {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(at) = self.keys.get_mut(key) {
            *at = seq;
            return false;
        }
        if self.keys.len() >= self.capacity {
            // Dropping a key would let its stale value be read once Redis
            // is back. Instead every key is given up at once for one flush
            // of all drover keys, started after this point; until it has
            // completed, no value is read from Redis. The TTL is no bound
            // worth relying on: a stale value could outlive the write by
            // all of it.
            self.keys.clear();
            self.overflows += 1;
            return true;
        }
        self.keys.insert(key.to_owned(), seq);
        false
    }

    /// Whether Redis' value for `key` may be older than the database.
    fn may_be_stale(&self, key: &str) -> bool {
        self.flush_needed().is_some() || self.keys.contains_key(key)
    }

    /// `Some(overflows)` when a flush is owed: the count a flush that
    /// starts now covers, for [`Self::flush_done`].
    fn flush_needed(&self) -> Option<u64> {
        (self.flushed < self.overflows).then_some(self.overflows)
    }

    /// A flush that started when [`Self::flush_needed`] said `covers` has
    /// completed. Overflows since then still need one.
    fn flush_done(&mut self, covers: u64) {
        self.flushed = self.flushed.max(covers);
    }

    /// What a delete sent now settles (see [`Self::settle`]).
    fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max` owed deletes, left in the queue until settled.
    fn batch(&self, max: usize) -> Option<Batch> {
        let keys: Vec<String> = self.keys.keys().take(max).cloned().collect();
        (!keys.is_empty()).then(|| Batch { keys, mark: self.mark() })
    }

    /// A delete of `keys` sent at `mark` succeeded: each is settled unless
    /// it was queued again after the delete was sent.
    fn settle<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, mark: u64) {
        for key in keys {
            if self.keys.get(key).is_some_and(|&seq| seq < mark) {
                self.keys.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.flush_needed().is_none()
    }
}

#[derive(Clone)]
pub struct RedisTier {
    client: redis::Client,
    connection: Rc<RefCell<Option<ConnectionManager>>>,
    breaker: Rc<Breaker>,
    timeout: Duration,
    /// The Redis channel on which deletes are published to other hosts.
    channel: &'static str,
    /// A `SCAN` pattern matching every key drover writes, for a flush.
    key_pattern: &'static str,
    /// Deletes this worker owes Redis: its own failed ones and those other
    /// workers of this host reported. Reads of these keys skip Redis.
    pending: Rc<RefCell<PendingDeletes>>,
}

impl RedisTier {
    /// `None` (logged) for a URL the client cannot use. Deletes are
    /// published on `channel`; `key_pattern` matches every key the cache
    /// writes.
    pub fn new(
        url: &str,
        settings: &CacheSettings,
        channel: &'static str,
        key_pattern: &'static str,
    ) -> Option<Self> {
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
                channel,
                key_pattern,
                pending: Rc::new(RefCell::new(PendingDeletes::new(MAX_PENDING_DELETES))),
            }),
            Err(error) => {
                warn!(%error, url = %crate::repo::redact_url(url), "invalid Redis URL; caching in-process only");
                None
            }
        }
    }

    /// Starts the background tasks: connecting (and retrying deletes that
    /// failed) and the invalidation subscription.
    pub fn start(&self, on_event: impl Fn(Event) + 'static) {
        let tier = self.clone();
        tokio::task::spawn_local(async move { tier.maintain().await });
        let client = self.client.clone();
        tokio::task::spawn_local(subscribe(client, self.channel, on_event));
    }

    pub fn status(&self) -> RedisStatus {
        // Owing a flush, Redis serves no reads: requests read the database.
        if self.connection.borrow().is_some()
            && !self.breaker.is_open()
            && self.pending.borrow().flush_needed().is_none()
        {
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
                self.failed();
                Err(Skipped)
            }
            Err(_) => {
                tracing::debug!(timeout_ms = self.timeout.as_millis() as u64, "Redis call timed out");
                self.failed();
                Err(Skipped)
            }
        }
    }

    /// A call failed. When that opens the circuit, the connection is
    /// dropped and `maintain` makes a new one: a `ConnectionManager` whose
    /// own reconnection failed while Redis was down can stay broken after
    /// it is back (seen here: one worker's calls failed for 20 s after a
    /// Redis restart while the other's recovered; redis-rs issues #984,
    /// #1556), and a fresh one costs one connect per cooldown at most.
    fn failed(&self) {
        if self.breaker.failure() {
            self.connection.borrow_mut().take();
        }
    }

    /// The value Redis holds for `key`. Skipped, without a call, while a
    /// delete of it is owed: that value may predate a write.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Skipped> {
        if self.pending.borrow().may_be_stale(key) {
            return Err(Skipped);
        }
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
    /// A delete that cannot be made now is owed (see [`Self::queue_delete`])
    /// and `Skipped` is returned, so the caller can tell this host's other
    /// workers that they owe it too.
    pub async fn delete_and_publish(&self, key: &str) -> Result<(), Skipped> {
        let mark = self.pending.borrow().mark();
        let channel = self.channel;
        let result = self
            .call(|mut c| async move {
                redis::pipe().del(key).ignore().publish(channel, key).ignore().query_async::<()>(&mut c).await
            })
            .await;
        match result {
            // This delete also pays any earlier one owed for the key.
            Ok(()) => self.pending.borrow_mut().settle([key], mark),
            Err(Skipped) => self.queue_delete(key),
        }
        result
    }

    /// Owes a delete of `key`, made once Redis answers again; until then
    /// reads of `key` skip Redis.
    pub fn queue_delete(&self, key: &str) {
        if self.pending.borrow_mut().queue(key) {
            warn!(
                limit = MAX_PENDING_DELETES,
                pattern = self.key_pattern,
                "too many Redis deletes owed; Redis serves no reads until drover's keys there are flushed"
            );
        }
    }

    async fn maintain(&self) {
        loop {
            if self.connection.borrow().is_none() {
                self.connect().await;
            }
            self.retry_deletes().await;
            let pause = if self.pending.borrow().is_empty() || self.connection.borrow().is_none() {
                RECONNECT_PAUSE
            } else {
                PENDING_RETRY_PAUSE
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn connect(&self) {
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

    /// Makes the owed deletes (and the flush, if one is owed) until Redis
    /// fails or none is left. A key leaves the queue only once its delete
    /// has succeeded.
    async fn retry_deletes(&self) {
        if self.pending.borrow().is_empty() {
            return;
        }
        // While the breaker is open every call would be skipped: nothing is
        // attempted, and the queue stays as it is.
        if !self.breaker.allow() {
            return;
        }
        let flush = self.pending.borrow().flush_needed();
        if let Some(covers) = flush {
            if self.flush().await.is_err() {
                return;
            }
            self.pending.borrow_mut().flush_done(covers);
            info!(pattern = self.key_pattern, "flushed drover's keys from Redis; reading from it again");
        }
        let mut settled = 0;
        loop {
            let Some(batch) = self.pending.borrow().batch(RETRY_BATCH) else { break };
            let (keys, channel) = (&batch.keys, self.channel);
            let done = self
                .call(|mut c| async move {
                    let mut pipe = redis::pipe();
                    pipe.del(keys).ignore();
                    // Other hosts may have cached the old value from Redis
                    // since it came back.
                    for key in keys {
                        pipe.publish(channel, key).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                })
                .await;
            if done.is_err() {
                // Still failing: everything stays queued for the next round.
                return;
            }
            self.pending.borrow_mut().settle(batch.keys.iter().map(String::as_str), batch.mark);
            settled += batch.keys.len();
        }
        if settled > 0 {
            info!(deletes = settled, "made the Redis deletes owed since it failed");
        }
    }

    /// Deletes every key matching `key_pattern`, a page at a time. Any
    /// failure abandons it; the next round starts it again from the top.
    async fn flush(&self) -> Result<(), Skipped> {
        let pattern = self.key_pattern;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let keys = &keys;
                self.call(|mut c| async move { c.unlink::<_, ()>(keys).await }).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const CHANNEL: &str = "drover:cache:invalidate";
    const PATTERN: &str = "drover:*";

    #[test]
    fn an_owed_delete_stays_queued_until_one_sent_after_it_succeeds() {
        let mut pending = PendingDeletes::new(100);
        pending.queue("drover:a");
        pending.queue("drover:b");
        pending.queue("drover:a");
        assert_eq!(pending.len(), 2, "one entry per key");

        // A retry that fails settles nothing: both keys stay, and stay
        // unreadable from Redis.
        let failed = pending.batch(10).unwrap();
        drop(failed);
        assert!(pending.may_be_stale("drover:a") && pending.may_be_stale("drover:b"));
        assert!(!pending.may_be_stale("drover:c"));

        // `a` is written again while its delete is in flight: that delete
        // may have run before the new value was cached, so `a` stays.
        let batch = pending.batch(10).unwrap();
        pending.queue("drover:a");
        pending.settle(batch.keys.iter().map(String::as_str), batch.mark);
        assert!(pending.may_be_stale("drover:a"));
        assert!(!pending.may_be_stale("drover:b"));

        let batch = pending.batch(10).unwrap();
        assert_eq!(batch.keys, ["drover:a"]);
        pending.settle(batch.keys.iter().map(String::as_str), batch.mark);
        assert!(pending.is_empty());
        assert!(pending.batch(10).is_none());
    }

    #[test]
    fn an_overflow_distrusts_every_key_until_a_flush_started_after_it_completes() {
        let mut pending = PendingDeletes::new(2);
        assert!(!pending.queue("drover:a"));
        assert!(!pending.queue("drover:b"));
        assert!(!pending.queue("drover:a"), "a queued key takes no more room");
        assert!(pending.queue("drover:c"), "the third key overflows");
        assert!(pending.may_be_stale("drover:never-written"), "nothing is trusted");
        assert_eq!(pending.len(), 0, "the flush stands for every key");

        // A flush starts; meanwhile a key is queued and the queue overflows
        // again. The first flush may have passed those keys already.
        let first = pending.flush_needed().unwrap();
        pending.queue("drover:d");
        pending.queue("drover:e");
        pending.queue("drover:f");
        pending.queue("drover:g");
        pending.flush_done(first);
        assert!(pending.flush_needed().is_some(), "the second overflow needs a flush of its own");
        assert!(pending.may_be_stale("drover:never-written"));

        let second = pending.flush_needed().unwrap();
        pending.flush_done(second);
        assert!(pending.flush_needed().is_none());
        assert!(pending.may_be_stale("drover:g"), "queued after the overflow: still owed");
        assert!(!pending.may_be_stale("drover:never-written"));
    }

    /// A Redis stand-in speaking just enough RESP for the tier. While
    /// `failing`, it answers every command with an error, as a Redis in
    /// trouble (or the connection to it) would fail each call.
    #[derive(Default)]
    struct FakeRedis {
        data: HashMap<String, Vec<u8>>,
        failing: bool,
        /// Every command received, as text.
        log: Vec<Vec<String>>,
    }

    impl FakeRedis {
        async fn start() -> (Rc<RefCell<FakeRedis>>, u16) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let fake = Rc::new(RefCell::new(FakeRedis::default()));
            let state = fake.clone();
            tokio::task::spawn_local(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::task::spawn_local(serve(stream, state.clone()));
                }
            });
            (fake, port)
        }

        fn commands(&self, name: &str) -> usize {
            self.log.iter().filter(|c| c[0].eq_ignore_ascii_case(name)).count()
        }

        fn answer(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
            let text: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            self.log.push(text.clone());
            if self.failing {
                return b"-ERR test outage\r\n".to_vec();
            }
            let key = text.get(1).cloned().unwrap_or_default();
            match text[0].to_ascii_uppercase().as_str() {
                "GET" => match self.data.get(&key) {
                    Some(value) => bulk(value),
                    None => b"$-1\r\n".to_vec(),
                },
                "SETEX" => {
                    self.data.insert(key, args[3].clone());
                    b"+OK\r\n".to_vec()
                }
                "DEL" | "UNLINK" => {
                    let gone = text[1..].iter().filter(|k| self.data.remove(*k).is_some()).count();
                    format!(":{gone}\r\n").into_bytes()
                }
                "PUBLISH" => b":0\r\n".to_vec(),
                "SCAN" => {
                    // One page holds everything: cursor 0 ends the scan.
                    let prefix = text[3].trim_end_matches('*');
                    let keys: Vec<&String> = self.data.keys().filter(|k| k.starts_with(prefix)).collect();
                    let mut reply = b"*2\r\n$1\r\n0\r\n".to_vec();
                    reply.extend(format!("*{}\r\n", keys.len()).into_bytes());
                    for key in keys {
                        reply.extend(bulk(key.as_bytes()));
                    }
                    reply
                }
                _ => b"+OK\r\n".to_vec(),
            }
        }
    }

    fn bulk(value: &[u8]) -> Vec<u8> {
        let mut reply = format!("${}\r\n", value.len()).into_bytes();
        reply.extend_from_slice(value);
        reply.extend_from_slice(b"\r\n");
        reply
    }

    async fn serve(mut stream: TcpStream, fake: Rc<RefCell<FakeRedis>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((args, used)) = parse_command(&buf) {
                buf.drain(..used);
                let reply = fake.borrow_mut().answer(&args);
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// One command (an array of bulk strings) and the bytes it took, once
    /// all of it has arrived.
    fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
        fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
            let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
            Some((&buf[at..end], end + 2))
        }
        fn number(bytes: &[u8]) -> Option<usize> {
            std::str::from_utf8(bytes).ok()?.parse().ok()
        }
        let (head, mut at) = line(buf, 0)?;
        let count = number(head.strip_prefix(b"*")?)?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, start) = line(buf, at)?;
            let len = number(len.strip_prefix(b"$")?)?;
            args.push(buf.get(start..start + len)?.to_vec());
            at = start + len + 2;
            if buf.len() < at {
                return None;
            }
        }
        Some((args, at))
    }

    /// A tier connected to `port`. One failure opens the breaker, and its
    /// cooldown outlasts any test: only [`cooldown_passes`] closes it, so
    /// no test depends on how fast the machine is.
    async fn connected_tier(port: u16) -> RedisTier {
        let settings = CacheSettings {
            enabled: true,
            redis_url: None,
            ttl: Duration::from_secs(60),
            ttl_jitter_percent: 0,
            local_capacity: 10,
            local_ttl: Duration::from_secs(60),
            redis_timeout: Duration::from_secs(5),
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_secs(3600),
        };
        let tier =
            RedisTier::new(&format!("redis://127.0.0.1:{port}/0"), &settings, CHANNEL, PATTERN).unwrap();
        tier.connect().await;
        assert!(tier.connection.borrow().is_some(), "connected to the fake Redis");
        tier
    }

    /// The breaker's cooldown is over, and `maintain` has made a new
    /// connection in place of the one dropped when the breaker opened: the
    /// next call goes through (half-open).
    async fn cooldown_passes(tier: &RedisTier) {
        tier.breaker.open_until.set(Some(Instant::now()));
        assert!(tier.connection.borrow().is_none(), "the breaker opening dropped the connection");
        tier.connect().await;
    }

    async fn in_local_set<F: std::future::Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    #[tokio::test]
    async fn a_delete_that_fails_is_kept_through_the_outage_and_made_before_redis_is_read() {
        in_local_set(async {
            let (fake, port) = FakeRedis::start().await;
            let key = "drover:user:v1:1";
            fake.borrow_mut().data.insert(key.to_owned(), b"old".to_vec());
            let tier = connected_tier(port).await;
            assert_eq!(tier.get(key).await, Ok(Some(Bytes::from_static(b"old"))));

            // Redis fails just as the write's delete is sent.
            fake.borrow_mut().failing = true;
            assert_eq!(tier.delete_and_publish(key).await, Err(Skipped));
            assert!(tier.breaker.is_open());
            let sent = fake.borrow().log.len();

            // Retry rounds while the breaker is open neither call Redis nor
            // give the key up.
            for _ in 0..5 {
                tier.retry_deletes().await;
            }
            assert_eq!(fake.borrow().log.len(), sent, "no call while the breaker is open");
            assert!(tier.pending.borrow().may_be_stale(key), "the delete is still owed");

            // Redis is back, still holding the value the write replaced.
            // Before the owed delete is made, that value is never served.
            fake.borrow_mut().failing = false;
            cooldown_passes(&tier).await;
            assert_eq!(tier.get(key).await, Err(Skipped), "the old value is not read");
            assert_eq!(fake.borrow().commands("GET"), 1, "not even asked for");

            tier.retry_deletes().await;
            assert!(tier.pending.borrow().is_empty(), "the delete was made");
            assert!(!fake.borrow().data.contains_key(key), "the old value is gone");
            assert!(fake.borrow().log.iter().any(|c| c[0] == "PUBLISH" && c[2] == key), "other hosts told");
            assert_eq!(tier.get(key).await, Ok(None));
            assert_eq!(tier.status(), RedisStatus::Up);
        })
        .await;
    }

    #[tokio::test]
    async fn a_delete_another_worker_owes_is_made_here_too_and_retries_stop_at_the_first_failure() {
        in_local_set(async {
            let (fake, port) = FakeRedis::start().await;
            let tier = connected_tier(port).await;
            for n in 0..250 {
                fake.borrow_mut().data.insert(format!("drover:user:v1:{n}"), b"old".to_vec());
                // Told by the worker whose write could not delete it.
                tier.queue_delete(&format!("drover:user:v1:{n}"));
            }
            assert_eq!(tier.get("drover:user:v1:7").await, Err(Skipped));

            // Redis fails on the first batch: one call, nothing given up.
            fake.borrow_mut().failing = true;
            tier.retry_deletes().await;
            assert_eq!(fake.borrow().commands("DEL"), 1, "stops at the first failure");
            assert_eq!(tier.pending.borrow().len(), 250);

            fake.borrow_mut().failing = false;
            cooldown_passes(&tier).await;
            tier.retry_deletes().await;
            assert_eq!(fake.borrow().commands("DEL"), 1 + 250usize.div_ceil(RETRY_BATCH));
            assert!(tier.pending.borrow().is_empty());
            assert!(fake.borrow().data.is_empty(), "every stale value deleted");
        })
        .await;
    }

    #[tokio::test]
    async fn an_overflowing_queue_keeps_redis_unread_until_drovers_keys_are_flushed() {
        in_local_set(async {
            let (fake, port) = FakeRedis::start().await;
            let tier = connected_tier(port).await;
            *tier.pending.borrow_mut() = PendingDeletes::new(3);
            for key in ["drover:user:v1:1", "drover:user:v1:2", "drover:user:v1:3", "drover:user:v1:4"] {
                fake.borrow_mut().data.insert(key.to_owned(), b"old".to_vec());
            }
            fake.borrow_mut().data.insert("someone-else:key".to_owned(), b"theirs".to_vec());
            fake.borrow_mut().data.insert("drover:user:v1:9".to_owned(), b"cached".to_vec());

            fake.borrow_mut().failing = true;
            for n in 1..=4 {
                assert_eq!(tier.delete_and_publish(&format!("drover:user:v1:{n}")).await, Err(Skipped));
            }
            fake.borrow_mut().failing = false;
            cooldown_passes(&tier).await;

            // The overflow dropped track of which keys are stale: no key is
            // read from Redis, written ones or not.
            assert_eq!(tier.get("drover:user:v1:9").await, Err(Skipped));
            assert_eq!(tier.status(), RedisStatus::Degraded);

            tier.retry_deletes().await;
            assert!(tier.pending.borrow().is_empty());
            let keys: Vec<String> = fake.borrow().data.keys().cloned().collect();
            assert_eq!(keys, ["someone-else:key"], "drover's keys flushed, nobody else's");
            assert_eq!(tier.get("drover:user:v1:1").await, Ok(None));
            assert_eq!(tier.status(), RedisStatus::Up);
        })
        .await;
    }
}
