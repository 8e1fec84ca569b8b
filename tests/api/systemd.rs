//! systemd's notification protocol, spoken for real: the test is the
//! service manager's notify socket and checks the messages and their order.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{Drover, Options, TempDir};

/// Collects every datagram sent to a socket of the test's own, and the
/// file descriptors that come with them (`FDSTORE=1`).
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    stored: Arc<Mutex<Vec<(String, std::os::fd::OwnedFd)>>>,
    _dir: TempDir,
}

#[allow(unsafe_code)]
impl NotifySocket {
    fn bind() -> Self {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stored = Arc::new(Mutex::new(Vec::new()));
        let (sink, fd_sink) = (messages.clone(), stored.clone());
        // Bounded by time; the socket goes with the directory.
        std::thread::spawn(move || {
            use sendfd::RecvWithFd;
            let mut buf = [0u8; 4096];
            let mut fds = [0; 16];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                if let Ok((n, nfds)) = socket.recv_with_fd(&mut buf, &mut fds) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let name = text.lines().find_map(|l| l.strip_prefix("FDNAME=")).unwrap_or("").to_owned();
                    for &fd in &fds[..nfds] {
                        // SAFETY: the kernel just installed this fd in our
                        // process for this message; nothing else owns it.
                        let owned =
                            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                        fd_sink.lock().unwrap().push((name.clone(), owned));
                    }
                    sink.lock().unwrap().push(text);
                }
            }
        });
        Self { path, messages, stored, _dir: dir }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message contains `needle`; returns its index.
    fn wait_for(&self, needle: &str, after: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self.all().iter().skip(after).position(|m| m.contains(needle)) {
                return after + i;
            }
            assert!(Instant::now() < deadline, "no {needle:?} after message {after}: {:#?}", self.all());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_speaks_sd_notify_in_order() {
    let notify = NotifySocket::bind();
    let socket = notify.path.to_str().unwrap().to_owned();
    let mut drover = Drover::start_with(Options {
        workers: 2,
        env: vec![("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
        ..Options::default()
    });
    let ready = notify.wait_for("READY=1", 0);
    assert!(
        notify.all()[ready].contains("STATUS=running: 2/2 workers ready, generation 1"),
        "{:#?}",
        notify.all()
    );
    // Keep-alives at half the watchdog interval, while the workers are fine.
    let first_ping = notify.wait_for("WATCHDOG=1", ready);
    notify.wait_for("WATCHDOG=1", first_ping + 1);

    drover.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", ready + 1);
    let message = &notify.all()[reloading];
    let usec: u64 = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready_again = notify.wait_for("READY=1", reloading + 1);
    assert!(notify.all()[ready_again].contains("generation 2"), "{:#?}", notify.all());

    drover.signal(libc::SIGTERM);
    let stopping = notify.wait_for("STOPPING=1", ready_again + 1);
    assert!(stopping > ready_again);
    assert_eq!(drover.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0));
    // Only the supervisor speaks: every READY=1 came from it (two: start and
    // after the reload), none from the four workers it ran.
    let readies = notify.all().iter().filter(|m| m.contains("READY=1")).count();
    assert_eq!(readies, 2, "{:#?}", notify.all());
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Ok(output) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        assert!(std::env::var("CI").map_or(true, |ci| ci != "true"), "systemd-analyze is required in CI");
        eprintln!("SKIPPED: systemd-analyze not installed (apt-get install systemd)");
        return;
    };
    assert!(output.status.success());
    // verify checks that ExecStart's binary exists: point it at this build.
    let dir = TempDir::new("units");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/drover.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/drover", env!("CARGO_BIN_EXE_drover"));
    let path = dir.path().join("drover.service");
    std::fs::write(&path, unit).unwrap();
    let socket =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/drover.socket")).unwrap();
    let socket_path = dir.path().join("drover.socket");
    std::fs::write(&socket_path, socket).unwrap();
    let jobs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/drover-jobs.service")).unwrap();
    let jobs_path = dir.path().join("drover-jobs.service");
    std::fs::write(&jobs_path, jobs.replace("/usr/local/bin/drover", env!("CARGO_BIN_EXE_drover"))).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .arg(&socket_path)
        .arg(&jobs_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Starts `drover serve` the way systemd does for a socket unit: the
/// listening sockets as fds 3.., `LISTEN_FDS`, `LISTEN_FDNAMES`, and
/// `LISTEN_PID` naming drover itself (set by the shell that then execs it).
#[allow(unsafe_code)]
fn spawn_activated(
    sockets: &[std::net::TcpListener],
    names: &[&str],
    dir: &TempDir,
    workers: usize,
) -> std::process::Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let sources: Vec<i32> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--workers", &workers.to_string(), "--listen", "127.0.0.1:1"])
        .arg("--ready-file")
        .arg(dir.path().join("ready.json"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--control-socket")
        .arg(dir.path().join("drover.sock"))
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("drover.log")).unwrap());
    let mut scratch = vec![-1; sources.len()];
    // SAFETY: between fork and exec only fcntl and dup2, which are
    // async-signal-safe, on fds this test owns, into a buffer allocated
    // before the fork. Each source is first copied above the target range,
    // so a source sitting on a target number is not clobbered.
    unsafe {
        command.pre_exec(move || {
            let above = 3 + sources.len() as i32;
            for (tmp, &fd) in scratch.iter_mut().zip(&sources) {
                *tmp = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
                if *tmp < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &tmp) in scratch.iter().enumerate() {
                if libc::dup2(tmp, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_uses_the_passed_sockets_one_per_slot() {
    // The test is the socket passer: two reuseport sockets on one port, as
    // a .socket unit with two ListenStream= lines and ReusePort=yes makes.
    let first = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    first.set_reuse_port(true).unwrap();
    first.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    first.listen(128).unwrap();
    let addr = first.local_addr().unwrap().as_socket().unwrap();
    let second = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    second.set_reuse_port(true).unwrap();
    second.bind(&addr.into()).unwrap();
    second.listen(128).unwrap();
    let sockets: Vec<std::net::TcpListener> = vec![first.into(), second.into()];

    let dir = TempDir::new("activated");
    let mut child = spawn_activated(&sockets, &["http", "http"], &dir, 3);
    let pid = child.id();
    let ready = dir.path().join("ready.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            crate::helpers::send(pid, libc::SIGKILL);
            panic!(
                "not ready: {}",
                std::fs::read_to_string(dir.path().join("drover.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(json["listen"][0], addr.to_string(), "the passed address, not --listen");
    // Our own copies close; drover's keep the port open and serving.
    drop(sockets);
    let mut pids = std::collections::HashSet::new();
    for _ in 0..600 {
        let response = crate::helpers::get(addr, "/healthz").await.unwrap();
        pids.insert(response.json()["pid"].as_u64().unwrap());
        if pids.len() == 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "all three slots serve: two passed sockets and one of drover's");
    let workers = crate::helpers::children_of(pid);
    crate::helpers::send(pid, libc::SIGTERM);
    let status = child.wait().unwrap();
    for worker in workers {
        crate::helpers::send(worker, libc::SIGKILL);
    }
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("drover.log")).unwrap();
    assert!(log.contains("using the listening sockets passed by systemd"), "{log}");
}

/// Waits for `drover.log` in `dir` to say it is ready (the ready file).
fn wait_ready(dir: &TempDir, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("ready.json").exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            crate::helpers::send(child.id(), libc::SIGKILL);
            panic!(
                "not ready: {}",
                std::fs::read_to_string(dir.path().join("drover.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_kept_in_the_fd_store_survive_a_restart() {
    let notify = NotifySocket::bind();
    let socket = notify.path.to_str().unwrap().to_owned();
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![("NOTIFY_SOCKET", &socket)],
        ..Options::default()
    });
    let addr = drover.addr;
    notify.wait_for("FDSTORE=1", 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while notify.stored.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "both slots' sockets are stored: {:#?}", notify.all());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The service dies (a crash, or the stop half of a restart). Only the
    // store's copies keep the port open.
    drop(drover);
    let waiting = tokio::spawn(async move { crate::helpers::get(addr, "/healthz").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the connection waits in the queue instead of being refused");

    // systemd starts the service again and passes the stored sockets back,
    // in whatever order; the names say which slot each served.
    let mut stored: Vec<(String, std::net::TcpListener)> =
        std::mem::take(&mut *notify.stored.lock().unwrap())
            .into_iter()
            .map(|(name, fd)| (name, std::net::TcpListener::from(fd)))
            .collect();
    stored.reverse();
    let names: Vec<&str> = stored.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("drover-slot-")), "{names:?}");
    let sockets: Vec<std::net::TcpListener> = stored.iter().map(|(_, l)| l.try_clone().unwrap()).collect();
    let dir = TempDir::new("restarted");
    let mut child = spawn_activated(&sockets, &names, &dir, 2);
    wait_ready(&dir, &mut child);
    let answered = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(answered.status, 200, "the queued connection is served by the restarted drover");
    let workers = crate::helpers::children_of(child.id());
    crate::helpers::send(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    for worker in workers {
        crate::helpers::send(worker, libc::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_a_worker_is_stalled() {
    let notify = NotifySocket::bind();
    let socket = notify.path.to_str().unwrap().to_owned();
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![
            ("NOTIFY_SOCKET", &socket),
            ("WATCHDOG_USEC", "200000"),
            ("DROVER_WORKER__HEARTBEAT_INTERVAL", "100ms"),
            ("DROVER_WORKER__STALL_TIMEOUT", "4s"),
        ],
        ..Options::default()
    });
    let pings = || notify.all().iter().filter(|m| m.contains("WATCHDOG=1")).count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(pings() >= 3, "pings while every worker is alive: {:#?}", notify.all());
    let victim = *drover.worker_pids().iter().next().unwrap();
    crate::helpers::send(victim, libc::SIGSTOP);
    // Past half the stall timeout the pings stop, until the stalled worker
    // has been killed and replaced.
    // (Pings stop 2 s after the last heartbeat, the kill comes at 4 s;
    // watch the middle of that window.)
    std::thread::sleep(Duration::from_millis(2500));
    let silent_from = pings();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pings(), silent_from, "no keep-alive while a worker is stalled");
    drover.wait_workers(Duration::from_secs(15), |pids| pids.len() == 2 && !pids.contains(&victim));
    std::thread::sleep(Duration::from_millis(600));
    assert!(pings() > silent_from, "keep-alives resume once the worker is replaced");
}
