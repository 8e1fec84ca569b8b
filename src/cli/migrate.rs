//! `drover migrate [--status]`: applies pending migrations, or lists every
//! migration and whether it is applied. `drover serve` migrates through its
//! preflight child (unless `database.migrate_on_start` is false).

use std::process::ExitCode;

use clap::Args;

use super::{block_on_local, config_failure, ConfigArgs};
use crate::repo::{migrate, redact_url, RepoError};
use crate::telemetry::{self, Role};

/// Exit code when the database cannot be reached (sysexits' EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// List applied and pending migrations instead of applying them.
    #[arg(long)]
    pub status: bool,
}

pub fn run(args: &MigrateArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, Role::Command);
    let url = config.database_url();
    if args.status {
        return match block_on_local(migrate::status(&url)) {
            Ok(statuses) => {
                println!("database: {}", redact_url(&url));
                println!("{:<8} {:<24} state", "version", "name");
                for status in statuses {
                    let state = match status.applied_at {
                        Some(at) => format!(
                            "applied {}",
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64)
                            )
                        ),
                        None => "pending".to_owned(),
                    };
                    println!("{:<8} {:<24} {state}", status.migration.version, status.migration.name);
                }
                ExitCode::SUCCESS
            }
            Err(error) => failure(&error),
        };
    }
    match block_on_local(migrate::run(&url)) {
        Ok(applied) => {
            if applied.is_empty() {
                println!("database is up to date");
            }
            for migration in applied {
                println!("applied {} ({})", migration.version, migration.name);
            }
            ExitCode::SUCCESS
        }
        Err(error) => failure(&error),
    }
}

pub(super) fn failure(error: &RepoError) -> ExitCode {
    eprintln!("drover: migration failed: {error}");
    match error {
        RepoError::Unavailable(_) => ExitCode::from(EXIT_UNAVAILABLE),
        _ => ExitCode::FAILURE,
    }
}
