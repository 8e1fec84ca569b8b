//! The `drover` binary: parses the command line and hands over to
//! [`drover::cli`].

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: an idle connection gives back
/// hyper's buffers (see worker/src/conn.rs), and glibc keeps such freed
/// memory resident, scattered between the connections still alive, so a
/// worker holding many idle connections stayed as large as at its peak.
/// mimalloc returns emptied pages to the system. Measured with
/// bench/connections.sh.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    drover::cli::main()
}
