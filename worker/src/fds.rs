//! Taking ownership of the fds the supervisor passed at exec.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// The sockets a worker inherited.
#[derive(Debug)]
pub struct Inherited {
    pub listeners: Vec<TcpListener>,
    /// `None` when run by hand without a supervisor.
    pub control: Option<UnixStream>,
}

/// Adopts the listening sockets and the control channel at the given fd
/// numbers. Each number may appear once; each must be open.
pub fn inherit(listen_fds: &[RawFd], control_fd: Option<RawFd>) -> io::Result<Inherited> {
    let mut seen = HashSet::new();
    for &fd in listen_fds.iter().chain(control_fd.iter()) {
        if fd < 3 || !seen.insert(fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is stdio or listed twice"),
            ));
        }
        // F_GETFD only asks whether the fd is open; it changes nothing.
        // SAFETY: fcntl(F_GETFD) has no memory-safety preconditions.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd {fd} is not open (was this started by `drover serve`?)"),
            ));
        }
    }
    let listeners = listen_fds
        .iter()
        .map(|&fd| {
            // SAFETY: the fd is open (checked above), listed once, and was
            // placed here by the supervisor for this process alone; nothing
            // else in this process owns it.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            listener.local_addr().map_err(|e| {
                io::Error::new(e.kind(), format!("fd {fd} is not a listening TCP socket: {e}"))
            })?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let control = control_fd
        .map(|fd| {
            // SAFETY: as above: open, listed once, ours alone.
            let stream = unsafe { UnixStream::from_raw_fd(fd) };
            stream.set_nonblocking(true)?;
            Ok::<_, io::Error>(stream)
        })
        .transpose()?;
    Ok(Inherited { listeners, control })
}
