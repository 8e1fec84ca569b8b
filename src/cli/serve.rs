//! `drover serve`: the supervisor.

use std::ffi::OsString;
use std::process::ExitCode;

use drover_supervisor::{Options, Outcome, Supervisor, WorkerCommand};
use tracing::error;

use super::{config_failure, ConfigArgs};
use crate::telemetry::{self, Role};

pub fn run(args: &ConfigArgs, worker_args: Vec<OsString>) -> ExitCode {
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
    let options = Options {
        command: WorkerCommand {
            program,
            args: worker_args,
        },
        workers: config.worker_count(),
        boot_timeout: config.worker.boot_timeout,
        drain_timeout: config.worker.drain_timeout,
        backoff_min: config.worker.restart_backoff_min,
        backoff_max: config.worker.restart_backoff_max,
        ready_file: config.server.ready_file.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the supervisor's event loop");
            return ExitCode::FAILURE;
        }
    };
    // Bind inside the runtime: tokio registers the sockets lazily, but the
    // signal handlers must exist before the first worker is forked.
    let outcome = runtime.block_on(async {
        let supervisor = Supervisor::bind(options, &config.server.listen)?;
        supervisor.run().await
    });
    match outcome {
        Ok(Outcome::Drained) => ExitCode::SUCCESS,
        Ok(Outcome::StoppedAtOnce) => ExitCode::FAILURE,
        Ok(Outcome::WorkerFatal(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            error!(%error, "supervisor failed");
            eprintln!("drover: {error}");
            ExitCode::FAILURE
        }
    }
}
