//! Upgrading the supervisor itself (SIGUSR2): the binary on disk starts as
//! a new supervisor on the same sockets, and no request fails; a new
//! supervisor that cannot start leaves the old one serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{get, run_load, Drover, Load, Options, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_replaces_the_supervisor_under_load_with_zero_failed_requests() {
    let mut drover = Drover::start(2);
    let old_pid = drover.pid;
    let old_workers = drover.worker_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let runner =
        tokio::spawn(run_load(drover.addr, Load { connections: 32, ..Load::default() }, stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    drover.signal(libc::SIGUSR2);

    let deadline = Instant::now() + Duration::from_secs(30);
    while drover.ready_pid() == old_pid {
        assert!(Instant::now() < deadline, "no new supervisor\n{}", drover.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_pid = drover.ready_pid();
    drover.also_clean_up(new_pid);
    let status = drover.wait_exit(Duration::from_secs(30)).expect("the old supervisor exits");
    assert_eq!(status.code(), Some(0), "{}", drover.log());
    drover.also_clean_up(new_pid);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let report = runner.await.unwrap();
    report.assert_clean(&drover, 500);

    // The new supervisor serves with new workers, on the same control
    // socket and admin listener.
    let new_workers = crate::helpers::children_of(new_pid);
    assert_eq!(new_workers.len(), 2);
    assert!(new_workers.is_disjoint(&old_workers));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["ctl", "status", "--json", "--control-socket"])
        .arg(drover.dir.path().join("drover.sock"))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["pid"], new_pid, "{json}");
    assert_eq!(json["generation"], 2);
    let mut admin = crate::helpers::Conn::connect(drover.admin.unwrap()).await.unwrap();
    assert_eq!(admin.get("/metrics").await.unwrap().status, 200);
    assert!(drover.log().contains("upgrade: the new supervisor is serving"));
    crate::helpers::send(new_pid, libc::SIGTERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_supervisor_that_cannot_start_leaves_the_old_one_serving() {
    let dir = TempDir::new("upgrade-config");
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, "[worker]\ndrain_timeout = \"5s\"\n").unwrap();
    let path = file.to_str().unwrap().to_owned();
    let drover =
        Drover::start_with(Options { workers: 1, args: vec!["--config", &path], ..Options::default() });
    // A deploy that breaks the configuration: the new supervisor exits 64.
    std::fs::write(&file, "[worker]\ndrain_timeout = \"never\"\n").unwrap();
    let pid = drover.pid;
    drover.signal(libc::SIGUSR2);
    drover.wait_log(Duration::from_secs(20), "upgrade failed");
    assert_eq!(drover.ready_pid(), pid, "the old supervisor is still the one");
    for _ in 0..20 {
        assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    }
}
