//! Optional CPU pinning (`worker.cpu_affinity = "auto"`): worker slot `i`
//! runs on the `i`-th CPU this process may use (modulo their number), so
//! each worker keeps its caches warm and the kernel never stacks two event
//! loops on one core while another idles.
#![allow(unsafe_code)]

use std::io;

/// Pins the calling thread (the event loop; threads it starts later inherit
/// the mask) to one of the CPUs in its current affinity mask, chosen by
/// `slot`. Returns that CPU.
pub fn pin_for_slot(slot: usize) -> io::Result<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into `allowed`, which is that large; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set, for indexes below CPU_SETSIZE.
    let cpus: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) }).collect();
    if cpus.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no CPU in the affinity mask"));
    }
    let cpu = cpus[slot % cpus.len()];
    // SAFETY: as above, an all-zero set is valid; CPU_SET writes one bit.
    let mut chosen: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut chosen) };
    // SAFETY: sched_setaffinity reads `chosen`, which lives for the call.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &chosen) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}
