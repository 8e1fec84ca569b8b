//! The `drover` binary: parses the command line and hands over to
//! [`drover::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    drover::cli::main()
}
