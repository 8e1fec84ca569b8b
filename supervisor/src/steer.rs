//! Steering new connections within a reuseport group, so that a slot being
//! retired stops receiving connections before its worker drains.
//!
//! Linux picks a socket of a `SO_REUSEPORT` group for each new connection by
//! hash. A classic BPF program attached to the group with
//! `SO_ATTACH_REUSEPORT_CBPF` (Linux 4.5+) picks instead: it returns an index
//! into the group, whose sockets are numbered in the order they started
//! listening. Slots are bound in order and only the highest ones are ever
//! removed, so slot `i` is index `i`, and the program
//! `return random() % active` sends every new connection to slots
//! `0..active`. A retired slot's socket then only holds what was queued
//! before; its worker accepts that, and the socket can be closed with
//! nothing in it.
//!
//! Where the kernel refuses the program, scaling down still works but
//! connections queued on the retired socket in the instant before it closes
//! can be reset; Linux 5.14+ with `net.ipv4.tcp_migrate_req = 1` moves them
//! to another socket instead.
#![allow(unsafe_code)]

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` from asm-generic/socket.h (the value on x86,
/// arm and most architectures); the libc crate only exports it for Android.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Makes the group `member` belongs to send new connections only to its
/// first `active` sockets, chosen at random.
pub fn steer_to_first(member: &TcpListener, active: u32) -> io::Result<()> {
    if active == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "at least one socket must stay active"));
    }
    let mut program = [
        // A = a random 32-bit number (an ancillary load).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        },
        // A %= active
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: active,
        },
        // return A: the index of the socket in the group.
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_A) as u16, jt: 0, jf: 0, k: 0 },
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: setsockopt reads `fprog` (and the program it points to, both
    // alive for this call) and copies them into the kernel; the fd is a
    // socket this process owns.
    let rc = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::SlotSockets;
    use std::io::{Read, Write};

    #[test]
    fn connections_go_only_to_the_active_sockets() {
        let sockets = SlotSockets::bind(&["127.0.0.1:0".parse().unwrap()], 3, 128).unwrap();
        steer_to_first(&sockets.slot(0)[0], 2).unwrap();
        let addr = sockets.addrs()[0];
        let mut clients = Vec::new();
        for _ in 0..60 {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client.write_all(b"x").unwrap();
            clients.push(client);
        }
        let accepted = |slot: usize| {
            let mut n = 0;
            while let Ok((mut conn, _)) = sockets.slot(slot)[0].accept() {
                let mut byte = [0u8; 1];
                let _ = conn.read(&mut byte);
                n += 1;
            }
            n
        };
        let (a, b, c) = (accepted(0), accepted(1), accepted(2));
        assert_eq!(c, 0, "the third socket got nothing");
        assert_eq!(a + b, 60);
        assert!(a > 0 && b > 0, "both active sockets share the load: {a} {b}");
    }
}
