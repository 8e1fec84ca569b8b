//! Caching through the real binary: read-after-write through different
//! workers, one database read per worker for a stampede on a cold key, and
//! a Redis that dies and comes back while requests flow.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{call, register, token_for};
use crate::helpers::{get, Conn, Drover, Options, TempDir};

/// A redis-server of the test's own, on its own port, killed by pid.
struct PrivateRedis {
    port: u16,
    server: Option<Child>,
    dir: TempDir,
}

impl PrivateRedis {
    fn start() -> Option<Self> {
        let binary = which("redis-server");
        if binary.is_none() {
            assert!(std::env::var("CI").map_or(true, |ci| ci != "true"), "redis-server is required in CI");
            eprintln!("SKIPPED: redis-server not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, server: None, dir: TempDir::new("redis") };
        redis.resume();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|p| p.exists())
}

/// One keep-alive connection per worker, keyed by pid.
async fn connection_per_worker(addr: SocketAddr, workers: usize) -> HashMap<u64, Conn> {
    let mut conns = HashMap::new();
    for _ in 0..500 {
        let mut conn = Conn::connect(addr).await.unwrap();
        let pid = conn.get("/healthz").await.unwrap().json()["pid"].as_u64().unwrap();
        conns.entry(pid).or_insert(conn);
        if conns.len() == workers {
            return conns;
        }
    }
    panic!("could not reach every worker");
}

async fn send(
    conn: &mut Conn,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> crate::helpers::Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n");
    if !body.is_empty() {
        request.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    conn.send(request.as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

async fn cache_counters(conn: &mut Conn) -> Value {
    conn.get("/healthz").await.unwrap().json()["cache"].clone()
}

/// Writes through one worker, reads at once through the other: the read
/// always sees the write, although both workers had the old value cached.
async fn read_after_write(drover: &Drover) {
    let addr = drover.addr;
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    let mut conns = connection_per_worker(addr, 2).await;
    let pids: Vec<u64> = conns.keys().copied().collect();
    for round in 0..20 {
        // Warm both workers' caches with the current value.
        for pid in &pids {
            let conn = conns.get_mut(pid).unwrap();
            assert_eq!(send(conn, "GET", "/v1/users/me", &token, None).await.status, 200);
            assert_eq!(send(conn, "GET", "/v1/users/me", &token, None).await.status, 200);
        }
        let (writer, reader) = if round % 2 == 0 { (pids[0], pids[1]) } else { (pids[1], pids[0]) };
        let name = format!("Ada {round}");
        let patched = send(
            conns.get_mut(&writer).unwrap(),
            "PATCH",
            "/v1/users/me",
            &token,
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(patched.status, 200);
        let read = send(conns.get_mut(&reader).unwrap(), "GET", "/v1/users/me", &token, None).await;
        assert_eq!(read.json()["name"], name.as_str(), "round {round}: the other worker serves the write");
    }
    // The caches were really used.
    let mut hits = 0;
    for pid in &pids {
        hits += cache_counters(conns.get_mut(pid).unwrap()).await["local_hits"].as_u64().unwrap();
    }
    assert!(hits >= 20, "local hits: {hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_after_write_through_another_worker_with_the_in_process_tier_only() {
    let drover = Drover::start(2);
    read_after_write(&drover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_after_write_through_another_worker_with_redis() {
    let Some(redis) = PrivateRedis::start() else { return };
    let url = redis.url();
    let drover =
        Drover::start_with(Options { workers: 2, args: vec!["--redis-url", &url], ..Options::default() });
    read_after_write(&drover).await;
    let ready = get(drover.addr, "/readyz").await.unwrap().json();
    assert_eq!(ready["redis"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_a_cold_key_reads_the_database_once_per_worker() {
    let drover = Drover::start(2);
    let addr = drover.addr;
    let id = register(addr, "ada@example.com", "correct horse", "Ada").await.json()["id"].as_i64().unwrap();
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    let mut conns = connection_per_worker(addr, 2).await;
    let mut before = HashMap::new();
    for (pid, conn) in &mut conns {
        before.insert(*pid, cache_counters(conn).await["loads"].as_u64().unwrap());
    }
    // 100 requests at once, on 100 connections spread over both workers.
    let path = format!("/v1/users/{id}");
    let mut requests = Vec::new();
    for _ in 0..100 {
        let (token, path) = (token.clone(), path.clone());
        requests.push(tokio::spawn(async move { call(addr, "GET", &path, Some(&token), None).await }));
    }
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["name"], "Ada");
    }
    for (pid, conn) in &mut conns {
        let loads = cache_counters(conn).await["loads"].as_u64().unwrap() - before[pid];
        assert!(loads <= 1, "worker {pid} read the database {loads} times for one key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_returning_fails_no_request_and_caching_resumes() {
    let Some(mut redis) = PrivateRedis::start() else { return };
    let url = redis.url();
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--redis-url", &url],
        // Short local TTL, so reads keep going to Redis during the test.
        env: vec![("DROVER_CACHE__LOCAL_TTL", "50ms"), ("DROVER_CACHE__BREAKER_COOLDOWN", "500ms")],
        ..Options::default()
    });
    let addr = drover.addr;
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    let redis_hits = |drover_addr| async move {
        let mut conns = connection_per_worker(drover_addr, 2).await;
        let mut total = 0;
        for conn in conns.values_mut() {
            total += cache_counters(conn).await["redis_hits"].as_u64().unwrap();
        }
        total
    };

    // Reads and writes flow through the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let (stop, token) = (stop.clone(), token.clone());
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0u64, Vec::new());
            let mut conn = Conn::connect(addr).await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let response = if n % 20 == 0 {
                    send(
                        &mut conn,
                        "PATCH",
                        "/v1/users/me",
                        &token,
                        Some(json!({ "name": format!("Ada {n}") })),
                    )
                    .await
                } else {
                    send(&mut conn, "GET", "/v1/users/me", &token, None).await
                };
                if response.status == 200 {
                    ok += 1;
                } else {
                    failures.push(format!(
                        "{}: {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(redis_hits(addr).await > 0, "Redis serves hits before the outage");

    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(addr, "/readyz").await.unwrap();
        assert_eq!(ready.status, 200, "Redis down does not make drover unready");
        if ready.json()["redis"] == "degraded" {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never showed Redis as degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    redis.resume();
    let hits_before = redis_hits(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let up = get(addr, "/readyz").await.unwrap().json()["redis"] == "up";
        if up && redis_hits(addr).await > hits_before {
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed after Redis came back\n{}", drover.log());
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = flow.await.unwrap();
    assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(ok > 100, "too few requests to mean anything: {ok}");
    // Every worker noticed, and the last write is what everyone reads.
    let me = call(addr, "GET", "/v1/users/me", Some(&token), None).await.json();
    let fresh = call(addr, "GET", "/v1/users/me", Some(&token), None).await.json();
    assert_eq!(me["name"], fresh["name"]);
}
