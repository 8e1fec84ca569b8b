//! The command line: one file per command.

mod bench;
mod config_check;
mod ctl;
mod job_worker;
mod jobs;
mod migrate;
mod openapi;
mod preflight;
mod serve;
pub mod supervise;
mod user;
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
    Serve(serve::ServeArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply pending database migrations (`--status` lists them instead).
    Migrate(migrate::MigrateArgs),
    /// Manage users from the command line.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Job processes and their queue: `drover jobs work`, `status`, `dead`,
    /// `retry`.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Talk to a running supervisor over its control socket.
    Ctl(ctl::CtlArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (what GET
    /// /openapi.json serves); needs no database or server.
    Openapi(openapi::OpenapiArgs),
    /// The TechEmpower benchmark's tables: `drover bench setup`.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Internal: one worker process, started by `drover serve`.
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// Internal: one job process, started by `drover serve`.
    #[command(hide = true)]
    JobWorker(job_worker::JobWorkerArgs),
    /// Internal: the checks `drover serve` runs in a child before starting
    /// workers (keys, migrations).
    #[command(hide = true)]
    Preflight(ConfigArgs),
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
    /// "json" (one object per line), "pretty", or "auto" (the default:
    /// pretty when stderr is a terminal, else json). [log.format]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// postgres://…, mariadb://… (or mysql://…) or sqlite://…; default SQLite in the data directory.
    /// [database.url]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Where state lives; default $STATE_DIRECTORY or ./data. [server.data_dir]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// The admin listener (Prometheus /metrics); "" for none.
    /// [server.admin_listen]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// The control socket `drover ctl` uses; default $RUNTIME_DIRECTORY/drover.sock
    /// or ./drover.sock. [server.control_socket]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,
    /// redis://host:6379; without it only the in-process cache runs.
    /// [cache.redis_url]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

impl ConfigArgs {
    /// Loads the configuration these flags describe, over the environment.
    pub fn load(&self) -> Result<(Config, toml::Table), ConfigError> {
        let mut overrides = Vec::new();
        if !self.listen.is_empty() {
            let list = self.listen.iter().map(|s| toml::Value::String(s.clone())).collect();
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
            ("database.url", "--database-url", &self.database_url),
            ("server.data_dir", "--data-dir", &self.data_dir),
            ("cache.redis_url", "--redis-url", &self.redis_url),
            ("server.control_socket", "--control-socket", &self.control_socket),
            ("server.admin_listen", "--admin-listen", &self.admin_listen),
        ];
        for (key, flag, value) in text_flags {
            if let Some(value) = value {
                overrides.push(Override { key, flag, value: toml::Value::String(value.clone()) });
            }
        }
        let sources = Sources { file: self.config.as_deref(), env: std::env::vars().collect(), overrides };
        config::load(&sources)
    }
}

/// Runs the command line; the process exits with the returned code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Serve(args) => serve::run(&args, serve_args_for_workers()),
        Command::Config(ConfigCommand::Check(args)) => config_check::run(&args),
        Command::Worker(args) => worker::run(&args),
        Command::JobWorker(args) => job_worker::run(&args),
        Command::Preflight(args) => preflight::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::User(command) => user::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Ctl(args) => ctl::run(&args),
        Command::Openapi(args) => openapi::run(&args),
        Command::Jobs(command) => jobs::run(command),
    }
}

/// The worker command line: `worker` and the flags `serve` was given, so the
/// worker loads the configuration the same way.
fn serve_args_for_workers() -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["worker".into()];
    // An upgraded supervisor was started with --upgrade-fds; that is its
    // own business, not its children's.
    let mut skip_value = false;
    for arg in std::env::args_os().skip(2) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--upgrade-fds" {
            skip_value = true;
            continue;
        }
        if text.starts_with("--upgrade-fds=") {
            continue;
        }
        args.push(arg);
    }
    args
}

/// Prints a configuration error the way every command does, and the code.
pub fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("drover: invalid configuration: {error}");
    ExitCode::from(EXIT_USAGE)
}

/// Has a worker process's idle-class threads join `worker.idle_cgroup`,
/// when set; a cgroup that cannot be used is logged and left out.
pub fn use_idle_cgroup(config: &Config) {
    let dir = &config.worker.idle_cgroup;
    if dir.is_empty() {
        return;
    }
    if let Err(error) = drover_worker::use_idle_cgroup(std::path::Path::new(dir)) {
        tracing::warn!(%error, dir, "cannot use worker.idle_cgroup; idle-class threads stay in the worker's cgroup");
    }
}

/// Runs a future on a current-thread runtime inside a `LocalSet`, as a
/// worker does, for commands that use the services.
pub fn block_on_local<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
