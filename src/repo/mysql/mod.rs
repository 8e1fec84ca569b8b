//! MariaDB and MySQL through sqlx (`mysql://…` or `mariadb://…` URLs). The
//! repositories are the sqlx ones shared with SQLite (`repo/via_sqlx`); this
//! module only opens the pool.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::via_sqlx::{SqlxPool, StreamPool};
use super::{redact_url, DbSettings, RepoError};

/// A worker's MariaDB/MySQL connections. Cheap to clone.
pub type MySqlDatabase = SqlxPool<sqlx::MySql>;

/// Connection options for a `mysql://` or `mariadb://` URL.
pub fn options(url: &str) -> Result<MySqlConnectOptions, RepoError> {
    // sqlx knows the `mysql` scheme; MariaDB speaks the same protocol.
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    MySqlConnectOptions::from_str(&url)
        .map(|options| options.charset("utf8mb4"))
        .map_err(|e| RepoError::Other(format!("invalid MariaDB/MySQL URL {}: {e}", redact_url(&url)).into()))
}

/// Opens a worker's pool. Connections are made as they are needed, so this
/// returns at once even when the server is down (as PostgreSQL's clients
/// do); queries then fail fast as unavailable until it is back. A wrong URL
/// or password is reported before workers start, by the migration check.
pub fn connect(settings: &DbSettings) -> Result<MySqlDatabase, RepoError> {
    // A statement that waits for a lock gives up on the server when drover
    // stops waiting for it (the query timeout), instead of holding its
    // connection for MariaDB's default of 50 s (row locks) or a year
    // (table metadata locks).
    let wait_s = settings.query_timeout.as_secs().max(1);
    let session = format!("SET SESSION innodb_lock_wait_timeout = {wait_s}, lock_wait_timeout = {wait_s}");
    let pool_options =
        MySqlPoolOptions::new().acquire_timeout(settings.connect_timeout).after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, session.as_str()).await?;
                // READ COMMITTED, as on PostgreSQL: every statement sees what
                // is committed when it starts. Under InnoDB's default
                // REPEATABLE READ a transaction that reads, then updates a
                // row another one changed meanwhile, fails (MariaDB 11.6's
                // snapshot isolation, error 1020) or reads a stale snapshot.
                sqlx::Executor::execute(&mut *conn, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map(drop)
            })
        });
    let options = options(&settings.url)?;
    let streams = StreamPool::new(pool_options.clone(), settings.stream_connections, options.clone());
    let pool = pool_options
        .max_connections(u32::try_from(settings.mysql_pool_size.max(1)).unwrap_or(u32::MAX))
        .connect_lazy_with(options);
    Ok(SqlxPool::new(pool, streams, settings.query_timeout))
}
