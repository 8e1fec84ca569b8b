//! drover's configuration: typed sections, each field documented in
//! `config/default.toml`, loaded in layers by [`load`].

mod layers;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use layers::{load, ConfigError, Override, Sources, DEFAULT_TOML};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub bench: BenchConfig,
    pub rate_limit: RateLimitConfig,
    pub admission: AdmissionConfig,
    pub reports: ReportsConfig,
    pub files: FilesConfig,
    pub jobs: JobsConfig,
    pub orders: OrdersConfig,
}

/// `[jobs]`: how a job process consumes the queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Job processes `drover serve` runs.
    pub workers: usize,
    /// Empty: the embedded queue in the application database; `amqp://`:
    /// RabbitMQ.
    pub broker_url: String,
    /// RabbitMQ: exchanges and queues are named `<prefix>.<...>`.
    pub broker_prefix: String,
    /// RabbitMQ: unacknowledged messages a job process holds at once, per queue.
    pub prefetch: u16,
    /// Deliveries of a message before it is dead.
    pub max_attempts: u32,
    #[serde(deserialize_with = "values::duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub retry_base: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub retry_max: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub lease: Duration,
    /// `outbox.prune` deletes published events older than this.
    #[serde(deserialize_with = "values::duration")]
    pub outbox_retention: Duration,
    /// Task name -> cron expression (UTC); empty turns a task off.
    pub schedule: std::collections::BTreeMap<String, String>,
}

/// `[orders]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// `orders.expire` cancels orders still unpaid after this.
    #[serde(deserialize_with = "values::duration")]
    pub unpaid_ttl: Duration,
}

impl JobsConfig {
    pub fn settings(&self) -> crate::jobs::consumer::Settings {
        crate::jobs::consumer::Settings {
            max_attempts: i64::from(self.max_attempts),
            poll_interval: self.poll_interval,
            retry_base: self.retry_base,
            retry_max: self.retry_max,
        }
    }

    pub fn transport(&self) -> crate::jobs::transport::TransportSettings {
        crate::jobs::transport::TransportSettings {
            broker_url: self.broker_url.clone(),
            prefix: self.broker_prefix.clone(),
            prefetch: self.prefetch,
            lease: self.lease,
        }
    }
}

impl Config {
    /// What the scheduled tasks need.
    pub fn task_settings(&self) -> crate::jobs::schedule::TaskSettings {
        crate::jobs::schedule::TaskSettings {
            lease: self.jobs.lease,
            unpaid_ttl: self.orders.unpaid_ttl,
            outbox_retention: self.jobs.outbox_retention,
        }
    }
}

/// `[files]`: uploads streamed to an object store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Empty (`<data_dir>/files`), `file:///path` or `s3://bucket[/prefix]`.
    pub store: String,
    /// The largest file accepted, in bytes.
    pub max_bytes: u64,
}

/// `[reports]`: exports streamed from the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Reports one worker streams at once; more are answered 503 `busy`.
    /// Also the size of the worker's pool of connections for streamed
    /// reads (each report holds one while its client reads).
    pub max_running: usize,
}

/// The supervisor's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listening addresses.
    #[serde(deserialize_with = "values::addrs")]
    pub listen: Vec<SocketAddr>,
    /// Worker processes; 0 means one per usable CPU.
    pub workers: usize,
    /// Where the ready file goes; `None` for none.
    #[serde(deserialize_with = "values::optional_path")]
    pub ready_file: Option<PathBuf>,
    /// The admin listener's address; `None` for none.
    #[serde(deserialize_with = "values::optional_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the admin listener's bearer token is read from (a path or
    /// `credential:NAME`); empty for none. See [`crate::admin::read_token`].
    pub admin_token: String,
    /// `None` for the default (see [`Config::control_socket`]).
    #[serde(deserialize_with = "values::optional_path")]
    pub control_socket: Option<PathBuf>,
    /// Where state lives; `None` for the default (see [`Config::data_dir`]).
    #[serde(deserialize_with = "values::optional_path")]
    pub data_dir: Option<PathBuf>,
    #[serde(deserialize_with = "values::networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Worker lifecycle settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    #[serde(deserialize_with = "values::duration")]
    pub boot_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub stall_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub max_rss: u64,
    pub cpu_affinity: CpuAffinity,
    #[serde(deserialize_with = "values::duration")]
    pub restart_backoff_min: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub restart_backoff_max: Duration,
    pub blocking_threads: usize,
    pub blocking_queue: usize,
    /// A cpu cgroup for the idle-class threads; empty: none.
    pub idle_cgroup: String,
}

/// Limits protecting workers from slow or hostile clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(deserialize_with = "values::duration")]
    pub header_read_timeout: Duration,
    /// The longest pause between two pieces of a request body.
    #[serde(deserialize_with = "values::duration")]
    pub body_read_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_concurrent_streams: u32,
    pub cors: CorsConfig,
    pub compression: CompressionConfig,
}

/// `[http.compression]`: responses compressed for clients that accept it
/// (see `src/http/compress.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    pub enabled: bool,
    /// `br`, `zstd`, `gzip`, in order of preference.
    pub algorithms: Vec<String>,
    pub br_level: i32,
    pub zstd_level: i32,
    pub gzip_level: i32,
    /// Bodies smaller than this go out as they are.
    pub min_bytes: usize,
    /// Media types compressed, without parameters.
    pub content_types: Vec<String>,
    /// Route patterns never compressed.
    pub off_routes: Vec<String>,
}

/// `[rate_limit]`: host-wide limits, kept by the supervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub login_per_ip: RateConfig,
    pub login_free_failures: u32,
    #[serde(deserialize_with = "values::duration")]
    pub login_delay: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub login_max_delay: Duration,
    pub register_per_ip: RateConfig,
    pub per_ip: RateConfig,
    pub per_user: RateConfig,
}

/// `[admission]`: each worker's admission controller (see
/// `drover_worker::AdmissionConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    pub enabled: bool,
    pub initial_limit: u32,
    pub min_limit: u32,
    pub max_limit: u32,
    pub queue: usize,
    #[serde(deserialize_with = "values::duration")]
    pub max_wait: Duration,
    pub prefer_reads: bool,
    pub exempt: Vec<String>,
}

impl AdmissionConfig {
    /// The worker's settings.
    pub fn to_worker(&self) -> drover_worker::AdmissionConfig {
        drover_worker::AdmissionConfig {
            enabled: self.enabled,
            initial_limit: self.initial_limit,
            min_limit: self.min_limit,
            max_limit: self.max_limit,
            queue: self.queue,
            max_wait: self.max_wait,
            prefer_reads: self.prefer_reads,
            exempt: self.exempt.clone(),
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.min_limit == 0 {
            return Err(("admission.min_limit", "must be at least 1".into()));
        }
        if self.max_limit < self.min_limit {
            return Err(("admission.max_limit", "must be at least admission.min_limit".into()));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err((
                "admission.initial_limit",
                "must be between admission.min_limit and admission.max_limit".into(),
            ));
        }
        if self.max_wait.is_zero() && self.queue > 0 {
            return Err(("admission.max_wait", "must be more than 0 when admission.queue is set".into()));
        }
        if let Some(path) = self.exempt.iter().find(|path| !path.starts_with('/')) {
            return Err(("admission.exempt", format!("{path:?} is not a path (it must start with /)")));
        }
        Ok(())
    }
}

/// `requests` per `period`: a burst of `requests` that refills evenly.
/// `requests = 0` is no limit.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub requests: u32,
    #[serde(deserialize_with = "values::duration")]
    pub period: Duration,
}

/// Cross-origin requests from browsers (`[http.cors]`); off while
/// `allowed_origins` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    #[serde(deserialize_with = "values::duration")]
    pub max_age: Duration,
    pub allow_credentials: bool,
}

/// The database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…`, `mariadb://…` / `mysql://…` or `sqlite://…`; empty for the embedded default.
    pub url: String,
    pub migrate_on_start: bool,
    pub pg_clients: usize,
    pub pg_pool_size: usize,
    pub pg_pipelining: bool,
    pub sqlite_pool_size: usize,
    pub mysql_pool_size: usize,
    #[serde(deserialize_with = "values::duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub query_timeout: Duration,
}

/// Token signing and checking.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub algorithm: String,
    pub issuer: String,
    pub audience: String,
    #[serde(deserialize_with = "values::duration")]
    pub token_ttl: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub refresh_ttl: Duration,
    pub key_files: Vec<String>,
    /// A secret: never printed (see the `Debug` impl).
    pub key: String,
    pub key_id: String,
    pub allow_dotless_email_domains: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("token_ttl", &self.token_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("key_files", &self.key_files)
            .field("key", &if self.key.is_empty() { "" } else { "<redacted>" })
            .field("key_id", &self.key_id)
            .field("allow_dotless_email_domains", &self.allow_dotless_email_domains)
            .finish()
    }
}

/// Caching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    pub redis_url: String,
    #[serde(deserialize_with = "values::duration")]
    pub ttl: Duration,
    /// Percent.
    pub ttl_jitter: u32,
    pub local_capacity: u64,
    #[serde(deserialize_with = "values::duration")]
    pub local_ttl: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub redis_timeout: Duration,
    pub breaker_threshold: u32,
    #[serde(deserialize_with = "values::duration")]
    pub breaker_cooldown: Duration,
}

/// The load testers' endpoints under `/bench/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Serve `/bench/*` (TechEmpower's plaintext and JSON tests, a delay).
    pub enabled: bool,
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `warn,drover=debug`.
    pub level: String,
    pub format: LogFormat,
    /// The fraction of requests the access log records (0: off).
    #[serde(default)]
    pub access_sample: f64,
}

impl LogConfig {
    /// Every how many requests one is logged; 0 when the access log is off.
    pub fn access_every(&self) -> u64 {
        if self.access_sample <= 0.0 {
            0
        } else {
            (1.0 / self.access_sample.min(1.0)).round() as u64
        }
    }
}

/// Whether workers are pinned to CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuAffinity {
    None,
    Auto,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The default: each process picks [`LogFormat::Pretty`] when its
    /// standard error is a terminal and [`LogFormat::Json`] otherwise (see
    /// [`LogFormat::resolve`]). It stays `Auto` in the configuration, so the
    /// supervisor and its workers each resolve it against the standard error
    /// they share and agree.
    Auto,
    /// One JSON object per line: what journald, files and pipes get.
    Json,
    /// For a human at a terminal.
    Pretty,
}

impl LogFormat {
    /// The format to write in, for a process whose standard error is (or is
    /// not) a terminal. A configured `json` or `pretty` wins; never `Auto`.
    pub fn resolve(self, stderr_is_terminal: bool) -> Self {
        match self {
            Self::Auto if stderr_is_terminal => Self::Pretty,
            Self::Auto => Self::Json,
            configured => configured,
        }
    }
}

impl Config {
    /// Checks what types alone cannot; the error names the key.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("worker.boot_timeout", self.worker.boot_timeout),
            ("worker.drain_timeout", self.worker.drain_timeout),
            ("worker.heartbeat_interval", self.worker.heartbeat_interval),
            ("worker.restart_backoff_min", self.worker.restart_backoff_min),
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.body_read_timeout", self.http.body_read_timeout),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err((key, "must be greater than zero".into()));
            }
        }
        if self.worker.stall_timeout < self.worker.heartbeat_interval * 2 {
            return Err(("worker.stall_timeout", "must be at least twice worker.heartbeat_interval".into()));
        }
        if !self.worker.idle_cgroup.is_empty() && !self.worker.idle_cgroup.starts_with('/') {
            return Err((
                "worker.idle_cgroup",
                "must be an absolute path (a cgroup directory), or empty".into(),
            ));
        }
        if self.worker.restart_backoff_max < self.worker.restart_backoff_min {
            return Err((
                "worker.restart_backoff_max",
                "must not be less than worker.restart_backoff_min".into(),
            ));
        }
        if !self.database.url.is_empty() && crate::repo::Backend::of(&self.database.url).is_none() {
            return Err((
                "database.url",
                "must start with postgres://, postgresql://, mariadb://, mysql:// or sqlite:".into(),
            ));
        }
        if !["EdDSA", "HS256"].contains(&self.auth.algorithm.as_str()) {
            return Err((
                "auth.algorithm",
                format!("{:?} is not supported; use \"EdDSA\" or \"HS256\"", self.auth.algorithm),
            ));
        }
        if self.auth.token_ttl < Duration::from_secs(10) {
            return Err(("auth.token_ttl", "must be at least 10s".into()));
        }
        let rates = [
            ("rate_limit.login_per_ip.period", self.rate_limit.login_per_ip),
            ("rate_limit.register_per_ip.period", self.rate_limit.register_per_ip),
            ("rate_limit.per_ip.period", self.rate_limit.per_ip),
            ("rate_limit.per_user.period", self.rate_limit.per_user),
        ];
        for (key, rate) in rates {
            if rate.requests > 0 && rate.period.is_zero() {
                return Err((key, "must be more than 0 when requests is set".into()));
            }
        }
        if self.rate_limit.login_delay.is_zero() {
            return Err(("rate_limit.login_delay", "must be more than 0".into()));
        }
        if self.rate_limit.login_max_delay < self.rate_limit.login_delay {
            return Err(("rate_limit.login_max_delay", "must be at least rate_limit.login_delay".into()));
        }
        self.admission.validate()?;
        if self.auth.refresh_ttl < self.auth.token_ttl {
            return Err(("auth.refresh_ttl", "must be at least auth.token_ttl".into()));
        }
        let redis_url = &self.cache.redis_url;
        let redis_ok = redis_url.is_empty()
            || redis_url.starts_with("redis://")
            || redis_url.starts_with("redis+unix://");
        if !redis_ok {
            return Err(("cache.redis_url", "must start with redis:// or redis+unix://".into()));
        }
        if self.cache.ttl_jitter > 50 {
            return Err(("cache.ttl_jitter", "a percentage from 0 to 50".into()));
        }
        for (key, value) in [
            ("cache.ttl", self.cache.ttl),
            ("cache.local_ttl", self.cache.local_ttl),
            ("cache.redis_timeout", self.cache.redis_timeout),
            ("cache.breaker_cooldown", self.cache.breaker_cooldown),
        ] {
            if value.is_zero() {
                return Err((key, "must be greater than zero".into()));
            }
        }
        if self.cache.breaker_threshold == 0 {
            return Err(("cache.breaker_threshold", "must be at least 1".into()));
        }
        if let Some(admin) = self.server.admin_listen {
            let clash = self.server.listen.iter().any(|l| l.port() == admin.port() && admin.port() != 0);
            if clash {
                return Err((
                    "server.admin_listen",
                    format!("{admin} is a public port; metrics must stay off it"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return Err(("log.access_sample", "must be from 0 (off) to 1 (every request)".into()));
        }
        self.http.cors.validate()?;
        self.http.compression.validate()?;
        let store = &self.files.store;
        let store_ok = store.is_empty()
            || store.strip_prefix("file:///").is_some()
            || store.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !store_ok {
            return Err((
                "files.store",
                format!("{store:?} must be empty, file:///path or s3://bucket[/prefix]"),
            ));
        }
        if self.jobs.workers > 64 {
            return Err(("jobs.workers", "must be from 0 to 64".into()));
        }
        let broker = &self.jobs.broker_url;
        if !broker.is_empty() && !broker.starts_with("amqp://") {
            return Err(("jobs.broker_url", "must be empty (the embedded queue) or an amqp:// URL".into()));
        }
        let prefix = &self.jobs.broker_prefix;
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(("jobs.broker_prefix", "must be 1 to 100 of A-Z a-z 0-9 . _ -".into()));
        }
        if !(1..=1000).contains(&self.jobs.prefetch) {
            return Err(("jobs.prefetch", "must be from 1 to 1000".into()));
        }
        if !(1..=100).contains(&self.jobs.max_attempts) {
            return Err(("jobs.max_attempts", "must be from 1 to 100".into()));
        }
        for (key, value) in [
            ("jobs.poll_interval", self.jobs.poll_interval),
            ("jobs.retry_base", self.jobs.retry_base),
            ("jobs.lease", self.jobs.lease),
        ] {
            if value.is_zero() {
                return Err((key, "must be greater than zero".into()));
            }
        }
        crate::jobs::schedule::Schedules::from_config(&self.jobs.schedule)
            .map_err(|message| ("jobs.schedule", message))?;
        for (key, value) in [
            ("jobs.outbox_retention", self.jobs.outbox_retention),
            ("orders.unpaid_ttl", self.orders.unpaid_ttl),
        ] {
            if value.is_zero() {
                return Err((key, "must be greater than zero".into()));
            }
        }
        if self.jobs.retry_max < self.jobs.retry_base {
            return Err(("jobs.retry_max", "must be at least jobs.retry_base".into()));
        }
        if self.files.max_bytes == 0 {
            return Err(("files.max_bytes", "must be at least 1".into()));
        }
        if !(1..=256).contains(&self.reports.max_running) {
            return Err(("reports.max_running", "must be from 1 to 256".into()));
        }
        // Read now, so that a missing or short token stops `serve` and
        // `config check` with the key named, not the supervisor later.
        crate::admin::read_token(&self.server.admin_token)
            .map_err(|message| ("server.admin_token", message))?;
        if self.server.listen.is_empty() {
            return Err(("server.listen", "needs at least one address".into()));
        }
        if self.server.workers > 1024 {
            return Err(("server.workers", "at most 1024".into()));
        }
        let at_least = [
            ("http.max_header_bytes", self.http.max_header_bytes as u64, 1024),
            ("http.max_headers", self.http.max_headers as u64, 8),
            ("http.max_connections", self.http.max_connections as u64, 1),
            ("http.max_concurrent_streams", u64::from(self.http.max_concurrent_streams), 1),
            ("worker.blocking_threads", self.worker.blocking_threads as u64, 1),
        ];
        for (key, value, min) in at_least {
            if value < min {
                return Err((key, format!("must be at least {min}")));
            }
        }
        if self.log.level.parse::<tracing_subscriber::filter::Targets>().is_err() {
            return Err((
                "log.level",
                format!("{:?} is not a log filter such as \"info\" or \"warn,drover=debug\"", self.log.level),
            ));
        }
        Ok(())
    }

    /// The data directory: configured, else systemd's `$STATE_DIRECTORY`
    /// (its first entry), else `./data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.server.data_dir {
            return dir.clone();
        }
        match std::env::var("STATE_DIRECTORY") {
            Ok(dirs) if !dirs.is_empty() => PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)),
            _ => PathBuf::from("data"),
        }
    }

    /// The control socket: configured, else in systemd's
    /// `$RUNTIME_DIRECTORY`, else `./drover.sock`.
    pub fn control_socket(&self) -> PathBuf {
        if let Some(path) = &self.server.control_socket {
            return path.clone();
        }
        match std::env::var("RUNTIME_DIRECTORY") {
            Ok(dirs) if !dirs.is_empty() => {
                PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)).join("drover.sock")
            }
            _ => PathBuf::from("drover.sock"),
        }
    }

    /// The database URL: configured, else SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if !self.database.url.is_empty() {
            return self.database.url.clone();
        }
        format!("sqlite://{}", self.data_dir().join("drover.db").display())
    }

    /// The database settings a worker uses.
    pub fn db_settings(&self) -> crate::repo::DbSettings {
        let db = &self.database;
        crate::repo::DbSettings {
            url: self.database_url(),
            pg_clients: db.pg_clients,
            pg_pool_size: db.pg_pool_size,
            pg_pipelining: db.pg_pipelining,
            sqlite_pool_size: db.sqlite_pool_size,
            mysql_pool_size: db.mysql_pool_size,
            stream_connections: self.reports.max_running,
            connect_timeout: db.connect_timeout,
            query_timeout: db.query_timeout,
        }
    }

    /// The cache settings a worker uses.
    pub fn cache_settings(&self) -> crate::cache::CacheSettings {
        let c = &self.cache;
        crate::cache::CacheSettings {
            enabled: c.enabled,
            redis_url: (!c.redis_url.is_empty()).then(|| c.redis_url.clone()),
            ttl: c.ttl,
            ttl_jitter_percent: c.ttl_jitter,
            local_capacity: c.local_capacity,
            local_ttl: c.local_ttl,
            redis_timeout: c.redis_timeout,
            breaker_threshold: c.breaker_threshold,
            breaker_cooldown: c.breaker_cooldown,
        }
    }

    /// Worker count with 0 resolved to the CPUs this process may use.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl CompressionConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        use crate::http::compress::Coding;
        if self.enabled && self.algorithms.is_empty() {
            return Err((
                "http.compression.algorithms",
                "needs at least one of \"br\", \"zstd\", \"gzip\" (or enabled = false)".into(),
            ));
        }
        let mut seen = Vec::new();
        for token in &self.algorithms {
            let Some(coding) = Coding::from_token(token).filter(|_| token != "x-gzip") else {
                return Err((
                    "http.compression.algorithms",
                    format!("{token:?} is not one of \"br\", \"zstd\", \"gzip\""),
                ));
            };
            if seen.contains(&coding) {
                return Err(("http.compression.algorithms", format!("{token:?} is listed twice")));
            }
            seen.push(coding);
        }
        for (key, coding, level) in [
            ("http.compression.br_level", Coding::Brotli, self.br_level),
            ("http.compression.zstd_level", Coding::Zstd, self.zstd_level),
            ("http.compression.gzip_level", Coding::Gzip, self.gzip_level),
        ] {
            let levels = coding.levels();
            if !levels.contains(&level) {
                return Err((
                    key,
                    format!("{level} is not a level from {} to {}", levels.start(), levels.end()),
                ));
            }
        }
        // Already compressed: encoding them again costs CPU and saves nothing.
        const COMPRESSED: [&str; 8] = [
            "image/",
            "video/",
            "audio/",
            "application/zip",
            "application/gzip",
            "application/zstd",
            "application/x-brotli",
            "font/woff",
        ];
        for media in &self.content_types {
            let valid = media.split_once('/').is_some_and(|(kind, sub)| {
                !kind.is_empty() && !sub.is_empty() && !media.contains(';') && !media.contains(' ')
            });
            if !valid {
                return Err((
                    "http.compression.content_types",
                    format!("{media:?} is not a media type such as \"application/json\" (no parameters)"),
                ));
            }
            let lower = media.to_ascii_lowercase();
            if COMPRESSED.iter().any(|c| lower.starts_with(c)) {
                return Err((
                    "http.compression.content_types",
                    format!("{media:?} is already compressed; compressing it again only costs CPU"),
                ));
            }
        }
        if let Some(route) = self.off_routes.iter().find(|route| !route.starts_with('/')) {
            return Err((
                "http.compression.off_routes",
                format!("{route:?} is not a route pattern such as \"/v1/users/{{id}}\""),
            ));
        }
        Ok(())
    }
}

impl CorsConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let any = self.allowed_origins.iter().any(|origin| origin == "*");
        if any && self.allowed_origins.len() > 1 {
            return Err((
                "http.cors.allowed_origins",
                "\"*\" stands alone: it already allows every origin".into(),
            ));
        }
        if any && self.allow_credentials {
            return Err((
                "http.cors.allow_credentials",
                "cannot be true with allowed_origins = [\"*\"]: name the origins that may send credentials"
                    .into(),
            ));
        }
        for origin in self.allowed_origins.iter().filter(|origin| *origin != "*") {
            let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains('/')
                    && !host.contains(' ')
            });
            if !valid {
                return Err((
                    "http.cors.allowed_origins",
                    format!("{origin:?} is not an origin: scheme://host[:port], such as \"https://app.example.com\", with no path"),
                ));
            }
        }
        for method in &self.allowed_methods {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err((
                    "http.cors.allowed_methods",
                    format!("{method:?} is not a method name in capitals"),
                ));
            }
        }
        for name in self.allowed_headers.iter().chain(&self.exposed_headers) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("http.cors.allowed_headers", format!("{name:?} is not a header name")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_auto_follows_the_terminal_and_a_configured_one_wins() {
        let check = |format: LogFormat, terminal: bool, expect: LogFormat| {
            assert_eq!(format.resolve(terminal), expect, "{format:?} with a terminal: {terminal}");
        };
        check(LogFormat::Auto, true, LogFormat::Pretty);
        check(LogFormat::Auto, false, LogFormat::Json);
        check(LogFormat::Json, true, LogFormat::Json);
        check(LogFormat::Json, false, LogFormat::Json);
        check(LogFormat::Pretty, true, LogFormat::Pretty);
        check(LogFormat::Pretty, false, LogFormat::Pretty);
    }

    #[test]
    fn log_format_is_auto_unless_configured() {
        let (config, _) = load(&Sources::default()).unwrap();
        assert_eq!(config.log.format, LogFormat::Auto);
        let sources = Sources {
            overrides: vec![Override::text("log.format", "--log-format", "json")],
            ..Sources::default()
        };
        assert_eq!(load(&sources).unwrap().0.log.format, LogFormat::Json);
    }
}
