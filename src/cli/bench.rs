//! `drover bench setup`: creates and fills the TechEmpower benchmark tables
//! (`world`, 10,000 rows; `fortune`, 12 rows) in the configured database,
//! for the `/bench/db`, `/bench/queries`, `/bench/fortunes`,
//! `/bench/updates` and `/bench/cached-queries` routes. Kept apart from the
//! product's migrations: a production database never gets them.

use std::process::ExitCode;

use clap::Subcommand;

use super::migrate::EXIT_UNAVAILABLE;
use super::{block_on_local, config_failure, ConfigArgs};
use crate::repo::{migrate, redact_url, Database, RepoError};
use crate::resources::tfb;
use crate::telemetry::{self, Role};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Create and fill the benchmark tables (kept if already complete).
    Setup(ConfigArgs),
}

pub fn run(command: BenchCommand) -> ExitCode {
    let BenchCommand::Setup(args) = command;
    let config = match args.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, Role::Command);
    let settings = config.db_settings();
    let result = block_on_local(async {
        // The product's schema first, as `drover serve` would: a database
        // set up for the benchmark is then ready to serve from.
        if config.database.migrate_on_start {
            migrate::run(&settings.url).await?;
        }
        let db = Database::connect(&settings).await?;
        tfb::setup(&db).await
    });
    match result {
        Ok(()) => {
            println!(
                "benchmark tables ready in {}: world ({} rows), fortune ({} rows)",
                redact_url(&settings.url),
                tfb::WORLD_ROWS,
                tfb::repo::FORTUNES.len()
            );
            ExitCode::SUCCESS
        }
        Err(RepoError::Unavailable(why)) => {
            eprintln!("drover: the database is unavailable: {why}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(error) => {
            eprintln!("drover: cannot set up the benchmark tables: {error}");
            ExitCode::FAILURE
        }
    }
}
