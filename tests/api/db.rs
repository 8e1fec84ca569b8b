//! Databases for tests: a fresh PostgreSQL or MariaDB database per test on
//! the machine's servers (dropped afterwards), a private PostgreSQL cluster
//! for tests that stop and restart the server, and a fresh SQLite file.
//!
//! Without a reachable server, its tests skip with a message, except under
//! CI (`CI=true`), where they fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::helpers::TempDir;

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (locally) or fails (in CI) when PostgreSQL is not there.
fn unavailable(why: &str) -> Option<PgDatabase> {
    assert!(!in_ci(), "PostgreSQL is required in CI: {why}");
    eprintln!("SKIPPED: PostgreSQL not reachable ({why}); set TEST_POSTGRES_URL or start it");
    None
}

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// A database name no other test (or test run) uses.
fn unique_name() -> String {
    format!(
        "drover_test_{}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    )
}

/// The MariaDB server tests create their databases on.
pub fn mysql_admin_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A MariaDB database created for one test, dropped with it.
pub struct MyDatabase {
    pub url: String,
    name: String,
}

impl MyDatabase {
    /// A fresh, empty database, or `None` (skip) without a server.
    pub async fn create() -> Option<Self> {
        use sqlx::Connection;
        let admin = mysql_admin_url();
        let mut conn = match sqlx::MySqlConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(error) => {
                assert!(!in_ci(), "MariaDB is required in CI: {error}");
                eprintln!("SKIPPED: MariaDB not reachable ({error}); set TEST_MYSQL_URL or start it");
                return None;
            }
        };
        let name = unique_name();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_MYSQL_URL needs a database path"),
        };
        Some(Self { url, name })
    }
}

impl Drop for MyDatabase {
    fn drop(&mut self) {
        let (admin, name) = (mysql_admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&admin).await {
                    // Bounded: a session left open inside a transaction would
                    // otherwise make the drop wait (MariaDB's default is a year).
                    let sql = format!("SET SESSION lock_wait_timeout = 10; DROP DATABASE IF EXISTS {name}");
                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// A database created for one test, dropped with it.
pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// A fresh, empty database, or `None` (skip) without a server.
    pub async fn create() -> Option<Self> {
        let admin = admin_url();
        let client = match connect(&admin).await {
            Ok(client) => client,
            Err(error) => return unavailable(&error.to_string()),
        };
        let name = unique_name();
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("TEST_POSTGRES_URL needs a database path"),
        };
        Some(Self { url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop cannot await; a short-lived thread with its own runtime can.
        let (admin, name) = (admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(client) = connect(&admin).await {
                    let _ =
                        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A PostgreSQL cluster of the test's own, on its own port, so a test can
/// stop and restart it without disturbing anything else.
pub struct PrivateCluster {
    dir: TempDir,
    pub port: u16,
    server: Option<Child>,
    bin: PathBuf,
    uid: u32,
    gid: u32,
}

impl PrivateCluster {
    /// Creates and starts a cluster, or `None` (skip) where PostgreSQL's
    /// binaries or its system user are missing.
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            assert!(!in_ci(), "PostgreSQL server binaries are required in CI");
            eprintln!("SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql");
            return None;
        };
        let Some((uid, gid)) = postgres_user() else {
            assert!(!in_ci(), "the postgres system user is required in CI");
            eprintln!("SKIPPED: no postgres system user");
            return None;
        };
        let dir = TempDir::new("pg");
        // The server refuses to run as root; the directory must be the
        // postgres user's.
        let status =
            Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(dir.path()).status().unwrap();
        assert!(status.success());
        let data = dir.path().join("data");
        let output = std::process::Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "root", "--no-sync", "-E", "UTF8"])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cluster = Self { dir, port, server: None, bin, uid, gid };
        cluster.resume();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on the same data and port, and waits until
    /// it accepts connections.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.path().display()))
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        // Callers are async tests; a runtime of our own must live (and be
        // dropped) on a thread of its own.
        let url = self.url();
        let up = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if runtime.block_on(connect(&url)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
        .join()
        .unwrap();
        assert!(up, "private PostgreSQL did not start");
    }

    /// Stops the server (fast shutdown: connections are closed) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            crate::helpers::send(child.id(), libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

use std::os::unix::process::CommandExt;

fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.into_iter().rev().map(|v| v.join("bin")).find(|bin| bin.join("postgres").exists())
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres"))
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}
