//! Which executable the supervisor runs from: `drover serve` execs the
//! small `drover-supervisor` installed next to it (same pid), and falls back
//! to supervising from its own process when that is missing.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::{get, Drover, Options, TempDir};

fn exe_name(pid: u32) -> String {
    let exe: PathBuf = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    exe.file_name().unwrap().to_string_lossy().into_owned()
}

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_becomes_drover_supervisor_and_workers_run_drover() {
    let mut drover = Drover::start(2);
    // The ready file's pid is the one the test started: exec kept it.
    assert_eq!(drover.ready_pid(), drover.pid);
    assert_eq!(exe_name(drover.pid), "drover-supervisor");
    for worker in drover.worker_pids() {
        assert_eq!(exe_name(worker), "drover");
        assert!(!environ(worker).contains("DROVER_SUPERVISOR_SPEC"), "the spec must not reach workers");
    }
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    drover.signal(libc::SIGTERM);
    let status = drover.wait_exit(Duration::from_secs(20)).expect("drover exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", drover.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drover_supervisor_serve_supervises_in_its_own_process() {
    // A copy of drover alone in a directory: no drover-supervisor beside it.
    let bin = TempDir::new("lone-drover");
    let program = bin.path().join("drover");
    std::fs::copy(env!("CARGO_BIN_EXE_drover"), &program).unwrap();
    assert!(!program.with_file_name("drover-supervisor").exists());

    let mut drover =
        Drover::start_with(Options { workers: 1, program: Some(&program), ..Options::default() });
    assert_eq!(exe_name(drover.pid), "drover");
    drover.wait_log(Duration::from_secs(5), "drover-supervisor is not installed next to drover");
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    drover.signal(libc::SIGTERM);
    let status = drover.wait_exit(Duration::from_secs(20)).expect("drover exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", drover.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drover_supervisor_from_another_build_is_not_execed() {
    // What `cargo run` leaves after a change: a new drover beside the
    // drover-supervisor of an earlier build (here, one that says so).
    let bin = TempDir::new("stale-supervisor");
    let program = bin.path().join("drover");
    std::fs::copy(env!("CARGO_BIN_EXE_drover"), &program).unwrap();
    let stale = program.with_file_name("drover-supervisor");
    std::fs::write(&stale, "#!/bin/sh\necho 0123-an-earlier-build\n").unwrap();
    std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut drover =
        Drover::start_with(Options { workers: 1, program: Some(&program), ..Options::default() });
    assert_eq!(exe_name(drover.pid), "drover");
    drover.wait_log(Duration::from_secs(5), "drover-supervisor next to drover comes from another build");
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    drover.signal(libc::SIGTERM);
    let status = drover.wait_exit(Duration::from_secs(20)).expect("drover exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", drover.log());
}

#[test]
fn both_executables_carry_the_same_build_id() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover-supervisor"))
        .arg("--build-id")
        .output()
        .unwrap();
    assert!(output.status.success());
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(!id.is_empty());
    // serve execs it only when the ids agree, as they do for one build.
    let mut drover = Drover::start(1);
    assert_eq!(exe_name(drover.pid), "drover-supervisor", "{}", drover.log());
    drover.signal(libc::SIGTERM);
    assert!(drover.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[test]
fn drover_supervisor_run_by_hand_explains_itself_and_exits_64() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover-supervisor")).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("started by `drover serve`"), "{stderr}");
}

#[test]
fn drover_supervisor_with_a_broken_spec_exits_64_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover-supervisor"))
        .env("DROVER_SUPERVISOR_SPEC", "{\"listen\": 7}")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DROVER_SUPERVISOR_SPEC is not a valid specification"), "{stderr}");
}
