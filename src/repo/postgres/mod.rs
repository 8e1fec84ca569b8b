//! PostgreSQL: a few shared tokio-postgres clients per worker, used
//! concurrently so that queries from different requests pipeline on one
//! connection, plus a deadpool-postgres pool for multi-statement
//! transactions.
//!
//! Why not a pool checkout per request: a checkout holds a connection for a
//! whole request and sends one query at a time on it; a shared client sends
//! the queries of every in-flight request back to back and reads the
//! answers in order, which public benchmarks put at 5-6x the throughput for
//! single-query work (`bench/` measures it here).
//!
//! Each shared client has a maintenance task that connects, prepares the
//! hot statements, drives the connection, and reconnects with bounded
//! backoff when it drops. A request that finds no live client fails at once
//! with [`RepoError::Unavailable`] (the HTTP layer answers 503 with
//! `Retry-After`) rather than waiting.

pub mod listen;
mod sql;
mod tx;
mod users;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};
use tracing::{info, warn};

pub use sql::PgSql;
pub use tx::PgTransactor;
pub use users::PgUserRepo;

use super::{redact_url, DbSettings, RepoError};

/// First and longest delay between reconnection attempts: quick enough to
/// notice a restarted server within a second, slow enough not to hammer one
/// that is down.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Statements are cached per client under these keys; `Find(mask)` keys are
/// the field mask itself (below 0x100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Query {
    Find(u8),
    Create,
    Credentials,
    Update,
}

/// One shared client and its prepared statements.
pub(crate) struct SharedClient {
    client: Client,
    statements: RefCell<HashMap<Query, Statement>>,
    /// Statements of the portable layer ([`crate::repo::sql`]), by their
    /// SQL: a finite set, written in the repositories.
    by_sql: RefCell<HashMap<String, Statement>>,
}

/// A client to run a query on: a shared one, or a pool checkout.
pub(crate) enum ClientRef {
    Shared(Rc<SharedClient>),
    Pooled(Box<deadpool_postgres::Object>),
    /// The pooled connection of a transaction in progress.
    Tx(Rc<tx::PgTxConn>),
}

impl Deref for ClientRef {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            ClientRef::Shared(shared) => &shared.client,
            ClientRef::Pooled(object) => object,
            ClientRef::Tx(conn) => conn.object(),
        }
    }
}

type Slot = Rc<RefCell<Option<Rc<SharedClient>>>>;

/// A worker's PostgreSQL connections.
pub struct PgDatabase {
    slots: Vec<Slot>,
    /// Round-robin position over `slots`.
    next: Cell<usize>,
    pool: deadpool_postgres::Pool,
    /// Connections for streamed reads, driven by whichever runtime first
    /// checks each out (the reports' idle loop), apart from `pool`.
    stream_pool: deadpool_postgres::Pool,
    pipelining: bool,
    query_timeout: Duration,
}

impl PgDatabase {
    /// Starts the shared clients' maintenance tasks (on the current
    /// `LocalSet`) and waits up to `connect_timeout` for them to connect. A
    /// server that is down does not stop the worker: it answers 503 until
    /// the clients reconnect.
    pub async fn connect(settings: &DbSettings) -> Result<Self, RepoError> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| {
            RepoError::Other(format!("invalid PostgreSQL URL {}: {e}", redact_url(&settings.url)).into())
        })?;
        config.connect_timeout(settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("drover");
        }
        let connected = Rc::new(Notify::new());
        let slots: Vec<Slot> = (0..settings.pg_clients.max(1)).map(|_| Rc::new(RefCell::new(None))).collect();
        for (index, slot) in slots.iter().enumerate() {
            tokio::task::spawn_local(maintain(index, slot.clone(), config.clone(), connected.clone()));
        }
        let pool = build_pool(&config, settings.pg_pool_size, settings)?;
        let stream_pool = build_pool(&config, settings.stream_connections, settings)?;
        let db = Self {
            slots,
            next: Cell::new(0),
            pool,
            stream_pool,
            pipelining: settings.pg_pipelining,
            query_timeout: settings.query_timeout,
        };
        let all_up = async {
            while db.slots.iter().any(|slot| slot.borrow().is_none()) {
                connected.notified().await;
            }
        };
        if tokio::time::timeout(settings.connect_timeout, all_up).await.is_err() {
            warn!(url = %redact_url(&settings.url), "PostgreSQL not reachable yet; answering 503 until it is");
        }
        Ok(db)
    }

    /// A client for one query: the next live shared client, or a pool
    /// checkout when pipelining is off.
    pub(crate) async fn client(&self) -> Result<ClientRef, RepoError> {
        if !self.pipelining {
            return match tokio::time::timeout(self.query_timeout, self.pool.get()).await {
                Ok(Ok(object)) => Ok(ClientRef::Pooled(Box::new(object))),
                Ok(Err(e)) => Err(RepoError::Unavailable(format!("pool: {e}").into())),
                Err(_) => Err(RepoError::Unavailable("pool checkout timed out".into())),
            };
        }
        let count = self.slots.len();
        let start = self.next.get();
        self.next.set((start + 1) % count);
        for i in 0..count {
            if let Some(shared) = self.slots[(start + i) % count].borrow().as_ref() {
                if !shared.client.is_closed() {
                    return Ok(ClientRef::Shared(shared.clone()));
                }
            }
        }
        Err(RepoError::Unavailable("no live connection to PostgreSQL".into()))
    }

    /// The client for a repository's statement: its transaction's
    /// connection if it is part of one, else [`PgDatabase::client`].
    pub(crate) async fn client_in(&self, tx: Option<&Rc<tx::PgTxConn>>) -> Result<ClientRef, RepoError> {
        match tx {
            Some(tx) => Ok(ClientRef::Tx(tx.clone())),
            None => self.client().await,
        }
    }

    /// The statement for `query` on `client`, prepared once per client.
    pub(crate) async fn statement(
        &self,
        client: &ClientRef,
        query: Query,
        sql: impl FnOnce() -> String,
    ) -> Result<Statement, RepoError> {
        match client {
            ClientRef::Shared(shared) => {
                if let Some(statement) = shared.statements.borrow().get(&query) {
                    return Ok(statement.clone());
                }
                let statement = self.timed(shared.client.prepare(&sql())).await?;
                shared.statements.borrow_mut().insert(query, statement.clone());
                Ok(statement)
            }
            ClientRef::Pooled(object) => self.timed(object.prepare_cached(&sql())).await,
            ClientRef::Tx(conn) => self.timed(conn.object().prepare_cached(&sql())).await,
        }
    }

    /// The statement for portable `sql` (already numbered) on `client`,
    /// prepared once per connection.
    pub(crate) async fn statement_for(&self, client: &ClientRef, sql: &str) -> Result<Statement, RepoError> {
        match client {
            ClientRef::Shared(shared) => {
                if let Some(statement) = shared.by_sql.borrow().get(sql) {
                    return Ok(statement.clone());
                }
                let statement = self.timed(shared.client.prepare(sql)).await?;
                shared.by_sql.borrow_mut().insert(sql.to_owned(), statement.clone());
                Ok(statement)
            }
            ClientRef::Pooled(object) => self.timed(object.prepare_cached(sql)).await,
            ClientRef::Tx(conn) => self.timed(conn.object().prepare_cached(sql)).await,
        }
    }

    /// Runs a query future with the query timeout, mapping errors.
    pub(crate) async fn timed<T>(
        &self,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, RepoError> {
        timed(self.query_timeout, future).await
    }

    /// The pool for streamed reads. It is `Send`: the reports' idle loop
    /// checks its connections out, and drives their I/O.
    pub(crate) fn stream_pool(&self) -> &deadpool_postgres::Pool {
        &self.stream_pool
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// A transaction on a pooled connection (the shared clients must never
    /// carry one: its statements would interleave with other requests').
    pub async fn pooled(&self) -> Result<deadpool_postgres::Object, RepoError> {
        checkout(&self.pool, self.query_timeout).await
    }

    /// Live shared clients, and the transaction pool's size and idle
    /// connections.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        let live =
            self.slots.iter().filter(|s| s.borrow().as_ref().is_some_and(|c| !c.client.is_closed())).count();
        let status = self.pool.status();
        vec![
            ("db_pg_shared_clients_live".to_owned(), live as f64),
            ("db_pg_pool_connections".to_owned(), status.size as f64),
            ("db_pg_pool_idle".to_owned(), status.available as f64),
        ]
    }

    pub async fn ping(&self) -> Result<(), RepoError> {
        let client = self.client().await?;
        self.timed(client.simple_query("SELECT 1")).await.map(drop)
    }
}

/// A pool of at most `size` connections; none is opened before it is
/// needed.
fn build_pool(
    config: &tokio_postgres::Config,
    size: usize,
    settings: &DbSettings,
) -> Result<deadpool_postgres::Pool, RepoError> {
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size.max(1))
        .wait_timeout(Some(settings.query_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| RepoError::Other(format!("cannot build the PostgreSQL pool: {e}").into()))
}

/// Checks a connection out of `pool`, waiting at most `limit`.
pub(crate) async fn checkout(
    pool: &deadpool_postgres::Pool,
    limit: Duration,
) -> Result<deadpool_postgres::Object, RepoError> {
    match tokio::time::timeout(limit, pool.get()).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(e)) => Err(RepoError::Unavailable(format!("pool: {e}").into())),
        Err(_) => Err(RepoError::Unavailable("pool checkout timed out".into())),
    }
}

/// Runs a query future for at most `limit`, mapping errors.
pub(crate) async fn timed<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, RepoError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(RepoError::Unavailable(format!("query took longer than {limit:?}").into())),
    }
}

/// Keeps one shared client connected for the worker's whole life.
async fn maintain(index: usize, slot: Slot, config: tokio_postgres::Config, connected: Rc<Notify>) {
    let mut delay = RECONNECT_MIN;
    let mut failures = 0u32;
    // Set once a connection has been up, so the next success is logged as
    // the recovery it is.
    let mut lost = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                let shared = Rc::new(SharedClient {
                    client,
                    statements: RefCell::new(HashMap::new()),
                    by_sql: RefCell::new(HashMap::new()),
                });
                // The connection future does the socket I/O, so it must be
                // driven while the statements are prepared.
                let mut connection = std::pin::pin!(connection);
                let prepared = tokio::select! {
                    result = users::prepare(&shared.client, &shared.statements) => result.map_err(|e| e.to_string()),
                    ended = connection.as_mut() => Err(format!("connection closed while preparing: {ended:?}")),
                };
                match prepared {
                    Ok(()) => {
                        if lost || failures > 0 {
                            info!(client = index, failed_attempts = failures, "reconnected to PostgreSQL");
                        }
                        lost = true;
                        failures = 0;
                        delay = RECONNECT_MIN;
                        *slot.borrow_mut() = Some(shared.clone());
                        connected.notify_waiters();
                        // Drive the connection until the socket closes.
                        let result = connection.as_mut().await;
                        slot.borrow_mut().take();
                        match result {
                            Ok(()) => warn!(client = index, "PostgreSQL connection closed; reconnecting"),
                            Err(error) => {
                                warn!(client = index, %error, "PostgreSQL connection lost; reconnecting")
                            }
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        warn!(client = index, %error, "cannot prepare statements; reconnecting");
                    }
                }
            }
            Err(error) => {
                failures += 1;
                // Once per streak at warn, then quietly: an outage must not
                // flood the log.
                if failures == 1 {
                    warn!(client = index, error = %describe(&error), "cannot connect to PostgreSQL; retrying with backoff");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

/// The driver's message plus the server's, which its `Display` leaves out.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// Maps a driver error: unique violations are conflicts; connection-level
/// failures and server shutdown states are "unavailable"; the rest is a bug.
pub(crate) fn map_error(error: tokio_postgres::Error) -> RepoError {
    let Some(db) = error.as_db_error() else {
        // No server error: the connection is closed or failed (I/O).
        return RepoError::Unavailable(error.into());
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        return RepoError::Conflict(unique_field(db.constraint()));
    }
    let unavailable = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
    ];
    // The driver's error is kept whole as the cause (its code, detail and
    // position), for logs and for callers that inspect it by type.
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        // Lost to a concurrent transaction: running it again can succeed.
        RepoError::Contention(error.into())
    } else if unavailable.contains(code) || code.code().starts_with("08") {
        RepoError::Unavailable(error.into())
    } else {
        RepoError::Other(error.into())
    }
}

/// The field a unique constraint protects, by its name (`users_email_key`).
fn unique_field(constraint: Option<&str>) -> &'static str {
    match constraint {
        Some(name) if name.contains("email") => "email",
        _ => "value",
    }
}
