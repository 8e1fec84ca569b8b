//! The log format through the real binary. With no format configured, a
//! drover whose stderr is a terminal logs for a human, supervisor and workers
//! alike; one whose stderr is a file or a pipe logs JSON; a configured format
//! wins either way. The terminal is a pseudo-terminal this test opens.

use std::ffi::{CStr, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{children_of, send, TempDir};

/// How long drover may take to start, or to drain and exit.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What was written on a pseudo-terminal, collected from its controller
/// side by a thread, so the processes writing never block on a full buffer.
struct Pty {
    output: Arc<Mutex<Vec<u8>>>,
    /// Set once every process holding the terminal side has closed it.
    closed: Arc<AtomicBool>,
}

impl Pty {
    /// Opens a pseudo-terminal. Returns its terminal side, to be given to a
    /// child as its stderr and then dropped, so that the child's exit closes
    /// it.
    #[allow(unsafe_code)]
    fn open() -> io::Result<(Self, File)> {
        // std opens every file close-on-exec, so processes other tests start
        // meanwhile never inherit either side.
        let controller =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open("/dev/ptmx")?;
        // SAFETY: unlockpt only reads the fd, which is open for the call.
        if unsafe { libc::unlockpt(controller.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is writable for `name.len()` bytes, and
        // ptsname_r NUL-terminates what it writes there.
        let code = unsafe { libc::ptsname_r(controller.as_raw_fd(), name.as_mut_ptr(), name.len()) };
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
        let path = OsStr::from_bytes(unsafe { CStr::from_ptr(name.as_ptr()) }.to_bytes()).to_owned();
        let terminal = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(path)?;
        let pty = Self { output: Arc::new(Mutex::new(Vec::new())), closed: Arc::new(AtomicBool::new(false)) };
        let (sink, closed) = (pty.output.clone(), pty.closed.clone());
        let mut controller = controller;
        // Reading ends with EIO once every process holding the terminal side
        // has closed it, after what they wrote has been read.
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = controller.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            closed.store(true, Ordering::SeqCst);
        });
        Ok((pty, terminal))
    }

    /// Waits until every writer has closed the terminal, so the text is whole.
    fn wait_closed(&self) {
        wait_for("the terminal's close", TIMEOUT, || self.closed.load(Ordering::SeqCst), || self.text());
    }

    /// Everything written so far, without the terminal's carriage returns.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }
}

/// A child process (drover or a command of it), killed with its own
/// children if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        for pid in children_of(self.0.id()) {
            send(pid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `drover <args>` with `stderr` as its standard error and no format set
/// in the environment.
fn drover(args: &[&str], stderr: Stdio) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DROVER_LOG__FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    command
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen in time\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

#[test]
fn a_server_on_a_terminal_logs_for_humans_from_every_process() {
    let (pty, terminal) = Pty::open().expect("a pseudo-terminal");
    let dir = TempDir::new("tty");
    let ready = dir.path().join("ready.json");
    let (ready_arg, data_arg, socket_arg) = (
        ready.display().to_string(),
        dir.path().join("data").display().to_string(),
        dir.path().join("drover.sock").display().to_string(),
    );
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
        "--ready-file",
        &ready_arg,
        "--data-dir",
        &data_arg,
        "--control-socket",
        &socket_arg,
    ];
    // The command, which holds the terminal side, is dropped at once: the
    // processes of the server then hold the only copies.
    let mut server = Running(drover(&args, Stdio::from(terminal)).spawn().unwrap());
    let pid = server.0.id();
    wait_for("the ready file", TIMEOUT, || ready.exists(), || pty.text());
    wait_for("the worker's log line", TIMEOUT, || pty.text().contains("worker ready"), || pty.text());
    send(pid, libc::SIGTERM);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "drover did not exit after SIGTERM\n{}", pty.text());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", pty.text());
    pty.wait_closed();

    let text = pty.text();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing was logged");
    for line in &lines {
        assert!(!is_json(line), "a JSON line on a terminal: {line}\n{text}");
    }
    // The human form names who wrote each line: `<ts> INFO supervisor pid=N …`.
    let supervisor = format!("supervisor pid={pid} drover is ready");
    assert!(lines.iter().any(|l| l.contains(&supervisor)), "no {supervisor:?} line\n{text}");
    assert!(
        lines.iter().any(|l| l.contains(" worker[0] pid=") && l.contains("worker ready")),
        "no human line from the worker\n{text}"
    );
}

#[test]
fn a_configured_format_wins_and_auto_is_json_off_a_terminal() {
    let dir = TempDir::new("tty-format");
    let data = dir.path().join("data").display().to_string();
    let migrate = |format: Option<&str>, stderr: Stdio| {
        let mut args = vec!["migrate", "--data-dir", &data];
        if let Some(format) = format {
            args.extend(["--log-format", format]);
        }
        // A fresh database each time, so every run applies migrations and
        // logs about it.
        let _ = std::fs::remove_dir_all(&data);
        drover(&args, stderr)
    };
    let lines_of = |text: &str| -> Vec<String> {
        text.lines().filter(|l| l.contains("migration applied")).map(str::to_owned).collect()
    };

    // On a terminal: json when configured so, the human form when not.
    for (format, json) in [(Some("json"), true), (None, false), (Some("auto"), false)] {
        let (pty, terminal) = Pty::open().expect("a pseudo-terminal");
        let mut command = Running(migrate(format, Stdio::from(terminal)).spawn().unwrap());
        let status = command.0.wait().unwrap();
        assert!(status.success(), "{status}\n{}", pty.text());
        pty.wait_closed();
        let lines = lines_of(&pty.text());
        assert!(!lines.is_empty(), "no migration logged\n{}", pty.text());
        for line in lines {
            assert_eq!(is_json(&line), json, "--log-format {format:?} on a terminal: {line}");
        }
    }

    // Through a pipe: json, unless pretty is configured.
    for (format, json) in [(None, true), (Some("pretty"), false)] {
        let output = migrate(format, Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        let lines = lines_of(&stderr);
        assert!(!lines.is_empty(), "no migration logged\n{stderr}");
        for line in lines {
            assert_eq!(is_json(&line), json, "--log-format {format:?} through a pipe: {line}");
        }
    }
}

/// The access log's lines so far.
fn access_lines(drover: &crate::helpers::Drover) -> Vec<serde_json::Value> {
    drover
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "drover::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_off_by_default_and_samples_when_asked() {
    let quiet = crate::helpers::Drover::start(1);
    for _ in 0..3 {
        assert_eq!(crate::helpers::get(quiet.addr, "/healthz").await.unwrap().status, 200);
    }

    let drover = crate::helpers::Drover::start_with(crate::helpers::Options {
        workers: 1,
        env: vec![("DROVER_LOG__ACCESS_SAMPLE", "0.5")],
        ..crate::helpers::Options::default()
    });
    let mut conn = crate::helpers::Conn::connect(drover.addr).await.unwrap();
    let mut ids = Vec::new();
    for path in ["/healthz", "/bench/json?x=1", "/no/such/route", "/bench/plaintext"] {
        ids.push(conn.get(path).await.unwrap().header("x-request-id").unwrap().to_owned());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = access_lines(&drover);
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One request in two: the second and the fourth.
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["target_path"], "/bench/json?x=1");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["bytes"], 27);
    assert_eq!(lines[0]["request_id"], ids[1].as_str());
    assert!(lines[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(lines[0]["duration_us"].as_u64().is_some());
    assert_eq!(lines[1]["target_path"], "/bench/plaintext");
    assert!(access_lines(&quiet).is_empty(), "off unless log.access_sample is set");

    // A fraction outside 0..1 is a configuration error naming the key.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["config", "check"])
        .env("DROVER_LOG__ACCESS_SAMPLE", "2")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.access_sample"));
}
