//! `worker.idle_cgroup` through the real binary: a worker's idle-class
//! threads (here the blocking thread that hashes a password) join the
//! configured cpu cgroup, which drover marks idle. Needs root and cgroup
//! v1's cpu controller with `cpu.idle`; elsewhere the test returns early.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::register;
use crate::helpers::{get, Drover, Options};

/// A cgroup directory name of this test's own, removed at the end.
fn test_dir() -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup/cpu");
    if !root.join("cpu.idle").exists() {
        return None;
    }
    let dir = root.join(format!("drover-idle-test-{}", std::process::id()));
    // Can this process make cgroups at all (root)?
    std::fs::create_dir(&dir).ok()?;
    std::fs::remove_dir(&dir).ok()?;
    Some(dir)
}

/// Removes the cgroup when the test ends, passed or not, once the
/// worker's threads have left it (bounded).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        for _ in 0..50 {
            if !self.0.exists() || std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_class_threads_join_the_idle_cgroup() {
    let Some(dir) = test_dir() else { return };
    // Dropped after `drover`, which kills the worker first.
    let _removed = Removed(dir.clone());
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_WORKER__IDLE_CGROUP", dir.to_str().unwrap())],
        ..Options::default()
    });
    // Hashing the password runs on the worker's blocking pool.
    assert_eq!(register(drover.addr, "idle@example.com", "correct horse", "Idle").await.status, 201);
    let pid = get(drover.addr, "/healthz").await.unwrap().json()["pid"].as_u64().unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("cpu.idle")).unwrap().trim(), "1");
    let tasks = std::fs::read_to_string(dir.join("tasks")).unwrap();
    let worker_threads: Vec<&str> =
        tasks.lines().filter(|tid| Path::new(&format!("/proc/{pid}/task/{tid}")).exists()).collect();
    assert!(!worker_threads.is_empty(), "no thread of worker {pid} in {}: {tasks:?}", dir.display());
    // The event loop, the worker's main thread, stays out.
    assert!(!worker_threads.contains(&pid.to_string().as_str()), "the event loop joined the idle cgroup");

    drop(drover);
}
