//! Test helpers: start the real `drover` binary on a free port, find its
//! workers, talk HTTP/1.1 to it with a small client that reports every
//! failure precisely, and clean up every process by pid.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for drover to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("drover-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An executable script in `dir` that runs `setup` in a shell and then
/// execs the drover under test with its arguments: for what a test cannot
/// change in its own process (the umask, rlimits) without changing it for
/// every test running beside it.
pub fn drover_wrapped(dir: &TempDir, setup: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.path().join("drover-wrapped");
    let script = format!("#!/bin/sh\n{setup}\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_drover"));
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// A running `drover serve`, killed with all its workers on drop.
pub struct Drover {
    child: Option<Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: Option<SocketAddr>,
    pub dir: TempDir,
    /// Every worker pid this test has seen, so drop can kill them too.
    seen_workers: Mutex<HashSet<u32>>,
}

/// How to start drover.
#[derive(Default)]
pub struct Options<'a> {
    pub workers: usize,
    pub args: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
    /// Another `drover` executable to run (default: the one cargo built).
    pub program: Option<&'a Path>,
}

impl Drover {
    /// Starts `drover serve --workers N` on 127.0.0.1:0 and waits until every
    /// worker is ready.
    pub fn start(workers: usize) -> Self {
        Self::start_with(Options { workers, ..Options::default() })
    }

    pub fn start_with(options: Options<'_>) -> Self {
        let dir = TempDir::new("serve");
        let ready = dir.path().join("ready.json");
        let log = std::fs::File::create(dir.path().join("drover.log")).unwrap();
        // TEST_DROVER_BIN runs the suite against another build, such as the
        // last release, to see a new test fail without its fix.
        let override_bin = std::env::var_os("TEST_DROVER_BIN").map(PathBuf::from);
        let program =
            options.program.or(override_bin.as_deref()).unwrap_or(Path::new(env!("CARGO_BIN_EXE_drover")));
        let mut command = Command::new(program);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--workers", &options.workers.to_string()])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--control-socket")
            .arg(dir.path().join("drover.sock"))
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&options.args)
            .env_remove("RUST_LOG")
            // The process-model tests count HTTP workers; tests of the job
            // processes ask for them (tests/api/jobs.rs).
            .env("DROVER_JOBS__WORKERS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let child = command.spawn().expect("drover starts");
        let pid = child.id();
        let mut drover = Drover {
            child: Some(child),
            pid,
            addr: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            dir,
            seen_workers: Mutex::new(HashSet::new()),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(json["pid"].as_u64(), Some(u64::from(pid)));
                drover.addr = json["listen"][0].as_str().unwrap().parse().unwrap();
                drover.admin = json["admin"].as_str().map(|a| a.parse().unwrap());
                break;
            }
            if let Some(status) = drover.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("drover exited before ready: {status}\n{}", drover.log());
            }
            assert!(Instant::now() < deadline, "drover not ready in time\n{}", drover.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        drover.worker_pids();
        drover
    }

    /// The log written so far (stderr of supervisor and workers).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("drover.log")).unwrap_or_default()
    }

    /// Pids of the supervisor's live child processes, from /proc.
    pub fn worker_pids(&self) -> HashSet<u32> {
        let pids = children_of(self.pid);
        self.seen_workers.lock().unwrap().extend(&pids);
        pids
    }

    /// The supervisor pid the ready file names now (it changes with an
    /// upgrade).
    pub fn ready_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("ready.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["pid"].as_u64().unwrap() as u32
    }

    /// Kills `pid` (and its children) when this handle drops.
    pub fn also_clean_up(&self, pid: u32) {
        let mut seen = self.seen_workers.lock().unwrap();
        seen.insert(pid);
        seen.extend(children_of(pid));
    }

    /// Sends a signal to the supervisor.
    pub fn signal(&self, signal: i32) {
        send(self.pid, signal);
    }

    /// Waits for the supervisor to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, timeout: Duration, needle: &str) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "log never showed {needle}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `check` holds for the set of worker pids.
    pub fn wait_workers(&self, timeout: Duration, check: impl Fn(&HashSet<u32>) -> bool) -> HashSet<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.worker_pids();
            if check(&pids) {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "workers never reached the expected state: {pids:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Drover {
    fn drop(&mut self) {
        let mut pids = self.seen_workers.lock().unwrap().clone();
        pids.extend(children_of(self.pid));
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids {
            send(pid, libc::SIGKILL);
        }
    }
}

/// Child pids of `parent`, scanning /proc (works without CONFIG_PROC_CHILDREN).
pub fn children_of(parent: u32) -> HashSet<u32> {
    let mut pids = HashSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may contain spaces; fields resume after ") ".
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            pids.insert(pid);
        }
    }
    pids
}

/// Sends `signal` to `pid`; a process already gone is not an error here.
#[allow(unsafe_code)]
pub fn send(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pids are this
    // test's own processes.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// One HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The server will close the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(4096) })
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// `GET path` and its response.
    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes()).await?;
        self.read_response().await
    }

    /// Reads one response; EOF before a complete one is an error.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        loop {
            if let Some((response, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(response);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {} bytes of a response", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server has closed the connection (reads EOF).
    pub async fn is_closed_by_peer(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(wait, self.stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

fn parse(buf: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    let headers: HashMap<String, String> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let status = parsed.code.unwrap_or(0);
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let Some((body, used)) = dechunk(&buf[head..])? else { return Ok(None) };
        return Ok(Some((Response { status, headers, body }, head + used)));
    }
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if buf.len() < head + length {
        return Ok(None);
    }
    let response = Response { status, headers, body: buf[head..head + length].to_vec() };
    Ok(Some((response, head + length)))
}

/// A chunked body (RFC 9112 §7.1) and the bytes it took, once complete.
fn dechunk(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let (mut body, mut at) = (Vec::new(), 0);
    loop {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&buf[at..at + eol]).map_err(|_| invalid("chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // No trailers: the body ends with an empty line.
            return Ok((buf.len() >= at + 2).then(|| (body, at + 2)));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Conn::connect(addr).await?.get(path).await
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: u64,
    /// Every failed request, described.
    pub failures: Vec<String>,
    /// Worker pids that answered.
    pub pids: HashSet<u64>,
}

impl Report {
    /// Fails the test unless every request succeeded and at least `min_ok`
    /// did (less load would prove nothing); shows the log on failure.
    pub fn assert_clean(&self, drover: &Drover, min_ok: u64) {
        assert!(
            self.failures.is_empty(),
            "{} failures: {:?}\n{}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(10)],
            drover.log()
        );
        assert!(self.ok >= min_ok, "too little load to mean anything: {} requests", self.ok);
    }
}

/// How a load run behaves.
#[derive(Clone)]
pub struct Load {
    pub connections: usize,
    pub path: &'static str,
    /// Pause between requests on a connection (keeps it idle in between).
    pub pause: Duration,
    /// Hard caps, so a test is bounded whatever happens.
    pub max_requests_per_connection: u64,
    pub max_duration: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            connections: 8,
            path: "/healthz",
            pause: Duration::ZERO,
            max_requests_per_connection: 20_000,
            max_duration: Duration::from_secs(20),
        }
    }
}

/// Keeps `load.connections` keep-alive connections busy until `stop` is set
/// (or a cap is hit). A response with `Connection: close` makes the client
/// reconnect, as any HTTP client does; anything else unexpected (refused,
/// reset, EOF mid-response, a non-200) is a failure.
pub async fn run_load(addr: SocketAddr, load: Load, stop: Arc<std::sync::atomic::AtomicBool>) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let (report, stop, load) = (report.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed)
                && sent < load.max_requests_per_connection
                && started.elapsed() < load.max_duration
            {
                sent += 1;
                let c = match conn.take() {
                    Some(c) => c,
                    None => match Conn::connect(addr).await {
                        Ok(c) => c,
                        Err(e) => {
                            report.lock().unwrap().failures.push(format!("connect: {e}"));
                            continue;
                        }
                    },
                };
                let mut c = c;
                match c.get(load.path).await {
                    Ok(response) if response.status == 200 => {
                        let mut r = report.lock().unwrap();
                        r.ok += 1;
                        if let Some(pid) = serde_json::from_slice::<serde_json::Value>(&response.body)
                            .ok()
                            .and_then(|v| v["pid"].as_u64())
                        {
                            r.pids.insert(pid);
                        }
                        if !response.closes() {
                            conn = Some(c);
                        }
                    }
                    Ok(response) => report.lock().unwrap().failures.push(format!(
                        "status {}: {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    )),
                    Err(e) => report.lock().unwrap().failures.push(format!("request: {e}")),
                }
                if !load.pause.is_zero() {
                    tokio::time::sleep(load.pause).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(report).ok().unwrap().into_inner().unwrap()
}
