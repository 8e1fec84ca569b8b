//! The listening sockets: one `SO_REUSEPORT` socket per worker slot and
//! address, created once by the supervisor and held open for its whole life.
//!
//! Holding every socket open is what makes restarts lossless: the kernel
//! spreads new connections over the sockets of a reuseport group, and a socket
//! that is closed drops the connections queued on it. A socket the supervisor
//! keeps open outlives any worker accepting on it, so a connection that lands
//! on a slot whose worker is restarting just waits in the queue.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Length of each socket's accept queue. The kernel caps it at
/// `net.core.somaxconn` (4096 on current kernels); a deep queue absorbs the
/// gap while a slot's worker is replaced.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// The sockets of every slot: `slots[slot][address]`.
#[derive(Debug)]
pub struct SlotSockets {
    slots: Vec<Vec<TcpListener>>,
    /// The bound addresses, with any port 0 resolved to the port the kernel
    /// chose for the first slot (all later slots join that port).
    addrs: Vec<SocketAddr>,
}

impl SlotSockets {
    /// Binds `slots` sockets on each address.
    pub fn bind(addrs: &[SocketAddr], slots: usize, backlog: i32) -> io::Result<Self> {
        let mut resolved = Vec::with_capacity(addrs.len());
        let mut by_slot: Vec<Vec<TcpListener>> = (0..slots).map(|_| Vec::new()).collect();
        for &requested in addrs {
            let first = bind_one(requested, backlog).map_err(|e| with_addr(e, requested))?;
            let actual = first.local_addr()?;
            resolved.push(actual);
            by_slot[0].push(first);
            for sockets in by_slot.iter_mut().skip(1) {
                sockets.push(bind_one(actual, backlog).map_err(|e| with_addr(e, actual))?);
            }
        }
        Ok(Self { slots: by_slot, addrs: resolved })
    }

    /// Uses sockets passed by the service manager: for each distinct address
    /// (in order of first appearance) its passed sockets serve the first
    /// slots, and drover binds the rest on the same address.
    pub fn adopt(passed: Vec<TcpListener>, slots: usize, backlog: i32) -> io::Result<Self> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut by_addr: Vec<Vec<TcpListener>> = Vec::new();
        for listener in passed {
            let addr = listener.local_addr()?;
            match addrs.iter().position(|a| *a == addr) {
                Some(i) => by_addr[i].push(listener),
                None => {
                    addrs.push(addr);
                    by_addr.push(vec![listener]);
                }
            }
        }
        let mut by_slot: Vec<Vec<TcpListener>> = (0..slots).map(|_| Vec::new()).collect();
        for (addr, passed) in addrs.iter().zip(by_addr) {
            let mut passed = passed.into_iter();
            for sockets in &mut by_slot {
                let socket = match passed.next() {
                    Some(socket) => socket,
                    None => bind_one(*addr, backlog).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot add a socket for {addr} to the ones systemd passed ({e}); \
                                 list one ListenStream= per worker in drover.socket"
                            ),
                        )
                    })?,
                };
                sockets.push(socket);
            }
            // Passed sockets beyond the slot count stay open, unused: closing
            // one would reset connections queued on it.
            for extra in passed {
                std::mem::forget(extra);
            }
        }
        Ok(Self { slots: by_slot, addrs })
    }

    /// Adds one more slot's sockets (the addresses are already resolved).
    pub fn push_slot(&mut self, backlog: i32) -> io::Result<()> {
        let sockets = self
            .addrs
            .iter()
            .map(|&addr| bind_one(addr, backlog).map_err(|e| with_addr(e, addr)))
            .collect::<io::Result<Vec<_>>>()?;
        self.slots.push(sockets);
        Ok(())
    }

    /// Closes the sockets of every slot from `slots` on.
    pub fn truncate(&mut self, slots: usize) {
        self.slots.truncate(slots);
    }

    /// The addresses actually bound, in the order they were requested.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The sockets of one slot, one per address.
    pub fn slot(&self, slot: usize) -> &[TcpListener] {
        &self.slots[slot]
    }

    /// How many slots have sockets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no slot has been bound.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // socket2 creates sockets close-on-exec; a worker gets its copy by an
    // explicit dup2 in the child, never by accident.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]:80` must not also claim the IPv4 port; list both to get both.
        socket.set_only_v6(true)?;
    }
    // Workers run an async runtime on it; O_NONBLOCK lives on the shared open
    // file description, and the supervisor itself never accepts.
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn with_addr(error: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_resolves_once_and_every_slot_shares_it() {
        let sockets = SlotSockets::bind(&["127.0.0.1:0".parse().unwrap()], 3, 16).unwrap();
        let port = sockets.addrs()[0].port();
        assert_ne!(port, 0);
        for slot in 0..3 {
            assert_eq!(sockets.slot(slot)[0].local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn a_port_held_without_reuseport_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = SlotSockets::bind(&[addr], 1, 16).unwrap_err();
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
