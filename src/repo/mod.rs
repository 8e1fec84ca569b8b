//! Repositories: storage behind traits, with implementations for
//! PostgreSQL (tokio-postgres) and for the sqlx backends, SQLite and
//! MariaDB/MySQL, which share theirs. SQL lives only below this module.
//!
//! The backend is chosen once, from `database.url`, by [`Database::connect`];
//! everything above works with `Rc<dyn UserRepo>`.

pub mod migrate;
pub mod mysql;
pub mod postgres;
mod rows;
pub mod sql;
pub mod sqlite;
pub mod via_sqlx;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::LocalBoxFuture;

use crate::domain::{Credentials, NewUser, User, UserEmail, UserFields, UserId, UserPatch, UserView};

/// The cause of a repository error: the driver's own error where there is
/// one, so it can be inspected by type (never by its text), or a message.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong in a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A uniqueness rule was broken; names the field (for example `email`).
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The database cannot be reached now (down, restarting, timed out).
    /// Callers fail fast and tell clients to retry.
    #[error("database unavailable: {0}")]
    Unavailable(Cause),
    /// The transaction lost to a concurrent one (a serialization failure or
    /// a deadlock) and may succeed if run again; [`Database::transaction`]
    /// does, a bounded number of times.
    #[error("transaction conflict: {0}")]
    Contention(Cause),
    /// Anything else: a bug or a broken invariant. For logs only.
    #[error("database error: {0}")]
    Other(Cause),
}

impl RepoError {
    /// Names the field of a unique violation. The repository knows which
    /// unique key a statement can break; SQLite and MariaDB say it only in
    /// the text of their messages, which nothing here reads.
    pub(crate) fn unique_is(self, field: &'static str) -> Self {
        match self {
            RepoError::Conflict(_) => RepoError::Conflict(field),
            other => other,
        }
    }
}

/// Users, stored.
#[async_trait(?Send)]
pub trait UserRepo {
    /// Inserts a user; [`RepoError::Conflict`] on a taken email.
    async fn create(&self, user: &NewUser) -> Result<User, RepoError>;
    /// Reads only `fields` of a user.
    async fn find(&self, id: UserId, fields: UserFields) -> Result<Option<UserView>, RepoError>;
    /// The login check's inputs, by email.
    async fn credentials(&self, email: &UserEmail) -> Result<Option<Credentials>, RepoError>;
    /// Applies a patch (an empty one reads the user back); `None` if no
    /// such user. [`RepoError::Conflict`] on a taken email.
    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, RepoError>;
}

/// The repositories, as the database and every transaction expose them: a
/// service written against these runs the same inside a transaction or not.
pub trait Repos {
    fn users(&self) -> &dyn UserRepo;
    /// The portable statement executor ([`sql`]) the resources' repositories
    /// are written on: the pool's, or the transaction's.
    fn sql(&self) -> sql::SqlRef;
}

/// The error of a unit of work run by [`Database::transaction`]: a
/// repository error, or one that wraps it.
pub trait TxError: From<RepoError> + std::fmt::Display {
    /// Lost to a concurrent transaction: running it again may succeed.
    fn is_contention(&self) -> bool;
}

impl TxError for RepoError {
    fn is_contention(&self) -> bool {
        matches!(self, RepoError::Contention(_))
    }
}

/// A transaction in progress (see [`Database::transaction`]).
#[async_trait(?Send)]
pub(crate) trait Tx {
    /// The repositories bound to this transaction.
    fn repos(&self) -> Rc<dyn Repos>;
    async fn commit(self: Box<Self>) -> Result<(), RepoError>;
    async fn rollback(self: Box<Self>);
}

/// Opens transactions on one backend.
#[async_trait(?Send)]
pub(crate) trait Transactor {
    async fn begin(&self) -> Result<Box<dyn Tx>, RepoError>;
}

/// How many times [`Database::transaction`] runs a unit of work that keeps
/// losing to concurrent ones, in all. Contention that outlasts this is
/// reported as unavailable (503, retry shortly) rather than waited out.
pub const TX_ATTEMPTS: u32 = 4;
/// The pause before a retry grows from this, with jitter, so that the
/// transactions that collided do not collide again in step.
const TX_RETRY_PAUSE: Duration = Duration::from_millis(2);

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    MySql,
}

impl Backend {
    /// `postgres://…` / `postgresql://…`, `sqlite://…` / `sqlite:…`, or
    /// `mysql://…` / `mariadb://…`.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(Backend::MySql)
        } else {
            None
        }
    }
}

/// How a worker uses its database; from `[database]` in the configuration.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    /// PostgreSQL: shared, pipelined clients per worker.
    pub pg_clients: usize,
    /// PostgreSQL: pooled connections per worker, for transactions.
    pub pg_pool_size: usize,
    /// PostgreSQL: `false` sends every query through a pool checkout instead
    /// of the shared clients (what most servers do; kept to measure it).
    pub pg_pipelining: bool,
    /// SQLite: connections per worker.
    pub sqlite_pool_size: usize,
    /// MariaDB/MySQL: connections per worker.
    pub mysql_pool_size: usize,
    /// Connections per worker for streamed reads (reports), kept apart from
    /// the pools above and opened as needed: `reports.max_running`.
    pub stream_connections: usize,
    pub connect_timeout: Duration,
    /// A query that takes longer fails as unavailable instead of hanging.
    pub query_timeout: Duration,
}

/// A connected database: the repositories, transactions over them, and a
/// health check.
pub struct Database {
    pub backend: Backend,
    pub users: Rc<dyn UserRepo>,
    sql: sql::SqlRef,
    transactor: Rc<dyn Transactor>,
    health: Health,
    /// Transactions committed, and runs retried after contention (metrics).
    committed: Cell<u64>,
    retried: Cell<u64>,
}

impl Repos for Database {
    fn users(&self) -> &dyn UserRepo {
        &*self.users
    }

    fn sql(&self) -> sql::SqlRef {
        self.sql.clone()
    }
}

enum Health {
    Postgres(Rc<postgres::PgDatabase>),
    Sqlite(sqlite::SqliteDatabase),
    MySql(mysql::MySqlDatabase),
}

impl Database {
    /// Connects to the backend `settings.url` names. PostgreSQL clients
    /// connect in the background and reconnect by themselves, so this
    /// returns at once even when the server is down.
    pub async fn connect(settings: &DbSettings) -> Result<Self, RepoError> {
        match Backend::of(&settings.url) {
            Some(Backend::Postgres) => {
                let db = Rc::new(postgres::PgDatabase::connect(settings).await?);
                Ok(Self::new(
                    Backend::Postgres,
                    Rc::new(postgres::PgUserRepo::new(db.clone())),
                    Rc::new(postgres::PgSql::new(db.clone())),
                    Rc::new(postgres::PgTransactor::new(db.clone())),
                    Health::Postgres(db),
                ))
            }
            Some(Backend::Sqlite) => {
                let db = sqlite::connect(settings).await?;
                Ok(Self::new(
                    Backend::Sqlite,
                    Rc::new(via_sqlx::SqlxUserRepo::new(db.clone())),
                    Rc::new(via_sqlx::SqlxSql::new(db.clone())),
                    Rc::new(db.clone()),
                    Health::Sqlite(db),
                ))
            }
            Some(Backend::MySql) => {
                let db = mysql::connect(settings)?;
                Ok(Self::new(
                    Backend::MySql,
                    Rc::new(via_sqlx::SqlxUserRepo::new(db.clone())),
                    Rc::new(via_sqlx::SqlxSql::new(db.clone())),
                    Rc::new(db.clone()),
                    Health::MySql(db),
                ))
            }
            None => Err(RepoError::Other(
                format!("unsupported database URL scheme: {}", redact_url(&settings.url)).into(),
            )),
        }
    }

    fn new(
        backend: Backend,
        users: Rc<dyn UserRepo>,
        sql: sql::SqlRef,
        transactor: Rc<dyn Transactor>,
        health: Health,
    ) -> Self {
        Self { backend, users, sql, transactor, health, committed: Cell::new(0), retried: Cell::new(0) }
    }

    /// Runs `work` in one transaction over the repositories: committed if it
    /// returns `Ok`, rolled back if it returns an error. A run that loses to
    /// a concurrent transaction ([`RepoError::Contention`]) is rolled back
    /// and run again, up to [`TX_ATTEMPTS`] runs in all, so `work` must
    /// do nothing it cannot redo (no I/O beyond the repositories).
    ///
    /// PostgreSQL runs it on a pooled connection (never on the shared,
    /// pipelined clients), SQLite under `BEGIN IMMEDIATE` (the write lock is
    /// taken at once, so it cannot fail halfway on a lock upgrade), MariaDB
    /// under `BEGIN`.
    /// `work` gets the transaction's repositories as an `Rc` and may borrow
    /// from its caller (`'a`): `|repos| Box::pin(async move { ... })`.
    /// The error type `E` may be the caller's own (a service's), so that a
    /// business rule broken halfway (an item out of stock) rolls back
    /// everything before it; [`TxError`] says which of its values are
    /// contention.
    pub async fn transaction<'a, T, E, F>(&self, mut work: F) -> Result<T, E>
    where
        E: TxError,
        F: FnMut(Rc<dyn Repos>) -> LocalBoxFuture<'a, Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            // A BEGIN that loses a lock race (SQLite's `BEGIN IMMEDIATE`
            // while another process writes) is retried like the rest.
            let outcome = match self.transactor.begin().await {
                Err(error) => Err(E::from(error)),
                Ok(tx) => match work(tx.repos()).await {
                    Ok(value) => tx.commit().await.map(|()| value).map_err(E::from),
                    Err(error) => {
                        tx.rollback().await;
                        Err(error)
                    }
                },
            };
            match outcome {
                Ok(value) => {
                    self.committed.set(self.committed.get() + 1);
                    return Ok(value);
                }
                Err(error) if error.is_contention() && attempt < TX_ATTEMPTS => {
                    self.retried.set(self.retried.get() + 1);
                    tracing::debug!(attempt, %error, "transaction lost to a concurrent one; running it again");
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                Err(error) if error.is_contention() => {
                    return Err(E::from(RepoError::Unavailable(
                        format!("contention persisted over {TX_ATTEMPTS} runs: {error}").into(),
                    )))
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Transactions committed and runs retried, for metrics.
    pub fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("db_transactions_committed".to_owned(), self.committed.get()),
            ("db_transaction_retries".to_owned(), self.retried.get()),
        ]
    }

    /// Connection figures for metrics, by name.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        match &self.health {
            Health::Postgres(db) => db.gauges(),
            Health::Sqlite(db) => db.gauges("sqlite"),
            Health::MySql(db) => db.gauges("mysql"),
        }
    }

    /// Answers whether a trivial query succeeds now.
    pub async fn ping(&self) -> Result<(), RepoError> {
        match &self.health {
            Health::Postgres(db) => db.ping().await,
            Health::Sqlite(db) => db.ping().await,
            Health::MySql(db) => db.ping().await,
        }
    }
}

/// The pause before retry `attempt` (1-based): doubling from
/// [`TX_RETRY_PAUSE`], with up to as much again of jitter taken from the
/// clock's nanoseconds (no random number generator needed for this).
fn retry_pause(attempt: u32) -> Duration {
    let base = TX_RETRY_PAUSE * 2u32.saturating_pow(attempt.saturating_sub(1));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// A database URL with its password replaced, for logs and `config check`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:<redacted>@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/drover.db"), "sqlite://data/drover.db");
        assert_eq!(Backend::of("postgresql://x"), Some(Backend::Postgres));
        assert_eq!(Backend::of("sqlite:x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("mysql://x"), Some(Backend::MySql));
        assert_eq!(Backend::of("mariadb://x"), Some(Backend::MySql));
        assert_eq!(Backend::of("oracle://x"), None);
    }
}
