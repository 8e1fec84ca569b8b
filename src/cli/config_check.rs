//! `drover config check`: validates the configuration and prints the
//! effective result, for operators and for `ExecReload=` style checks.

use std::process::ExitCode;

use super::{config_failure, ConfigArgs};

pub fn run(args: &ConfigArgs) -> ExitCode {
    match args.load() {
        Ok((config, effective)) => {
            println!("# effective configuration (secrets redacted); {} worker(s)", config.worker_count());
            print!("{}", toml::to_string(&effective).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(error) => config_failure(&error),
    }
}
