//! `drover serve`: the supervisor.

use std::ffi::OsString;
use std::process::ExitCode;

use drover_supervisor::activation::{Handover, ADMIN};
use drover_supervisor::{Options, Outcome, Supervisor, WorkerCommand};
use tracing::{error, info};

use super::{config_failure, ConfigArgs};
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
    let options = Options {
        command: WorkerCommand { program, args: worker_args },
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
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the supervisor's event loop");
            return ExitCode::FAILURE;
        }
    };
    // Bind inside the runtime: tokio registers the sockets lazily, but the
    // signal handlers must exist before the first worker is forked.
    let outcome = runtime.block_on(async {
        let mut options = options;
        let mut handover = serve.upgrade_fds.as_deref().map(Handover::from_spec).transpose()?;
        let admin = match (handover.as_mut().and_then(|h| h.admin.take()), config.server.admin_listen) {
            (Some(listener), _) => {
                listener.set_nonblocking(true)?;
                Some(tokio::net::TcpListener::from_std(listener)?)
            }
            (None, Some(addr)) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| std::io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?,
            ),
            (None, None) => None,
        };
        if let Some(listener) = &admin {
            options.ready_extra.push(("admin".into(), listener.local_addr()?.to_string()));
            options.handover_extra.push((ADMIN.into(), std::os::fd::AsRawFd::as_raw_fd(listener)));
        }
        let supervisor = match handover {
            Some(handover) => Supervisor::adopt(options, handover)?,
            None => Supervisor::bind(options, &config.server.listen)?,
        };
        if let Some(listener) = admin {
            info!(admin = %listener.local_addr()?, "serving /metrics");
            tokio::spawn(crate::admin::serve(listener, supervisor.metrics_client()));
        }
        supervisor.run().await
    });
    match outcome {
        Ok(Outcome::Drained | Outcome::Upgraded) => ExitCode::SUCCESS,
        Ok(Outcome::StoppedAtOnce) => ExitCode::FAILURE,
        Ok(Outcome::WorkerFatal(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            error!(%error, "supervisor failed");
            eprintln!("drover: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `drover preflight` with the same flags as a child process and
/// waits for it (see `cli/preflight.rs`). `None` when it succeeded, else the
/// exit code to stop with (64 for a bad key, 69 for an unreachable database).
fn preflight_in_child(program: &std::path::Path, worker_args: &[OsString]) -> Option<ExitCode> {
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
