//! Socket activation: listening sockets passed by systemd (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) instead of sockets drover binds itself.
//!
//! Every worker slot still gets its own `SO_REUSEPORT` socket. The passed
//! sockets of one address serve the first slots, in order; slots beyond them
//! get sockets drover binds on the same address. The kernel lets a socket
//! join a reuseport group only for the user that created the group, so under
//! `DynamicUser=` (where systemd, as root, made the passed sockets) the
//! `.socket` unit must list one `ListenStream=` per worker slot.
#![allow(unsafe_code)]

use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;

use socket2::SockRef;

/// The listening sockets systemd passed to this process, in order, or an
/// empty list when it passed none. Each must be a listening TCP socket with
/// `SO_REUSEPORT` set (`ReusePort=yes` in the `.socket` unit).
pub fn inherited_listeners() -> io::Result<Vec<TcpListener>> {
    // listen_fds checks LISTEN_PID against our pid and sets close-on-exec.
    let mut fds: Vec<(i32, String)> = sd_notify::listen_fds_with_names()?.collect();
    // Sockets drover stored itself come back named by slot; give each back to
    // the slot it served (its index in the reuseport group, which the
    // steering program relies on). Others keep the order systemd gave.
    let slot_of =
        |name: &str| name.strip_prefix(crate::notify::FD_NAME_PREFIX).and_then(|n| n.parse::<usize>().ok());
    if fds.iter().all(|(_, name)| slot_of(name).is_some()) {
        fds.sort_by_key(|(_, name)| slot_of(name));
    }
    let mut listeners = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: systemd passed this fd to this process (LISTEN_PID is ours)
        // and nothing else in the process has taken it.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let addr = listener.local_addr().map_err(|e| {
            io::Error::new(e.kind(), format!("passed fd {fd} ({name}) is not a TCP socket: {e}"))
        })?;
        let socket = SockRef::from(&listener);
        if !socket.is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("passed socket {addr} is not listening"),
            ));
        }
        if !socket.reuse_port()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("passed socket {addr} lacks SO_REUSEPORT: set ReusePort=yes in drover.socket"),
            ));
        }
        listener.set_nonblocking(true)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The name of the handshake channel in `--upgrade-fds`.
pub const HANDSHAKE: &str = "drover-handshake";
/// The names of the control and admin listeners in `--upgrade-fds`.
pub const CONTROL: &str = "drover-control";
pub const ADMIN: &str = "drover-admin";

/// What a supervisor hands its successor in an upgrade (SIGUSR2): every
/// slot's sockets (named `drover-slot-N`), the control socket, the admin
/// listener, and a channel to say it is ready. Passed as
/// `--upgrade-fds 3=drover-slot-0,4=drover-control,...,generation=N`.
#[derive(Debug, Default)]
pub struct Handover {
    /// Ordered by slot.
    pub listeners: Vec<TcpListener>,
    pub control: Option<std::os::unix::net::UnixListener>,
    pub admin: Option<TcpListener>,
    pub handshake: Option<std::os::unix::net::UnixStream>,
    /// The generation the successor's workers start at.
    pub generation: u64,
}

impl Handover {
    /// Adopts the fds `spec` names. Each fd may be named once.
    pub fn from_spec(spec: &str) -> io::Result<Self> {
        let invalid =
            |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("--upgrade-fds: {what}"));
        let mut handover = Handover { generation: 1, ..Handover::default() };
        let mut slots: Vec<(usize, TcpListener)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (key, name) = item.split_once('=').ok_or_else(|| invalid(item))?;
            if key == "generation" {
                handover.generation = name.parse().map_err(|_| invalid(item))?;
                continue;
            }
            let fd: i32 = key.parse().map_err(|_| invalid(item))?;
            // F_GETFD only checks that the fd is open.
            // SAFETY: fcntl(F_GETFD) has no memory-safety preconditions.
            if fd < 3 || !seen.insert(fd) || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(invalid(&format!("fd {fd} is not an open, unique, non-stdio fd")));
            }
            // SAFETY (every from_raw_fd below): the previous supervisor put
            // this open fd here for this process alone and named it once.
            if name == HANDSHAKE {
                handover.handshake = Some(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
            } else if name == CONTROL {
                handover.control = Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) });
            } else if name == ADMIN {
                handover.admin = Some(unsafe { TcpListener::from_raw_fd(fd) });
            } else if let Some(slot) =
                name.strip_prefix(crate::notify::FD_NAME_PREFIX).and_then(|n| n.parse().ok())
            {
                let listener = unsafe { TcpListener::from_raw_fd(fd) };
                listener.set_nonblocking(true)?;
                slots.push((slot, listener));
            } else {
                return Err(invalid(&format!("unknown name {name:?}")));
            }
        }
        slots.sort_by_key(|(slot, _)| *slot);
        handover.listeners = slots.into_iter().map(|(_, l)| l).collect();
        Ok(handover)
    }
}
