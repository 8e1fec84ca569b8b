//! SQLite through sqlx: the embedded default, so a fresh machine runs with
//! no set-up. Several worker processes share one database file safely: WAL
//! mode lets readers run beside the one writer, and the busy timeout makes a
//! writer wait for the lock instead of failing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::private_files;

use super::via_sqlx::{map_error, SqlxPool, StreamPool};
use super::{DbSettings, RepoError};

/// How long a writer waits for another process's write lock. Writes here
/// are single rows, so seconds of waiting means something is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker's SQLite connections. Cheap to clone.
pub type SqliteDatabase = SqlxPool<sqlx::Sqlite>;

/// Opens a worker's SQLite pool, creating the database file (privately)
/// if it is missing.
pub async fn connect(settings: &DbSettings) -> Result<SqliteDatabase, RepoError> {
    let options = options(&settings.url)?;
    prepare_files(&settings.url, &options)?;
    let pool_options = SqlitePoolOptions::new().acquire_timeout(settings.query_timeout);
    let streams = StreamPool::new(pool_options.clone(), settings.stream_connections, options.clone());
    let pool = pool_options
        .max_connections(u32::try_from(settings.sqlite_pool_size.max(1)).unwrap_or(u32::MAX))
        .connect_with(options)
        .await
        .map_err(map_error)?;
    Ok(SqlxPool::new(pool, streams, settings.query_timeout))
}

/// Connection options for a `sqlite:` URL: created if missing, WAL, busy
/// timeout, foreign keys on.
pub fn options(url: &str) -> Result<SqliteConnectOptions, RepoError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| RepoError::Other(format!("invalid SQLite URL {url}: {e}").into()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across application crashes in WAL mode and only
        // risks the last transactions on power loss; FULL would fsync
        // every commit.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true))
}

/// The files SQLite keeps beside the database in WAL mode.
const COMPANION_SUFFIXES: [&str; 2] = ["-wal", "-shm"];

/// Readies the database's files before SQLite opens them, so that only
/// drover's user can read them (they hold password hashes), whatever the
/// umask: the directory is created 0700 and the database file 0600. SQLite
/// gives the `-wal` and `-shm` files it creates the database file's mode
/// (`findCreateFileMode` in its unix VFS), so they are 0600 too. Files left
/// readable by an older drover are narrowed to 0600. An in-memory database
/// has no files.
pub(crate) fn prepare_files(url: &str, options: &SqliteConnectOptions) -> Result<(), RepoError> {
    if in_memory(url) {
        return Ok(());
    }
    let path = options.get_filename();
    let failed = |what: &Path, e: std::io::Error| {
        RepoError::Other(format!("cannot create {}: {e}", what.display()).into())
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_files::create_dir(parent).map_err(|e| failed(parent, e))?;
    }
    private_files::create_file(path).map_err(|e| failed(path, e))?;
    let companions = COMPANION_SUFFIXES.map(|suffix| with_suffix(path, suffix));
    for file in std::iter::once(path).chain(companions.iter().map(PathBuf::as_path)) {
        // Not fatal: a file someone else owns cannot be changed, and the
        // server can still run on it.
        match private_files::narrow(file) {
            Ok(None) => {}
            Ok(Some(old)) => tracing::warn!(
                path = %file.display(),
                mode = format!("{old:o}"),
                "the database file was readable by other users; made it private to its owner"
            ),
            Err(error) => tracing::warn!(
                path = %file.display(),
                %error,
                "the database file is readable by other users and its mode cannot be changed"
            ),
        }
    }
    Ok(())
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`,
/// `?mode=memory`), read the way sqlx reads it. sqlx keeps that to itself.
fn in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:"
        || form_urlencoded::parse(params.as_bytes()).any(|(key, value)| key == "mode" && value == "memory")
}

/// `data/drover.db` with `-wal` → `data/drover.db-wal`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Runs under the test process's umask (022 as a rule), under which
    /// SQLite's own default would be 0644 for every file: the database's
    /// companions come out 0600 only because SQLite copies the database
    /// file's mode. (tests/api/perms.rs checks the same with umask 000.)
    #[tokio::test]
    async fn the_directory_is_private_and_so_are_the_database_and_its_wal_files() {
        let root = std::env::temp_dir().join(format!("drover-sqlite-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let db = root.join("data/drover.db");
        let settings = DbSettings {
            url: format!("sqlite://{}", db.display()),
            pg_clients: 1,
            pg_pool_size: 1,
            pg_pipelining: true,
            sqlite_pool_size: 1,
            mysql_pool_size: 1,
            stream_connections: 1,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        };
        let database = connect(&settings).await.unwrap();
        // A write, so the WAL and its index exist.
        database.timed(sqlx::query("CREATE TABLE t (x INTEGER)").execute(database.pool())).await.unwrap();
        database.timed(sqlx::query("INSERT INTO t VALUES (1)").execute(database.pool())).await.unwrap();
        assert_eq!(mode(&root.join("data")), 0o700);
        for file in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        database.pool().close().await;

        // Files an older drover left readable are narrowed when opened.
        for file in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let database = connect(&settings).await.unwrap();
        database.timed(sqlx::query("SELECT 1").execute(database.pool())).await.unwrap();
        for file in [db.clone(), with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        database.pool().close().await;
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A lock held by another connection is contention, told by SQLite's
    /// result code rather than its message.
    #[tokio::test]
    async fn a_lock_held_elsewhere_is_contention() {
        use sqlx::Connection;
        let root = std::env::temp_dir().join(format!("drover-sqlite-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let url = format!("sqlite://{}", root.join("busy.db").display());
        let holder_options = options(&url).unwrap();
        let mut holder = sqlx::SqliteConnection::connect_with(&holder_options).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
        let other_options = options(&url).unwrap().busy_timeout(Duration::ZERO);
        let mut other = sqlx::SqliteConnection::connect_with(&other_options).await.unwrap();
        let error = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_err();
        // The driver's error is the cause, whole: inspectable by type.
        match map_error(error) {
            RepoError::Contention(cause) => assert!(cause.downcast_ref::<sqlx::Error>().is_some(), "{cause}"),
            other => panic!("expected contention, got {other:?}"),
        }
        drop((holder, other));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn in_memory_databases_have_no_files() {
        let check = |url: &str, expect: bool| assert_eq!(in_memory(url), expect, "{url}");
        check("sqlite::memory:", true);
        check("sqlite://:memory:", true);
        check("sqlite://?mode=memory", true);
        check("sqlite://drover-test.db?mode=memory&cache=private", true);
        check("sqlite://data/drover.db", false);
        check("sqlite:///var/lib/drover/drover.db?mode=rwc", false);
        check("sqlite://memory.db", false);
        for url in ["sqlite::memory:", "sqlite://drover-test-memory.db?mode=memory"] {
            prepare_files(url, &options(url).unwrap()).unwrap();
        }
        assert!(!Path::new("drover-test-memory.db").exists());
    }
}
