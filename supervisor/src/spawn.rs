//! Starting a worker: fork+exec of the program with the slot's listening
//! sockets and the worker's end of the control channel as inherited fds.
//!
//! This is the one place the supervisor needs `unsafe`: `pre_exec` runs in the
//! forked child, where only async-signal-safe calls are allowed. The closure
//! below only calls `fcntl` and `dup2` on a buffer allocated before the fork.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::Stdio;

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use drover_protocol::handover::{self, FdName, Spec};
use drover_protocol::worker_args::{WorkerArgs, FIRST_INHERITED_FD};

/// What to exec for a worker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerCommand {
    /// The executable, re-read from disk at every spawn so that a rolling
    /// restart deploys whatever build is installed now.
    pub program: std::path::PathBuf,
    /// Arguments before the ones the supervisor adds
    /// ([`drover_protocol::worker_args::WorkerArgs`]).
    pub args: Vec<OsString>,
}

/// A freshly started worker process.
pub struct Spawned {
    pub child: Child,
    /// The supervisor's end of the control channel.
    pub control: UnixStream,
}

/// Forks and execs one worker for `slot`.
pub fn spawn(
    command: &WorkerCommand,
    slot: usize,
    generation: u64,
    listeners: &[TcpListener],
) -> io::Result<Spawned> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(theirs.as_raw_fd());
    // The sockets, then the channel, are remapped from FIRST_INHERITED_FD
    // on, where WorkerArgs::inherited says they are.
    let worker_args = WorkerArgs::inherited(slot, generation, listeners.len());

    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args).args(worker_args.to_args()).stdin(Stdio::null()).kill_on_drop(false);
    // systemd's variables are for the main process: a worker must not
    // notify, nor take the activation sockets.
    for name in
        ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]
    {
        cmd.env_remove(name);
    }

    // Allocated here, before the fork: the child must not allocate.
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    // SAFETY: the closure runs between fork and exec in the child. It calls
    // only fcntl(F_DUPFD_CLOEXEC) and dup2, both async-signal-safe, reads
    // `sources` and writes `scratch`, both allocated before the fork, and
    // builds its error from errno without allocating.
    unsafe {
        cmd.pre_exec(move || remap_fds(&sources, &mut scratch, FIRST_INHERITED_FD));
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot start worker {}: {e}", display(&command.program)))
    })?;
    // The child has its copy; ours would keep the channel open after the
    // worker dies and hide its exit.
    drop(theirs);
    ours.set_nonblocking(true)?;
    let control = UnixStream::from_std(ours)?;
    Ok(Spawned { child, control })
}

/// Moves `sources[i]` to fd `base + i` in the child, without close-on-exec.
///
/// Each source is first duplicated above the target range, so that a source
/// that already sits on some target number is not clobbered by an earlier
/// `dup2`. `dup2` clears close-on-exec on the new fd; the temporary copies
/// keep it and vanish at exec.
fn remap_fds(sources: &[RawFd], scratch: &mut [RawFd], base: RawFd) -> io::Result<()> {
    let above_targets = base + sources.len() as RawFd;
    for (tmp, &source) in scratch.iter_mut().zip(sources) {
        // SAFETY: fcntl on an fd we own; async-signal-safe.
        let fd = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above_targets) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        *tmp = fd;
    }
    for (i, &tmp) in scratch.iter().enumerate() {
        // SAFETY: dup2 onto a target number this process reserves for the
        // worker; async-signal-safe.
        if unsafe { libc::dup2(tmp, base + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Sends `signal` to `pid`. Used for SIGKILL past a deadline; errors (the
/// process is already gone) are not interesting to the caller.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of
    // our own children, which we have not yet reaped, so it cannot have been
    // recycled for another process.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new supervisor started by an upgrade, and our end of its handshake.
pub struct Successor {
    pub child: Child,
    /// The successor writes `ready` here once its workers are ready.
    pub handshake: UnixStream,
}

/// Starts the binary now on disk as a new supervisor, handing it `fds`
/// (named, see [`drover_protocol::handover`]) and a handshake channel.
pub fn spawn_successor(
    program: &Path,
    args: &[OsString],
    fds: &[(RawFd, FdName)],
    generation: u64,
) -> io::Result<Successor> {
    let (ours, theirs) = StdUnixStream::pair()?;
    let mut sources: Vec<RawFd> = fds.iter().map(|(fd, _)| *fd).collect();
    sources.push(theirs.as_raw_fd());
    // Each fd lands at FIRST_INHERITED_FD + its index; the handshake last.
    let names = fds.iter().map(|(_, name)| name.clone()).chain([FdName::Handshake]);
    let spec = Spec { fds: (FIRST_INHERITED_FD..).zip(names).collect(), generation };

    let mut cmd = Command::new(program);
    cmd.args(args).arg(handover::FLAG).arg(spec.to_string()).stdin(Stdio::null()).kill_on_drop(false);
    // Sockets come through --upgrade-fds, not systemd's variables.
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        cmd.env_remove(name);
    }
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    // SAFETY: as in `spawn`: only fcntl and dup2 between fork and exec, on
    // buffers allocated before the fork.
    unsafe {
        cmd.pre_exec(move || remap_fds(&sources, &mut scratch, FIRST_INHERITED_FD));
    }
    let child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", display(program))))?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok(Successor { child, handshake: UnixStream::from_std(ours)? })
}
