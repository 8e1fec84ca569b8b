//! SQLite through sqlx: the embedded default, so a fresh machine runs with
//! no set-up. Several worker processes share one database file safely: WAL
//! mode lets readers run beside the one writer, and the busy timeout makes a
//! writer wait for the lock instead of failing.

mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use users::SqliteUserRepo;

use super::{DbSettings, RepoError};

/// How long a writer waits for another process's write lock. Writes here
/// are single rows, so seconds of waiting means something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker's SQLite connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteDatabase {
    pool: SqlitePool,
    query_timeout: Duration,
}

impl SqliteDatabase {
    pub async fn connect(settings: &DbSettings) -> Result<Self, RepoError> {
        let options = options(&settings.url)?;
        if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| RepoError::Other(format!("cannot create {}: {e}", parent.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(u32::try_from(settings.sqlite_pool_size.max(1)).unwrap_or(u32::MAX))
            .acquire_timeout(settings.query_timeout)
            .connect_with(options)
            .await
            .map_err(map_error)?;
        Ok(Self { pool, query_timeout: settings.query_timeout })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn timed<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, RepoError> {
        match tokio::time::timeout(self.query_timeout, future).await {
            Ok(result) => result.map_err(map_error),
            Err(_) => Err(RepoError::Unavailable(format!("query took longer than {:?}", self.query_timeout))),
        }
    }

    /// The pool's connections and idle connections.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        vec![
            ("db_sqlite_pool_connections".to_owned(), f64::from(self.pool.size())),
            ("db_sqlite_pool_idle".to_owned(), self.pool.num_idle() as f64),
        ]
    }

    pub async fn ping(&self) -> Result<(), RepoError> {
        self.timed(sqlx::query("SELECT 1").execute(&self.pool)).await.map(drop)
    }
}

/// Connection options for a `sqlite:` URL: created if missing, WAL, busy
/// timeout, foreign keys on.
pub fn options(url: &str) -> Result<SqliteConnectOptions, RepoError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| RepoError::Other(format!("invalid SQLite URL {url}: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across application crashes in WAL mode and only
        // risks the last transactions on power loss; FULL would fsync
        // every commit.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true))
}

pub(crate) fn map_error(error: sqlx::Error) -> RepoError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            RepoError::Conflict(if db.message().contains("email") { "email" } else { "value" })
        }
        sqlx::Error::Database(db) if db.message().contains("locked") || db.message().contains("busy") => {
            RepoError::Unavailable(db.message().to_owned())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => RepoError::Unavailable(error.to_string()),
        _ => RepoError::Other(error.to_string()),
    }
}
