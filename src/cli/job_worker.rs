//! `drover job-worker` (hidden): one job process started by the supervisor,
//! with the control channel as an inherited fd and no socket. `drover jobs
//! work` runs the same process by hand, without a supervisor. The flags are
//! `drover_protocol::worker_args`'s; a test below keeps the two in step.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use clap::Args;
use drover_worker::{fds, BackgroundOptions, WorkerInfo};
use tracing::error;

use super::{config_failure, ConfigArgs};
use crate::config::Config;
use crate::jobs::process::JobProcess;
use crate::jobs::schedule::Schedules;
use crate::telemetry::{self, Role};

#[derive(Args, Debug)]
pub struct JobWorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The job slot this process fills.
    #[arg(long)]
    slot: usize,
    /// The supervisor's generation (rolling restarts) it belongs to.
    #[arg(long)]
    generation: u64,
    /// The inherited control channel to the supervisor.
    #[arg(long)]
    control_fd: RawFd,
}

pub fn run(args: &JobWorkerArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    let control = match fds::inherit(&[], Some(args.control_fd)) {
        Ok(inherited) => inherited.control,
        Err(error) => {
            eprintln!("drover job-worker: cannot adopt the control channel: {error}");
            return ExitCode::FAILURE;
        }
    };
    run_job_process(&config, args.slot, args.generation, control)
}

/// Runs a job process until it is drained (by the supervisor, or by SIGTERM
/// or SIGINT when `control` is none).
pub fn run_job_process(
    config: &Config,
    slot: usize,
    generation: u64,
    control: Option<UnixStream>,
) -> ExitCode {
    telemetry::init(&config.log, Role::Jobs { slot, generation });
    super::use_idle_cgroup(config);
    // Checked with the rest of the configuration already.
    let schedules = match Schedules::from_config(&config.jobs.schedule) {
        Ok(schedules) => schedules,
        Err(message) => {
            eprintln!("drover: invalid configuration: jobs.schedule: {message}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let options = BackgroundOptions {
        info: WorkerInfo { slot, generation, pid: std::process::id() },
        drain_timeout: config.worker.drain_timeout,
        heartbeat_interval: config.worker.heartbeat_interval,
        blocking_threads: config.worker.blocking_threads,
        blocking_queue: config.worker.blocking_queue,
    };
    let result = drover_worker::run_background(options, control, |context| {
        JobProcess::build(config, schedules, context)
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "job process failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: super::JobWorkerArgs,
    }

    #[test]
    fn parses_the_command_line_the_supervisor_writes() {
        let sent = drover_protocol::worker_args::WorkerArgs::inherited(1, 4, 0);
        let argv = std::iter::once("drover-job-worker".to_owned()).chain(sent.to_args());
        let parsed = Harness::try_parse_from(argv).unwrap().args;
        assert_eq!((parsed.slot, parsed.generation, Some(parsed.control_fd)), (1, 4, sent.control_fd));
    }
}
