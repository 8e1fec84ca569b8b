//! The idle cgroup: an optional cpu cgroup with `cpu.idle = 1` that holds a
//! worker's idle-class threads (the blocking pool, idle loops).
//!
//! The idle class alone does not keep those threads out of the event
//! loop's way everywhere. With session autogroups on (most distributions),
//! all of a worker's threads share one group, which the kernel schedules as
//! one normal-weight entity. Inside it, the loop woken by one idle-class
//! thread still waited up to a tick while another one ran (measured with
//! `perf sched`). In a cgroup of their own marked idle, the kernel treats the
//! threads as idle at every level. In `bench/reports.sh`, /healthz p99
//! beside 16 brotli downloads went from 3.2-5.2× its p99 alone to 1.0-1.6×.
//! Moving threads needs write access to the cgroup, which means root or a
//! delegated subtree, so this is opt-in (`worker.idle_cgroup`).
//!
//! cgroup v1 (the `cpu` controller) takes threads through `tasks`. cgroup2
//! takes them through `cgroup.threads` of a threaded cgroup, which the
//! operator sets up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

/// Makes `dir` (if missing) an idle cpu cgroup, and has every idle-class
/// thread started from now on join it. Called once, before the runtime
/// starts; an error leaves threads where they are.
pub fn use_idle_cgroup(dir: &Path) -> std::io::Result<()> {
    prepare(dir)?;
    // A second call keeps the first directory: one per process.
    let _ = DIR.set(dir.to_owned());
    Ok(())
}

fn prepare(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cpu.idle"), "1")
}

/// Moves the calling thread into the idle cgroup, if one is in use.
pub(crate) fn join() {
    let Some(dir) = DIR.get() else { return };
    if let Err(error) = join_dir(dir) {
        // Every new thread would fail the same way: say it once.
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, dir = %dir.display(), "cannot move idle-class threads into the idle cgroup");
        }
    }
}

/// The calling thread's id, from "/proc/thread-self" ("<pid>/task/<tid>").
fn thread_id() -> std::io::Result<String> {
    let link = std::fs::read_link("/proc/thread-self")?;
    link.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .ok_or_else(|| std::io::Error::other("unexpected /proc/thread-self"))
}

fn join_dir(dir: &Path) -> std::io::Result<()> {
    let v1 = dir.join("tasks");
    let file = if v1.exists() { v1 } else { dir.join("cgroup.threads") };
    std::fs::write(file, thread_id()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_joins_an_idle_cgroup_it_made() {
        // Needs cgroup v1's cpu hierarchy with cpu.idle, and root.
        let root = Path::new("/sys/fs/cgroup/cpu");
        if !root.join("cpu.idle").exists() {
            return;
        }
        let dir = root.join(format!("drover-idle-unit-{}", std::process::id()));
        if prepare(&dir).is_err() {
            let _ = std::fs::remove_dir(&dir);
            return;
        }
        assert_eq!(std::fs::read_to_string(dir.join("cpu.idle")).unwrap().trim(), "1");
        let inside = dir.clone();
        std::thread::spawn(move || {
            join_dir(&inside).unwrap();
            let tid = thread_id().unwrap();
            let tasks = std::fs::read_to_string(inside.join("tasks")).unwrap();
            assert!(tasks.lines().any(|line| line == tid), "{tid} not in {tasks}");
        })
        .join()
        .unwrap();
        // The thread has ended: the cgroup is empty and can go.
        std::fs::remove_dir(&dir).unwrap();
    }
}
