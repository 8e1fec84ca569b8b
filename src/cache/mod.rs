//! Cache-aside for the service layer: an in-process tier per worker in front
//! of Redis, in front of the database.
//!
//! - Reads: in-process tier, then Redis, then the loader (the database).
//!   Concurrent misses on one key in one worker share a single load.
//! - Writes: [`Cache::invalidate`] deletes the Redis key, publishes the key
//!   on Redis (other hosts), and relays it to this host's other workers
//!   through the supervisor, waiting until each has dropped its copy. So a
//!   read through any worker of this host after a write has been answered
//!   sees the write.
//! - Redis trouble: every call is bounded by `redis_timeout`; after
//!   `breaker_threshold` failures in a row Redis is skipped for
//!   `breaker_cooldown`. Reads then go to the database: slower, never
//!   failed. A write whose Redis delete fails tells every worker of this
//!   host (acknowledged, before it answers) that the delete is owed; each
//!   keeps the key queued until it has deleted it itself, and reads it from
//!   the database until then, so no worker serves the old value when Redis
//!   comes back.
//!
//! A resource opts in by implementing [`Cached`] (a key kind with a shape
//! version, and a compact binary encoding), then reads with one call:
//! `cache.get_or_load(id, || repo.find(id)).await`.

mod codec;
mod redis_tier;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use drover_worker::Broadcast;
use tokio::sync::OnceCell;

pub use redis_tier::RedisStatus;
use redis_tier::RedisTier;

/// The channel, both on Redis and between this host's workers, that carries
/// the keys to drop.
const INVALIDATE_CHANNEL: &str = "drover:cache:invalidate";

/// The channel between this host's workers that carries keys whose Redis
/// delete failed: each worker then owes that delete (see
/// `RedisTier::queue_delete`). Every worker holding every owed key means
/// one that dies or is recycled loses none of them. A channel of its own,
/// so a worker of an older version, during a rolling restart, still gets
/// the plain invalidation on [`INVALIDATE_CHANNEL`].
const REDIS_DELETE_OWED_CHANNEL: &str = "drover:cache:redis-delete-owed";

/// Every key the cache writes to Redis starts with this, and only cache
/// entries use it: a flush after too many failed deletes removes every key
/// matching [`KEY_PATTERN`].
const KEY_PREFIX: &str = "drover:";
const KEY_PATTERN: &str = "drover:*";

/// What the cache is told by the configuration.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub redis_url: Option<String>,
    pub ttl: Duration,
    pub ttl_jitter_percent: u32,
    pub local_capacity: u64,
    pub local_ttl: Duration,
    pub redis_timeout: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

/// A value the cache can hold.
pub trait Cached: Sized {
    /// The key kind, with the version of the encoded shape: a deploy that
    /// changes the shape bumps it, and never reads the old entries.
    const KIND: &'static str;
    fn encode(&self) -> Vec<u8>;
    /// `None` for bytes that do not decode; the cache then loads afresh.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// Counters per tier, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub local_hits: Cell<u64>,
    pub local_misses: Cell<u64>,
    pub redis_hits: Cell<u64>,
    pub redis_misses: Cell<u64>,
    pub redis_errors: Cell<u64>,
    /// Reads that went to the loader (the database).
    pub loads: Cell<u64>,
    pub invalidations: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// A worker's cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Rc<Inner>,
}

struct Inner {
    settings: CacheSettings,
    local: RefCell<mini_moka::unsync::Cache<String, Bytes>>,
    redis: Option<RedisTier>,
    /// Loads in progress, by key: concurrent misses join the first one.
    inflight: RefCell<HashMap<String, Rc<OnceCell<Option<Bytes>>>>>,
    /// Bumped by every invalidation this worker sees. A load that started
    /// before one does not store its (possibly old) result.
    epoch: Cell<u64>,
    stats: CacheStats,
    broadcast: Broadcast,
}

impl Cache {
    /// Starts the cache: subscribes to invalidations from this host's other
    /// workers and, with Redis, connects (in the background) and subscribes
    /// to invalidations from other hosts. Must run on a `LocalSet`.
    pub fn new(settings: CacheSettings, broadcast: Broadcast) -> Self {
        let local = mini_moka::unsync::Cache::builder()
            .max_capacity(settings.local_capacity)
            .time_to_live(settings.local_ttl)
            .build();
        let redis = match (&settings.redis_url, settings.enabled) {
            (Some(url), true) => RedisTier::new(url, &settings, INVALIDATE_CHANNEL, KEY_PATTERN),
            _ => None,
        };
        let cache = Self {
            inner: Rc::new(Inner {
                settings,
                local: RefCell::new(local),
                redis,
                inflight: RefCell::new(HashMap::new()),
                epoch: Cell::new(0),
                stats: CacheStats::default(),
                broadcast: broadcast.clone(),
            }),
        };
        let weak = Rc::downgrade(&cache.inner);
        broadcast.subscribe(INVALIDATE_CHANNEL, move |key| {
            if let Some(inner) = weak.upgrade() {
                inner.forget_local(key);
            }
        });
        let weak = Rc::downgrade(&cache.inner);
        broadcast.subscribe(REDIS_DELETE_OWED_CHANNEL, move |key| {
            if let Some(inner) = weak.upgrade() {
                inner.forget_local(key);
                if let Some(redis) = &inner.redis {
                    redis.queue_delete(key);
                }
            }
        });
        if let Some(redis) = &cache.inner.redis {
            let weak = Rc::downgrade(&cache.inner);
            redis.start(move |event| {
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    redis_tier::Event::Invalidate(key) => inner.forget_local(&key),
                    // Messages may have been missed while unsubscribed.
                    redis_tier::Event::Resubscribed => inner.forget_all_local(),
                }
            });
        }
        cache
    }

    /// A cache that never caches, for `cache.enabled = false` and commands.
    pub fn disabled() -> Self {
        let settings = CacheSettings {
            enabled: false,
            redis_url: None,
            ttl: Duration::from_secs(1),
            ttl_jitter_percent: 0,
            local_capacity: 1,
            local_ttl: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(1),
            breaker_threshold: 1,
            breaker_cooldown: Duration::from_secs(1),
        };
        Self::new(settings, Broadcast::standalone())
    }

    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    pub fn stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Entries in this worker's in-process tier.
    pub fn local_entries(&self) -> u64 {
        self.inner.local.borrow().entry_count()
    }

    /// Redis as `/readyz` reports it.
    pub fn redis_status(&self) -> RedisStatus {
        self.inner.redis.as_ref().map_or(RedisStatus::NotConfigured, RedisTier::status)
    }

    fn key<T: Cached>(id: impl Display) -> String {
        format!("{KEY_PREFIX}{}:{id}", T::KIND)
    }

    /// The cached value, or `load`'s (which is then cached). `None` from the
    /// loader is passed through and not cached.
    pub async fn get_or_load<T, E, F, Fut>(&self, id: impl Display, load: F) -> Result<Option<T>, E>
    where
        T: Cached,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if !self.enabled() {
            return load().await;
        }
        let key = Self::key::<T>(id);
        let inner = &self.inner;
        if let Some(value) = inner.local_get::<T>(&key) {
            return Ok(Some(value));
        }
        let cell = inner.inflight.borrow_mut().entry(key.clone()).or_default().clone();
        let epoch = inner.epoch.get();
        let result = cell
            .get_or_try_init(|| async {
                if let Some(bytes) = inner.redis_get(&key).await {
                    if T::decode(&bytes).is_some() {
                        inner.store_local(epoch, &key, &bytes);
                        return Ok(Some(bytes));
                    }
                }
                bump(&inner.stats.loads);
                let value = load().await?;
                let bytes = value.as_ref().map(|v| Bytes::from(v.encode()));
                if let Some(bytes) = &bytes {
                    // Stored only if no write was seen while loading: the
                    // loaded value may predate it.
                    if inner.store_local(epoch, &key, bytes) {
                        if let Some(redis) = &inner.redis {
                            redis.set_later(&key, bytes.clone(), inner.ttl_with_jitter());
                        }
                    }
                }
                Ok(bytes)
            })
            .await
            .cloned();
        {
            let mut inflight = inner.inflight.borrow_mut();
            if inflight.get(&key).is_some_and(|c| Rc::ptr_eq(c, &cell)) {
                inflight.remove(&key);
            }
        }
        Ok(result?.as_deref().and_then(T::decode))
    }

    /// The cached value if there is one, without loading.
    pub async fn peek<T: Cached>(&self, id: impl Display) -> Option<T> {
        if !self.enabled() {
            return None;
        }
        let key = Self::key::<T>(id);
        if let Some(value) = self.inner.local_get::<T>(&key) {
            return Some(value);
        }
        let bytes = self.inner.redis_get(&key).await?;
        let value = T::decode(&bytes)?;
        self.inner.store_local(self.inner.epoch.get(), &key, &bytes);
        Some(value)
    }

    /// Drops every cached copy of a value after a write, everywhere this
    /// worker can reach, before returning: Redis, this worker, and this
    /// host's other workers (acknowledged). Other hosts hear of it through
    /// Redis pub/sub. If Redis cannot delete it now, every worker of this
    /// host owes the delete, and none reads the key from Redis until it
    /// has made it.
    pub async fn invalidate<T: Cached>(&self, id: impl Display) {
        if !self.enabled() {
            return;
        }
        let key = Self::key::<T>(id);
        bump(&self.inner.stats.invalidations);
        self.inner.forget_local(&key);
        if let Some(redis) = &self.inner.redis {
            if redis.delete_and_publish(&key).await.is_err() {
                // Redis still holds the old value, and this worker's retry
                // may come after another worker's read once Redis is back.
                // So every worker owes the delete before this write answers.
                self.inner.broadcast.publish(REDIS_DELETE_OWED_CHANNEL, &key).await;
            }
        }
        self.inner.broadcast.publish(INVALIDATE_CHANNEL, &key).await;
    }
}

impl Inner {
    fn local_get<T: Cached>(&self, key: &str) -> Option<T> {
        let bytes = self.local.borrow_mut().get(&key.to_owned()).cloned();
        match bytes.as_deref().and_then(T::decode) {
            Some(value) => {
                bump(&self.stats.local_hits);
                Some(value)
            }
            None => {
                bump(&self.stats.local_misses);
                None
            }
        }
    }

    /// Stores unless an invalidation arrived since `epoch`; says whether it
    /// stored.
    fn store_local(&self, epoch: u64, key: &str, bytes: &Bytes) -> bool {
        if self.epoch.get() != epoch {
            return false;
        }
        self.local.borrow_mut().insert(key.to_owned(), bytes.clone());
        true
    }

    fn forget_local(&self, key: &str) {
        self.epoch.set(self.epoch.get() + 1);
        self.local.borrow_mut().invalidate(&key.to_owned());
        self.inflight.borrow_mut().remove(key);
    }

    fn forget_all_local(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.local.borrow_mut().invalidate_all();
        self.inflight.borrow_mut().clear();
    }

    async fn redis_get(&self, key: &str) -> Option<Bytes> {
        let redis = self.redis.as_ref()?;
        match redis.get(key).await {
            Ok(Some(bytes)) => {
                bump(&self.stats.redis_hits);
                Some(bytes)
            }
            Ok(None) => {
                bump(&self.stats.redis_misses);
                None
            }
            Err(redis_tier::Skipped) => {
                bump(&self.stats.redis_errors);
                None
            }
        }
    }

    /// The Redis TTL, varied by up to `ttl_jitter_percent` either way.
    fn ttl_with_jitter(&self) -> Duration {
        let ttl = self.settings.ttl.as_millis() as u64;
        let spread = ttl * u64::from(self.settings.ttl_jitter_percent) / 100;
        if spread == 0 {
            return self.settings.ttl;
        }
        let offset = fastrand_u64() % (2 * spread + 1);
        Duration::from_millis(ttl - spread + offset)
    }
}

/// A cheap per-thread random number (xorshift), good enough for jitter.
fn fastrand_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0x9e37_79b9, |d| d.as_nanos() as u64) | 1
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Thing(u32);

    impl Cached for Thing {
        const KIND: &'static str = "thing:v1";
        fn encode(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            Some(Thing(u32::from_le_bytes(bytes.try_into().ok()?)))
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            enabled: true,
            redis_url: None,
            ttl: Duration::from_secs(100),
            ttl_jitter_percent: 10,
            local_capacity: 100,
            local_ttl: Duration::from_secs(60),
            redis_timeout: Duration::from_millis(50),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(5),
        }
    }

    async fn in_local_set<F: Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_hits_skip_it() {
        in_local_set(async {
            let cache = Cache::new(settings(), Broadcast::standalone());
            let loads = Rc::new(Cell::new(0));
            let load = || {
                let loads = loads.clone();
                move || async move {
                    loads.set(loads.get() + 1);
                    tokio::task::yield_now().await;
                    Ok::<_, ()>(Some(Thing(7)))
                }
            };
            let all = futures_util::future::join_all((0..100).map(|_| cache.get_or_load(1, load()))).await;
            assert!(all.iter().all(|r| *r == Ok(Some(Thing(7)))));
            assert_eq!(loads.get(), 1, "one load for 100 concurrent misses");
            assert_eq!(cache.get_or_load(1, load()).await, Ok(Some(Thing(7))));
            assert_eq!(loads.get(), 1);
            assert!(cache.stats().local_hits.get() >= 1);
        })
        .await;
    }

    #[tokio::test]
    async fn invalidation_forces_a_fresh_load_and_failed_loads_are_not_cached() {
        in_local_set(async {
            let cache = Cache::new(settings(), Broadcast::standalone());
            let value = Rc::new(Cell::new(1));
            let load = || {
                let value = value.clone();
                move || async move { Ok::<_, ()>(Some(Thing(value.get()))) }
            };
            assert_eq!(cache.get_or_load(5, load()).await, Ok(Some(Thing(1))));
            value.set(2);
            assert_eq!(cache.get_or_load(5, load()).await, Ok(Some(Thing(1))), "cached");
            cache.invalidate::<Thing>(5).await;
            assert_eq!(cache.get_or_load(5, load()).await, Ok(Some(Thing(2))));

            let failing = || async { Err::<Option<Thing>, _>("db down") };
            assert_eq!(cache.get_or_load(9, failing).await, Err("db down"));
            assert_eq!(cache.get_or_load(9, load()).await, Ok(Some(Thing(2))));
            assert_eq!(cache.get_or_load(10, || async { Ok::<Option<Thing>, ()>(None) }).await, Ok(None));
        })
        .await;
    }

    #[tokio::test]
    async fn a_load_that_straddles_a_write_is_not_stored() {
        in_local_set(async {
            let cache = Cache::new(settings(), Broadcast::standalone());
            let writer = cache.clone();
            let stale = cache.get_or_load(3, || async move {
                // The write lands while this (old) read is in flight.
                writer.invalidate::<Thing>(3).await;
                Ok::<_, ()>(Some(Thing(1)))
            });
            assert_eq!(stale.await, Ok(Some(Thing(1))));
            let fresh = cache.get_or_load(3, || async { Ok::<_, ()>(Some(Thing(2))) }).await;
            assert_eq!(fresh, Ok(Some(Thing(2))), "the straddling result was not cached");
        })
        .await;
    }

    #[test]
    fn a_flush_matches_every_key_the_cache_writes() {
        assert_eq!(KEY_PATTERN, format!("{KEY_PREFIX}*"));
        assert!(Cache::key::<Thing>(7).starts_with(KEY_PREFIX));
    }

    #[test]
    fn jitter_stays_within_its_percentage() {
        let mut settings = settings();
        settings.ttl = Duration::from_secs(100);
        let cache = Inner {
            settings,
            local: RefCell::new(mini_moka::unsync::Cache::new(1)),
            redis: None,
            inflight: RefCell::default(),
            epoch: Cell::new(0),
            stats: CacheStats::default(),
            broadcast: Broadcast::standalone(),
        };
        let ttls: Vec<Duration> = (0..1000).map(|_| cache.ttl_with_jitter()).collect();
        assert!(ttls.iter().all(|t| *t >= Duration::from_secs(90) && *t <= Duration::from_secs(110)));
        assert!(ttls.iter().any(|t| *t != ttls[0]), "TTLs vary");
    }
}
