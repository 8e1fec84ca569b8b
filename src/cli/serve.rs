//! `drover serve`: loads and checks the configuration, runs the preflight
//! checks in a child, then becomes the supervisor (`cli/supervise.rs`).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use drover_supervisor::{Options, WorkerCommand};
use tracing::{error, info, warn};

use super::supervise::{self, Spec};
use super::{config_failure, ConfigArgs};
use crate::config::LogConfig;
use crate::telemetry::{self, Role};

/// `drover serve`'s flags: the configuration's, plus the hidden handover
/// from a supervisor being upgraded.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Internal: fds handed over by the previous supervisor (SIGUSR2).
    #[arg(long, hide = true, value_name = "SPEC")]
    pub upgrade_fds: Option<String>,
}

pub fn run(serve: &ServeArgs, worker_args: Vec<OsString>) -> ExitCode {
    let args = &serve.config;
    let config = match args.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, Role::Supervisor);
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            error!(%error, "cannot find the drover executable to start workers");
            return ExitCode::FAILURE;
        }
    };
    // Keys and migrations are checked by a child process, so that their
    // code never becomes part of the long-lived supervisor's memory.
    if let Some(code) = preflight_in_child(&program, &worker_args) {
        return code;
    }
    let spec = Spec {
        // Resolved here, as every setting in the spec is: the supervisor
        // keeps this process's stderr across the exec, so it would pick the
        // same format. A concrete format also reads in a drover-supervisor
        // built before `auto` existed.
        log: LogConfig {
            format: config.log.format.resolve(std::io::stderr().is_terminal()),
            ..config.log.clone()
        },
        listen: config.server.listen.clone(),
        admin_listen: config.server.admin_listen,
        admin_token: config.server.admin_token.clone(),
        upgrade_fds: serve.upgrade_fds.clone(),
        options: Options {
            jobs_command: (config.jobs.workers > 0).then(|| WorkerCommand {
                program: program.clone(),
                args: std::iter::once("job-worker".into())
                    .chain(worker_args.iter().skip(1).cloned())
                    .collect(),
            }),
            job_workers: config.jobs.workers,
            command: WorkerCommand { program: program.clone(), args: worker_args },
            workers: config.worker_count(),
            boot_timeout: config.worker.boot_timeout,
            drain_timeout: config.worker.drain_timeout,
            backoff_min: config.worker.restart_backoff_min,
            backoff_max: config.worker.restart_backoff_max,
            ready_file: config.server.ready_file.clone(),
            stall_timeout: config.worker.stall_timeout,
            max_requests: config.worker.max_requests,
            max_requests_jitter: config.worker.max_requests_jitter,
            max_rss: config.worker.max_rss,
            control_socket: Some(config.control_socket()),
            ready_extra: Vec::new(),
            handover_extra: Vec::new(),
        },
    };
    exec_supervisor(&program, spec)
}

/// Becomes `drover-supervisor` (see `cli/supervise.rs`), or, if it is not
/// installed next to `drover` or comes from another build, supervises from
/// this process.
fn exec_supervisor(program: &Path, spec: Spec) -> ExitCode {
    let executable = program.with_file_name(supervise::EXECUTABLE);
    let other_build = executable.is_file().then(|| build_if_other(&executable)).flatten();
    if let Some(theirs) = &other_build {
        warn!(
            supervisor = %executable.display(),
            theirs = %theirs,
            ours = supervise::BUILD_ID,
            "drover-supervisor next to drover comes from another build (`cargo run` builds only drover; \
             `cargo build --release` builds both); supervising from this process"
        );
    } else if executable.is_file() {
        let json = match serde_json::to_string(&spec) {
            Ok(json) => json,
            Err(error) => {
                error!(%error, "cannot encode the supervisor's settings");
                return ExitCode::FAILURE;
            }
        };
        // The flags follow `--` only so that `ps` shows what was asked for;
        // the supervisor reads the resolved settings from the environment.
        let error = std::process::Command::new(&executable)
            .arg("--")
            .args(std::env::args_os().skip(1))
            .env(supervise::SPEC_ENV, json)
            .exec();
        error!(%error, executable = %executable.display(), "cannot exec the supervisor; supervising from this process");
    } else {
        warn!(
            missing = %executable.display(),
            "drover-supervisor is not installed next to drover; supervising from this process, \
             which keeps the whole application mapped (about 3 MiB more resident memory)"
        );
    }
    supervise::run(spec)
}

/// `None` when `executable` is from this build; else what it says its build
/// is (or why that could not be learnt). One short child process at start.
fn build_if_other(executable: &Path) -> Option<String> {
    let output = std::process::Command::new(executable)
        .arg(supervise::BUILD_ID_FLAG)
        .env_remove(supervise::SPEC_ENV)
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let theirs = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            (theirs != supervise::BUILD_ID).then_some(theirs)
        }
        // Built before `--build-id` existed, or broken: not this build.
        Ok(output) => Some(format!("unknown ({})", output.status)),
        Err(error) => Some(format!("unknown ({error})")),
    }
}

/// Runs `drover preflight` with the same flags as a child process and
/// waits for it (see `cli/preflight.rs`). `None` when it succeeded, else the
/// exit code to stop with (64 for a bad key, 69 for an unreachable database).
fn preflight_in_child(program: &Path, worker_args: &[OsString]) -> Option<ExitCode> {
    let mut args: Vec<OsString> = worker_args.to_vec();
    if let Some(first) = args.first_mut() {
        *first = "preflight".into();
    }
    info!("checking keys and applying database migrations");
    match std::process::Command::new(program).args(&args).stdout(std::process::Stdio::null()).status() {
        Ok(status) if status.success() => None,
        Ok(status) => {
            error!(%status, "preflight failed; not starting workers");
            Some(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
        }
        Err(error) => {
            error!(%error, "cannot run the preflight checks");
            Some(ExitCode::FAILURE)
        }
    }
}
