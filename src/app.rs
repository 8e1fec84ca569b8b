//! The composition root: builds a worker's services from the configuration
//! (database, keys, password hashing) and hands them to the HTTP layer. The
//! CLI builds the same services for its commands.

use std::rc::Rc;

use drover_worker::{BlockingPool, Broadcast, WorkerContext};

use crate::cache::Cache;

use crate::config::Config;
use crate::domain::time::{Clock, SystemClock};
use crate::http::{Routes, State};
use crate::repo::{Database, RepoError};
use crate::resources::files::{FileService, FileStore};
use crate::resources::idempotency::IdempotencyService;
use crate::resources::invoices::InvoiceService;
use crate::resources::notifications::NotificationService;
use crate::resources::orders::OrderService;
use crate::resources::plans::PlanService;
use crate::resources::products::ProductService;
use crate::resources::reports::ReportService;
use crate::resources::subscriptions::SubscriptionService;
use crate::resources::tfb::BenchService;
use crate::service::{AuthService, KeyError, KeySet, Passwords, ServiceError, TokenService, UserService};

/// Why a worker's application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] RepoError),
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Service(#[from] ServiceError),
    #[error("files.store: {0}")]
    Files(String),
}

/// The services, built once per process.
pub struct Services {
    pub db: Rc<Database>,
    pub users: UserService,
    pub auth: AuthService,
    pub cache: Cache,
    pub products: ProductService,
    pub orders: OrderService,
    pub idempotency: IdempotencyService,
    pub plans: PlanService,
    pub subscriptions: SubscriptionService,
    pub reports: ReportService,
    pub invoices: InvoiceService,
    pub files: FileService,
    pub notifications: NotificationService,
    /// The TechEmpower database tests (`/bench/db`, ...).
    pub tfb: BenchService,
}

impl Services {
    /// The counters every worker reports with its heartbeat (cache and
    /// database), by name.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let stats = self.cache.stats();
        [
            ("cache_local_hits", &stats.local_hits),
            ("cache_local_misses", &stats.local_misses),
            ("cache_redis_hits", &stats.redis_hits),
            ("cache_redis_misses", &stats.redis_misses),
            ("cache_redis_errors", &stats.redis_errors),
            ("cache_loads", &stats.loads),
            ("cache_invalidations", &stats.invalidations),
        ]
        .into_iter()
        .map(|(name, cell)| (name.to_owned(), cell.get()))
        .chain(self.db.counters())
        .collect()
    }

    /// The gauges every worker reports with its heartbeat.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let mut gauges = self.db.gauges();
        gauges.push(("cache_local_entries".to_owned(), self.cache.local_entries() as f64));
        gauges
    }

    pub async fn build(
        config: &Config,
        blocking: BlockingPool,
        broadcast: Broadcast,
    ) -> Result<Self, StartError> {
        let db = Rc::new(Database::connect(&config.db_settings()).await?);
        let keys = KeySet::load(&config.auth, &config.data_dir())?;
        let tokens = Rc::new(TokenService::new(
            keys,
            &config.auth.issuer,
            &config.auth.audience,
            config.auth.token_ttl,
        ));
        let passwords = Passwords::new(blocking);
        let cache = if config.cache.enabled {
            Cache::new(config.cache_settings(), broadcast)
        } else {
            Cache::disabled()
        };
        let clock: Rc<dyn Clock> = Rc::new(SystemClock);
        let users = UserService::new(db.clone(), passwords.clone(), cache.clone(), clock.clone());
        let auth = AuthService::new(
            db.clone(),
            passwords,
            tokens,
            cache.clone(),
            clock.clone(),
            config.auth.refresh_ttl,
        );
        let products = ProductService::new(db.clone(), cache.clone(), clock.clone());
        let orders = OrderService::new(db.clone(), products.clone(), clock.clone());
        let idempotency = IdempotencyService::new(db.clone(), clock.clone());
        let plans = PlanService::new(db.clone(), clock.clone());
        let store = FileStore::open(&config.files.store, &config.data_dir()).map_err(StartError::Files)?;
        let files = FileService::new(db.clone(), Rc::new(store), clock.clone(), config.files.max_bytes);
        let notifications = NotificationService::new(db.clone(), clock.clone());
        let subscriptions = SubscriptionService::new(db.clone(), clock);
        let reports = ReportService::new(db.clone(), config.reports.max_running);
        let invoices = InvoiceService::new(db.clone());
        let tfb = BenchService::new(db.clone());
        Ok(Self {
            db,
            users,
            auth,
            cache,
            products,
            orders,
            idempotency,
            plans,
            subscriptions,
            reports,
            invoices,
            files,
            notifications,
            tfb,
        })
    }
}

/// The HTTP application of one worker.
pub async fn build(config: &Config, context: WorkerContext) -> Result<Routes, StartError> {
    let services = Services::build(config, context.blocking.clone(), context.broadcast.clone()).await?;
    Ok(Routes::new(State {
        worker: context.info,
        services,
        max_body_bytes: config.http.max_body_bytes,
        bench: config.bench.enabled,
        allow_dotless_email_domains: config.auth.allow_dotless_email_domains,
        cors: crate::http::Cors::new(&config.http.cors).map(std::rc::Rc::new),
        compression: crate::http::compress::Compression::new(
            &config.http.compression,
            context.blocking.clone(),
        )
        .map(std::rc::Rc::new),
        rate_limits: crate::http::rate_limit::RateLimits::new(
            &config.rate_limit,
            &config.server.trusted_proxies,
            context.broadcast.clone(),
        ),
    }))
}
