//! `drover-supervisor`: the long-lived supervisor process. `drover serve`
//! execs it once the configuration is checked; it is not run by hand. It
//! links only the process model, logging and the admin listener, so it
//! stays small in memory (see `src/cli/supervise.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    drover::cli::supervise::main()
}
