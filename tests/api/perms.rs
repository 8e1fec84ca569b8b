//! File permissions through the real binary: the data directory is created
//! 0700 and the SQLite database with its `-wal` and `-shm` files (password
//! hashes) 0600, even under umask 000, which takes nothing away: every bit
//! that is missing was left out by drover itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::auth::register;
use crate::helpers::{drover_wrapped, Drover, Options, TempDir};

/// A file's permission bits, in octal as `ls` and `chmod` spell them.
fn mode(path: &Path) -> String {
    let metadata = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:04o}", metadata.permissions().mode() & 0o7777)
}

/// The umask of a running process, from /proc.
fn umask_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_files_are_private_whatever_the_umask() {
    // drover started through a shell that clears the umask: the test's own
    // umask is process-wide and shared with tests running beside it.
    let bin = TempDir::new("umask");
    let wrapper = drover_wrapped(&bin, "umask 000");
    let drover = Drover::start_with(Options { workers: 1, program: Some(&wrapper), ..Options::default() });
    if let Some(umask) = umask_of(drover.pid) {
        assert_eq!(umask, 0, "drover should run with umask 000");
    }

    // A write, so the workers' connections have the WAL and its index open.
    let created = register(drover.addr, "ada@example.com", "correct horse", "Ada").await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));

    let data = drover.dir.path().join("data");
    assert_eq!(mode(&data), "0700", "the data directory\n{}", drover.log());
    for name in ["drover.db", "drover.db-wal", "drover.db-shm"] {
        assert_eq!(mode(&data.join(name)), "0600", "{name}\n{}", drover.log());
    }
    // Nothing else in there (the development key) is readable by others.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let bits = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(bits & 0o077, 0, "{} is open to others: {}", path.display(), mode(&path));
    }
}
