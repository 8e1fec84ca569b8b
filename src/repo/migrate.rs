//! Versioned SQL migrations, declared once per version ([`MIGRATIONS`])
//! with one SQL file per backend under `migrations/`, compiled into the
//! binary. Applied by `drover migrate` and, unless
//! `database.migrate_on_start = false`, by the supervisor before it starts
//! workers.
//!
//! Concurrent instances must not race: on PostgreSQL the whole run holds a
//! session advisory lock; on SQLite each migration runs in a `BEGIN
//! IMMEDIATE` transaction, which takes the database's write lock, and
//! re-checks what is applied inside it; on MariaDB/MySQL the run holds a
//! named lock (`GET_LOCK`). MariaDB cannot roll back DDL, so a migration
//! that fails halfway there leaves what it did: keep each file to one
//! statement that can fail, or statements that can be re-run.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Row};
use tokio_postgres::NoTls;

use super::via_sqlx::map_error;
use super::{redact_url, Backend, RepoError};

/// One migration: a version, a name for humans, and its SQL for each
/// backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
    mysql: &'static str,
}

impl Migration {
    /// Its SQL on `backend`.
    pub fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
            Backend::MySql => self.mysql,
        }
    }

    /// The file name each backend's SQL is in: `0001_users.sql`.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }
}

/// Declares a migration whose SQL is `migrations/<backend>/<file>` for
/// every backend; a missing file fails the build.
macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            postgres: include_str!(concat!("../../migrations/postgres/", $file)),
            sqlite: include_str!(concat!("../../migrations/sqlite/", $file)),
            mysql: include_str!(concat!("../../migrations/mysql/", $file)),
        }
    };
}

/// Every migration, in order. A new one is one line here and one file per
/// backend.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "users", "0001_users.sql"),
    migration!(2, "products", "0002_products.sql"),
    migration!(3, "orders", "0003_orders.sql"),
    migration!(4, "idempotency_keys", "0004_idempotency_keys.sql"),
    migration!(5, "plans", "0005_plans.sql"),
    migration!(6, "subscriptions", "0006_subscriptions.sql"),
    migration!(7, "sessions", "0007_sessions.sql"),
    migration!(8, "files", "0008_files.sql"),
    migration!(9, "jobs", "0009_jobs.sql"),
    migration!(10, "schedules", "0010_schedules.sql"),
    migration!(11, "product_sales", "0011_product_sales.sql"),
    migration!(12, "subscription_anchor", "0012_subscription_anchor.sql"),
    migration!(13, "outbox_notify", "0013_outbox_notify.sql"),
];

/// An arbitrary constant identifying drover's migration lock among the
/// database's advisory locks.
const PG_LOCK_KEY: i64 = 0x6472_6f76_6572; // "drover"

/// A migration and whether it is applied.
#[derive(Debug, Clone)]
pub struct Status {
    pub migration: Migration,
    /// When it was applied (Unix seconds), if it was.
    pub applied_at: Option<i64>,
}

fn backend(url: &str) -> Result<Backend, RepoError> {
    Backend::of(url)
        .ok_or_else(|| RepoError::Other(format!("unsupported database URL: {}", redact_url(url)).into()))
}

/// Applies every pending migration; returns those applied now.
pub async fn run(url: &str) -> Result<Vec<Migration>, RepoError> {
    match backend(url)? {
        Backend::Postgres => run_postgres(url).await,
        Backend::Sqlite => run_sqlite_retrying(url).await,
        Backend::MySql => run_mysql(url).await,
    }
}

/// Every known migration with its state.
pub async fn status(url: &str) -> Result<Vec<Status>, RepoError> {
    let backend = backend(url)?;
    let applied: Vec<(i64, i64)> = match backend {
        Backend::Postgres => {
            let client = pg_connect(url).await?;
            pg_ensure_table(&client).await?;
            client
                .query("SELECT version, extract(epoch FROM applied_at)::bigint FROM schema_migrations", &[])
                .await
                .map_err(pg_error)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        }
        Backend::Sqlite => {
            let mut conn = sqlite_connect(url).await?;
            sqlite_ensure_table(&mut conn).await?;
            sqlx::query("SELECT version, applied_at FROM schema_migrations")
                .fetch_all(&mut conn)
                .await
                .map_err(map_error)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        }
        Backend::MySql => {
            let mut conn = mysql_connect(url).await?;
            mysql_ensure_table(&mut conn).await?;
            sqlx::query("SELECT version, applied_at FROM schema_migrations")
                .fetch_all(&mut conn)
                .await
                .map_err(map_error)?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        }
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| Status {
            migration: *m,
            applied_at: applied.iter().find(|(v, _)| *v == m.version).map(|(_, at)| *at),
        })
        .collect())
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, RepoError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| RepoError::Unavailable(format!("cannot connect to {}: {e}", redact_url(url)).into()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection ended");
        }
    });
    Ok(client)
}

fn pg_error(error: tokio_postgres::Error) -> RepoError {
    match error.as_db_error() {
        Some(db) => RepoError::Other(format!("{}: {}", db.code().code(), db.message()).into()),
        None => RepoError::Unavailable(error.into()),
    }
}

async fn pg_ensure_table(client: &tokio_postgres::Client) -> Result<(), RepoError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg_error)
}

async fn run_postgres(url: &str) -> Result<Vec<Migration>, RepoError> {
    let mut client = pg_connect(url).await?;
    // Held until this session ends or unlocks: a second instance waits here
    // and then finds nothing left to do.
    client.execute("SELECT pg_advisory_lock($1)", &[&PG_LOCK_KEY]).await.map_err(pg_error)?;
    let result = async {
        pg_ensure_table(&client).await?;
        let applied: Vec<i64> = client
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut done = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.batch_execute(migration.sql(Backend::Postgres)).await.map_err(|e| {
                RepoError::Other(
                    format!("migration {} ({}) failed: {}", migration.version, migration.name, pg_error(e))
                        .into(),
                )
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            tracing::info!(version = migration.version, name = migration.name, "migration applied");
            done.push(*migration);
        }
        Ok(done)
    }
    .await;
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&PG_LOCK_KEY]).await;
    result
}

async fn sqlite_connect(url: &str) -> Result<sqlx::SqliteConnection, RepoError> {
    let options = super::sqlite::options(url)?;
    super::sqlite::prepare_files(url, &options)?;
    sqlx::SqliteConnection::connect_with(&options).await.map_err(map_error)
}

async fn sqlite_ensure_table(conn: &mut sqlx::SqliteConnection) -> Result<(), RepoError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await
    .map(drop)
    .map_err(map_error)
}

/// Retries while another instance holds the database's lock in a way the
/// busy timeout does not cover: SQLite answers "database is locked" at once,
/// without waiting, when two connections race to switch a new file to WAL or
/// to upgrade a read lock to a write lock. Bounded: 40 tries, 100 ms apart.
async fn run_sqlite_retrying(url: &str) -> Result<Vec<Migration>, RepoError> {
    const TRIES: u32 = 40;
    let mut tries = 0;
    loop {
        match run_sqlite(url).await {
            // SQLITE_BUSY or SQLITE_LOCKED, told by their codes.
            Err(RepoError::Contention(why)) if tries < TRIES => {
                tries += 1;
                tracing::debug!(why, tries, "database locked by another migrator; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn run_sqlite(url: &str) -> Result<Vec<Migration>, RepoError> {
    let mut conn = sqlite_connect(url).await?;
    sqlite_ensure_table(&mut conn).await?;
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        // BEGIN IMMEDIATE takes the write lock now, so two instances
        // serialise here and the second sees the first's row.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.map_err(map_error)?;
        let result = async {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(migration.version)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(map_error)?;
            if applied.is_some() {
                return Ok(false);
            }
            sqlx::raw_sql(migration.sql(Backend::Sqlite)).execute(&mut conn).await.map_err(|e| {
                RepoError::Other(
                    format!("migration {} ({}) failed: {e}", migration.version, migration.name).into(),
                )
            })?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
                .bind(migration.version)
                .bind(migration.name)
                .bind(now)
                .execute(&mut conn)
                .await
                .map_err(map_error)?;
            Ok::<_, RepoError>(true)
        }
        .await;
        match result {
            Ok(applied) => {
                sqlx::query("COMMIT").execute(&mut conn).await.map_err(map_error)?;
                if applied {
                    tracing::info!(version = migration.version, name = migration.name, "migration applied");
                    done.push(*migration);
                }
            }
            Err(error) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                return Err(error);
            }
        }
    }
    Ok(done)
}

/// The name of drover's migration lock among the server's named locks.
const MYSQL_LOCK: &str = "drover_migrations";
/// How long a second instance waits for the first one's migrations.
const MYSQL_LOCK_WAIT_S: i64 = 60;

async fn mysql_connect(url: &str) -> Result<sqlx::MySqlConnection, RepoError> {
    let options = super::mysql::options(url)?;
    sqlx::MySqlConnection::connect_with(&options)
        .await
        .map_err(|e| RepoError::Unavailable(format!("cannot connect to {}: {e}", redact_url(url)).into()))
}

async fn mysql_ensure_table(conn: &mut sqlx::MySqlConnection) -> Result<(), RepoError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT NOT NULL PRIMARY KEY,
            name VARCHAR(200) NOT NULL,
            applied_at BIGINT NOT NULL
        ) ENGINE = InnoDB",
    )
    .execute(&mut *conn)
    .await
    .map(drop)
    .map_err(map_error)
}

async fn run_mysql(url: &str) -> Result<Vec<Migration>, RepoError> {
    let mut conn = mysql_connect(url).await?;
    // Held until released or the session ends: a second instance waits here
    // and then finds nothing left to do.
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(MYSQL_LOCK)
        .bind(MYSQL_LOCK_WAIT_S)
        .fetch_one(&mut conn)
        .await
        .map_err(map_error)?;
    if locked != Some(1) {
        return Err(RepoError::Unavailable(
            format!("another instance held the migration lock for {MYSQL_LOCK_WAIT_S}s").into(),
        ));
    }
    let result = async {
        mysql_ensure_table(&mut conn).await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut conn)
            .await
            .map_err(map_error)?;
        let mut done = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            // DDL commits by itself on MariaDB: no transaction to wrap it in.
            sqlx::raw_sql(migration.sql(Backend::MySql)).execute(&mut conn).await.map_err(|e| {
                RepoError::Other(
                    format!("migration {} ({}) failed: {e}", migration.version, migration.name).into(),
                )
            })?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
                .bind(migration.version)
                .bind(migration.name)
                .bind(now)
                .execute(&mut conn)
                .await
                .map_err(map_error)?;
            tracing::info!(version = migration.version, name = migration.name, "migration applied");
            done.push(*migration);
        }
        Ok(done)
    }
    .await;
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)").bind(MYSQL_LOCK).execute(&mut conn).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files under `migrations/` and the compiled list agree: every
    /// backend has exactly one file per declared migration, named after it.
    #[test]
    fn the_files_on_disk_are_the_declared_migrations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let declared: Vec<String> = MIGRATIONS.iter().map(Migration::file_name).collect();
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1, "versions run 1, 2, 3, ... in order");
        }
        for backend in ["postgres", "sqlite", "mysql"] {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(backend))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            assert_eq!(on_disk, declared, "migrations/{backend}");
        }
    }
}
