//! Caching through the real binary: read-after-write through different
//! workers, one database read per worker for a stampede on a cold key, a
//! Redis that dies and comes back while requests flow, and a write during
//! a Redis outage that no worker reads stale once Redis is back.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

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

/// A TCP proxy between drover and a Redis. `cut` closes every connection
/// through it and refuses new ones while Redis runs on with its data, as in
/// a network partition: the values cached before the outage are still
/// there when it ends. (Never stop or reconfigure the machine's shared
/// Redis: other tests use it.)
struct RedisProxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// The tasks copying bytes, one per proxied connection; aborting one
    /// closes both of its sockets.
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl RedisProxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::<JoinHandle<()>>::new()));
        let accept = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        // Dropped: the client sees its connection closed.
                        continue;
                    }
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                    let link = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    let mut links = links.lock().unwrap();
                    // A cut that came while connecting has already drained
                    // the list: this link must not outlive it.
                    if up.load(Ordering::SeqCst) {
                        links.push(link);
                    } else {
                        link.abort();
                    }
                }
            }
        });
        Self { port, up, links, accept }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
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
pub async fn connection_per_worker(addr: SocketAddr, workers: usize) -> HashMap<u64, Conn> {
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
        // Two keys: the user, and its standing (read to authenticate the
        // token); each loaded at most once.
        let loads = cache_counters(conn).await["loads"].as_u64().unwrap() - before[pid];
        assert!(loads <= 2, "worker {pid} read the database {loads} times for two keys");
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

/// Between reads that wait for a worker to be served from Redis: longer
/// than the 50 ms local TTL the outage test sets, so each read asks Redis.
const REDIS_POLL: Duration = Duration::from_millis(100);

/// How long the outage lasts: longer than the Redis tier's retry round
/// (1 s), so a retry that gave up an owed delete would have done so.
const OUTAGE: Duration = Duration::from_millis(1500);

/// How long a worker may take to read from Redis again once it is back
/// (reconnect with backoff, then the breaker's 500 ms cooldown).
const REDIS_RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads `/v1/users/me` as `token` on `conn` (one worker) until a read is
/// served from Redis, checking every read says `name`.
async fn read_until_served_from_redis(conn: &mut Conn, token: &str, name: &str, drover: &Drover) {
    let deadline = Instant::now() + REDIS_RECOVERY_TIMEOUT;
    loop {
        let before = cache_counters(conn).await["redis_hits"].as_u64().unwrap();
        let read = send(conn, "GET", "/v1/users/me", token, None).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.json()["name"], name, "{}", drover.log());
        if cache_counters(conn).await["redis_hits"].as_u64().unwrap() > before {
            return;
        }
        assert!(Instant::now() < deadline, "never served {name} from Redis\n{}", drover.log());
        tokio::time::sleep(REDIS_POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_a_redis_outage_is_read_fresh_by_another_worker_once_redis_is_back() {
    let Some(redis) = PrivateRedis::start() else { return };
    let proxy = RedisProxy::start(redis.port).await;
    let url = proxy.url();
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--redis-url", &url],
        // Local copies expire at once, so reads go to Redis and would serve
        // whatever it holds; Redis is tried again soon after it is back.
        env: vec![("DROVER_CACHE__LOCAL_TTL", "50ms"), ("DROVER_CACHE__BREAKER_COOLDOWN", "500ms")],
        ..Options::default()
    });
    let addr = drover.addr;
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    assert_eq!(register(addr, "bob@example.com", "battery staple", "Bob").await.status, 201);
    let ada = token_for(addr, "ada@example.com", "correct horse").await;
    let bob = token_for(addr, "bob@example.com", "battery staple").await;
    let mut conns = connection_per_worker(addr, 2).await;
    let pids: Vec<u64> = conns.keys().copied().collect();
    let (writer, reader) = (pids[0], pids[1]);

    // Ada's record is in Redis: the reader is served it from there.
    read_until_served_from_redis(conns.get_mut(&reader).unwrap(), &ada, "Ada", &drover).await;

    proxy.cut();
    let patched = send(
        conns.get_mut(&writer).unwrap(),
        "PATCH",
        "/v1/users/me",
        &ada,
        Some(json!({ "name": "Ada Lovelace" })),
    )
    .await;
    assert_eq!(patched.status, 200, "a write succeeds without Redis");
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();

    // The reader is served from Redis again (Bob's record, which no write
    // touched), while Redis may still hold Ada's old record.
    read_until_served_from_redis(conns.get_mut(&reader).unwrap(), &bob, "Bob", &drover).await;
    let read = send(conns.get_mut(&reader).unwrap(), "GET", "/v1/users/me", &ada, None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["name"], "Ada Lovelace", "the reader served the value the write replaced");

    // Every later read, by either worker, is fresh too, and Ada's record is
    // served from Redis again once the owed deletes are made.
    for _ in 0..10 {
        for pid in &pids {
            let read = send(conns.get_mut(pid).unwrap(), "GET", "/v1/users/me", &ada, None).await;
            assert_eq!(read.json()["name"], "Ada Lovelace", "worker {pid}");
        }
        tokio::time::sleep(REDIS_POLL).await;
    }
    read_until_served_from_redis(conns.get_mut(&reader).unwrap(), &ada, "Ada Lovelace", &drover).await;
}
