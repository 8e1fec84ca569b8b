//! systemd's notification protocol, spoken for real: the test is the
//! service manager's notify socket and checks the messages and their order.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{Drover, Options, TempDir};

/// Collects every datagram sent to a socket of the test's own.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        // Ends when the directory (and so the socket path) is gone and
        // nothing arrives; bounded by the test's own lifetime either way.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                if let Ok(n) = socket.recv(&mut buf) {
                    sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Self { path, messages, _dir: dir }
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
    let verify = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "{stderr}");
}
