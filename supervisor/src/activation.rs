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

use drover_protocol::handover::{self, FdName, Spec};
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
    let slot_of = |name: &str| match FdName::parse(name) {
        Some(FdName::Slot(slot)) => Some(slot),
        _ => None,
    };
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

/// What a supervisor hands its successor in an upgrade (SIGUSR2): every
/// slot's sockets, the control socket, the admin listener, and a channel to
/// say it is ready, named by a [`drover_protocol::handover::Spec`].
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
        let spec = Spec::parse(spec).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Every fd must be open before any is adopted: an OwnedFd of a
        // closed number would close someone else's fd on drop.
        for (fd, _) in &spec.fds {
            // SAFETY: fcntl(F_GETFD) only checks that the fd is open; it has
            // no memory-safety preconditions.
            if unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: fd {fd} is not open", handover::FLAG),
                ));
            }
        }
        let mut handover = Handover { generation: spec.generation, ..Handover::default() };
        let mut slots: Vec<(usize, TcpListener)> = Vec::new();
        for (fd, name) in spec.fds {
            // SAFETY (every from_raw_fd below): the previous supervisor put
            // this open fd here for this process alone, and the spec names
            // each fd once.
            match name {
                FdName::Handshake => {
                    handover.handshake = Some(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) })
                }
                FdName::Control => {
                    handover.control = Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
                }
                FdName::Admin => handover.admin = Some(unsafe { TcpListener::from_raw_fd(fd) }),
                FdName::Slot(slot) => {
                    let listener = unsafe { TcpListener::from_raw_fd(fd) };
                    listener.set_nonblocking(true)?;
                    slots.push((slot, listener));
                }
            }
        }
        slots.sort_by_key(|(slot, _)| *slot);
        handover.listeners = slots.into_iter().map(|(_, l)| l).collect();
        Ok(handover)
    }
}
