//! `drover preflight` (hidden): what `drover serve` checks before it starts
//! workers, run as a child process so the supervisor itself never loads the
//! crypto or database code (which would stay in its memory for good).
//!
//! It loads the JWT keys (a bad key is a configuration error: exit 64 naming
//! the setting; a generated development key is warned about, once) and
//! applies pending migrations when `database.migrate_on_start` is true.

use std::process::ExitCode;

use tracing::warn;

use super::{block_on_local, config_failure, ConfigArgs, EXIT_USAGE};
use crate::repo::migrate;
use crate::service::{KeySet, KeySource};
use crate::telemetry::{self, Role};

pub fn run(args: &ConfigArgs) -> ExitCode {
    let config = match args.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, Role::Supervisor);
    match KeySet::load(&config.auth, &config.data_dir()) {
        Ok(keys) => {
            if let KeySource::Development(path) = keys.source {
                warn!(path = %path.display(), "signing tokens with a generated development key; configure auth.key_files for production");
            }
        }
        Err(error) => {
            eprintln!("drover: invalid configuration: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if config.database.migrate_on_start {
        if let Err(error) = block_on_local(migrate::run(&config.database_url())) {
            return super::migrate::failure(&error);
        }
    }
    ExitCode::SUCCESS
}
