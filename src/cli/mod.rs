//! The command line: one file per command.

mod config_check;
mod serve;
mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, Override, Sources};

/// Exit code for a bad command line or configuration (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "A high-performance HTTP API server: a supervisor that owns the sockets and one current-thread worker per CPU."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: a supervisor and its worker processes.
    ///
    /// Signals: SIGHUP rolls a restart through the workers (new before old,
    /// re-reading the binary and the configuration file); SIGTERM or SIGINT
    /// drains and exits 0, a second one stops at once.
    Serve(ConfigArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Internal: one worker process, started by `drover serve`.
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective result, secrets
    /// redacted. Exits 64 naming the key if it is invalid.
    Check(ConfigArgs),
}

/// The flags that set configuration keys; shared by every command that
/// loads the configuration, so a worker parses exactly what `serve` did.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A TOML configuration file (see config/default.toml for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; repeat for several. Port 0 picks a free port.
    /// [server.listen]
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Worker processes; 0 = one per usable CPU. [server.workers]
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// Write {"pid":..,"listen":[..]} here once every worker is ready.
    /// [server.ready_file]
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<String>,
    /// Log filter such as "info" or "warn,drover=debug". [log.level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// "json" (default, one object per line) or "pretty". [log.format]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl ConfigArgs {
    /// Loads the configuration these flags describe, over the environment.
    pub fn load(&self) -> Result<(Config, toml::Table), ConfigError> {
        let mut overrides = Vec::new();
        if !self.listen.is_empty() {
            let list = self
                .listen
                .iter()
                .map(|s| toml::Value::String(s.clone()))
                .collect();
            overrides.push(Override {
                key: "server.listen",
                flag: "--listen",
                value: toml::Value::Array(list),
            });
        }
        if let Some(workers) = &self.workers {
            // Typed like an environment value, so "4" is a number and
            // "many" is reported as the wrong type for server.workers.
            overrides.push(Override::text("server.workers", "--workers", workers));
        }
        let text_flags = [
            ("server.ready_file", "--ready-file", &self.ready_file),
            ("log.level", "--log-level", &self.log_level),
            ("log.format", "--log-format", &self.log_format),
        ];
        for (key, flag, value) in text_flags {
            if let Some(value) = value {
                overrides.push(Override {
                    key,
                    flag,
                    value: toml::Value::String(value.clone()),
                });
            }
        }
        let sources = Sources {
            file: self.config.as_deref(),
            env: std::env::vars().collect(),
            overrides,
        };
        config::load(&sources)
    }
}

/// Runs the command line; the process exits with the returned code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve(args) => serve::run(&args, serve_args_for_workers()),
        Command::Config(ConfigCommand::Check(args)) => config_check::run(&args),
        Command::Worker(args) => worker::run(&args),
    }
}

/// The worker command line: `worker` and the flags `serve` was given, so the
/// worker loads the configuration the same way.
fn serve_args_for_workers() -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["worker".into()];
    args.extend(std::env::args_os().skip(2));
    args
}

/// Prints a configuration error the way every command does, and the code.
pub fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("drover: invalid configuration: {error}");
    ExitCode::from(EXIT_USAGE)
}
