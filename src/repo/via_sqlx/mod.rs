//! What the two backends reached through sqlx share: SQLite (the embedded
//! default) and MariaDB/MySQL. One repository implementation serves both;
//! their SQL differs only where [`Dialect`] says, and each backend's module
//! (`repo/sqlite`, `repo/mysql`) only opens its pool.

mod sql;
mod tx;
pub(crate) mod users;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database, Pool};

use super::{Backend, RepoError};

pub use sql::SqlxSql;
pub use users::SqlxUserRepo;

/// Where the SQL of the sqlx backends differs.
pub trait Dialect: Database {
    /// `INSERT … RETURNING` and `UPDATE … RETURNING` work (SQLite 3.35 and
    /// later). MariaDB has `INSERT … RETURNING`, but its prepared-statement
    /// protocol does not describe the returned columns, and it has no
    /// `UPDATE … RETURNING`: there a write and the read back run in one
    /// transaction.
    const RETURNING: bool;
    /// The SQL for the id the connection's last insert generated.
    const LAST_INSERT_ID: &'static str;
    /// How a transaction of [`crate::repo::Database::transaction`] starts.
    const BEGIN: &'static str;
    const BACKEND: Backend;
    /// A row for the portable layer ([`crate::repo::sql`]).
    fn row(row: Self::Row) -> crate::repo::sql::Row;
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// The id the statement's insert generated.
    fn inserted_id(result: &Self::QueryResult) -> i64;
}

impl Dialect for sqlx::Sqlite {
    const RETURNING: bool = true;
    const LAST_INSERT_ID: &'static str = "last_insert_rowid()";
    // The write lock at once: a deferred transaction that reads, then
    // writes, fails on the lock upgrade when another writer came between.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const BACKEND: Backend = Backend::Sqlite;
    fn row(row: Self::Row) -> crate::repo::sql::Row {
        crate::repo::sql::Row::Sqlite(row)
    }
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
    fn inserted_id(result: &Self::QueryResult) -> i64 {
        result.last_insert_rowid()
    }
}

impl Dialect for sqlx::MySql {
    const RETURNING: bool = false;
    const LAST_INSERT_ID: &'static str = "LAST_INSERT_ID()";
    const BEGIN: &'static str = "BEGIN";
    const BACKEND: Backend = Backend::MySql;
    fn row(row: Self::Row) -> crate::repo::sql::Row {
        crate::repo::sql::Row::MySql(row)
    }
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        // Rows matched, as on the other backends: sqlx connects with
        // CLIENT_FOUND_ROWS (without it MariaDB counts only rows whose
        // values changed).
        result.rows_affected()
    }
    fn inserted_id(result: &Self::QueryResult) -> i64 {
        i64::try_from(result.last_insert_id()).unwrap_or(i64::MAX)
    }
}

/// A worker's pool on one sqlx backend, with the query timeout every
/// statement runs under. Cheap to clone.
#[derive(Debug)]
pub struct SqlxPool<DB: Database> {
    pool: Pool<DB>,
    streams: Arc<StreamPool<DB>>,
    query_timeout: Duration,
}

impl<DB: Database> Clone for SqlxPool<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), streams: self.streams.clone(), query_timeout: self.query_timeout }
    }
}

impl<DB: Database> SqlxPool<DB> {
    pub(crate) fn new(pool: Pool<DB>, streams: StreamPool<DB>, query_timeout: Duration) -> Self {
        Self { pool, streams: Arc::new(streams), query_timeout }
    }

    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    pub(crate) fn streams(&self) -> &Arc<StreamPool<DB>> {
        &self.streams
    }

    /// Runs one statement under the query timeout.
    pub(crate) async fn timed<T>(
        &self,
        future: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, RepoError> {
        timed(self.query_timeout, future).await
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Begins a transaction; end it with [`SqlxPool::finish`].
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, DB>, RepoError> {
        self.timed(self.pool.begin()).await
    }

    /// Commits `tx` if `result` is a success, else rolls it back at once. (A
    /// transaction sqlx rolls back on drop stays open, holding its locks,
    /// until its connection is next used.)
    pub(crate) async fn finish<T>(
        &self,
        tx: sqlx::Transaction<'static, DB>,
        result: Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        match result {
            Ok(value) => {
                self.timed(tx.commit()).await?;
                Ok(value)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    /// The pool's connections and idle connections, named for `backend`.
    pub fn gauges(&self, backend: &str) -> Vec<(String, f64)> {
        vec![
            (format!("db_{backend}_pool_connections"), f64::from(self.pool.size())),
            (format!("db_{backend}_pool_idle"), self.pool.num_idle() as f64),
        ]
    }
}

/// The connections for streamed reads (reports), apart from the pool: made
/// on first use on the runtime that first uses it (the reports' idle loop),
/// which then drives their I/O and the pool's upkeep.
pub struct StreamPool<DB: Database> {
    options: PoolOptions<DB>,
    connect: <DB::Connection as Connection>::Options,
    pool: OnceLock<Pool<DB>>,
}

impl<DB: Database> std::fmt::Debug for StreamPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPool").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl<DB: Database> StreamPool<DB> {
    /// At most `size` connections opened with `connect`, set up as
    /// `options` says (MariaDB's session settings, say).
    pub(crate) fn new(
        options: PoolOptions<DB>,
        size: usize,
        connect: <DB::Connection as Connection>::Options,
    ) -> Self {
        let size = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
        Self { options: options.max_connections(size), connect, pool: OnceLock::new() }
    }

    /// The pool; must first be called on a tokio runtime, which it then
    /// belongs to.
    pub(crate) fn get(&self) -> &Pool<DB> {
        self.pool.get_or_init(|| self.options.clone().connect_lazy_with(self.connect.clone()))
    }
}

/// Runs one statement for at most `limit`, mapping errors.
pub(crate) async fn timed<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, RepoError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(RepoError::Unavailable(format!("query took longer than {limit:?}").into())),
    }
}

impl<DB: Database> SqlxPool<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    /// Answers whether a trivial query succeeds now.
    pub async fn ping(&self) -> Result<(), RepoError> {
        self.timed(sqlx::query("SELECT 1").execute(&self.pool)).await.map(drop)
    }
}

/// sqlx's errors as the repository's, by the drivers' codes, never by
/// their text: a unique violation is a conflict (its field named by the
/// repository, see [`RepoError::unique_is`]), a lost lock race is
/// contention, a lock wait that timed out or a lost connection is
/// unavailable.
pub(crate) fn map_error(error: sqlx::Error) -> RepoError {
    let sqlx::Error::Database(db) = &error else {
        return match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => RepoError::Unavailable(error.into()),
            _ => RepoError::Other(error.into()),
        };
    };
    if db.is_unique_violation() {
        return RepoError::Conflict("value");
    }
    // The driver's error is kept whole as the cause.
    match lock_outcome(db.as_ref()) {
        Some(Lock::Lost) => RepoError::Contention(error.into()),
        Some(Lock::WaitedTooLong) => RepoError::Unavailable(error.into()),
        None => RepoError::Other(error.into()),
    }
}

/// What a database error says about locks.
enum Lock {
    /// Lost a race for a lock (a deadlock; SQLite's busy or locked): the
    /// transaction can succeed if run again.
    Lost,
    /// Waited for a lock as long as allowed.
    WaitedTooLong,
}

/// SQLite's primary result codes for a lock another connection holds.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
/// MariaDB/MySQL error numbers.
const MYSQL_LOCK_WAIT_TIMEOUT: u16 = 1205;
const MYSQL_DEADLOCK: u16 = 1213;
/// "Record has changed since last read": a snapshot-isolation conflict
/// (MariaDB 11.6 and later under REPEATABLE READ).
const MYSQL_CHECKREAD: u16 = 1020;

fn lock_outcome(db: &dyn sqlx::error::DatabaseError) -> Option<Lock> {
    if let Some(sqlite) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // Extended codes (SQLITE_BUSY_SNAPSHOT = 517, ...) keep the primary
        // code in their low byte.
        let code = sqlx::error::DatabaseError::code(sqlite).and_then(|c| c.parse::<i64>().ok())? & 0xff;
        return matches!(code, SQLITE_BUSY | SQLITE_LOCKED).then_some(Lock::Lost);
    }
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match mysql.number() {
            MYSQL_DEADLOCK | MYSQL_CHECKREAD => Some(Lock::Lost),
            MYSQL_LOCK_WAIT_TIMEOUT => Some(Lock::WaitedTooLong),
            _ => None,
        };
    }
    None
}
