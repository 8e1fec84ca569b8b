//! `drover worker` (hidden): one worker process. Started by the supervisor
//! with its slot's sockets and the control channel as inherited fds.
//! The flags are `drover_protocol::worker_args`'s; a test below keeps the
//! two in step.

use std::os::fd::RawFd;
use std::process::ExitCode;

use clap::Args;
use drover_worker::{fds, Limits, ServeOptions, WorkerInfo};
use tracing::error;

use super::{config_failure, ConfigArgs};
use crate::config::CpuAffinity;
use crate::telemetry::{self, Role};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The slot this worker serves.
    #[arg(long)]
    slot: usize,
    /// The supervisor's generation (rolling restarts) this worker belongs to.
    #[arg(long)]
    generation: u64,
    /// Inherited listening sockets, comma-separated fd numbers.
    #[arg(long, value_delimiter = ',', required = true)]
    listen_fds: Vec<RawFd>,
    /// The inherited control channel to the supervisor.
    #[arg(long)]
    control_fd: Option<RawFd>,
}

pub fn run(args: &WorkerArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, Role::Worker { slot: args.slot, generation: args.generation });
    if config.worker.cpu_affinity == CpuAffinity::Auto {
        match drover_worker::affinity::pin_for_slot(args.slot) {
            Ok(cpu) => tracing::info!(cpu, "pinned to a CPU"),
            Err(error) => tracing::warn!(%error, "cannot pin this worker to a CPU; running unpinned"),
        }
    }
    super::use_idle_cgroup(&config);
    let inherited = match fds::inherit(&args.listen_fds, args.control_fd) {
        Ok(inherited) => inherited,
        Err(error) => {
            error!(%error, "cannot adopt the inherited sockets");
            return ExitCode::FAILURE;
        }
    };
    let http = &config.http;
    let options = ServeOptions {
        info: WorkerInfo { slot: args.slot, generation: args.generation, pid: std::process::id() },
        limits: Limits {
            header_read_timeout: http.header_read_timeout,
            body_read_timeout: http.body_read_timeout,
            keep_alive_timeout: http.keep_alive_timeout,
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            max_body_bytes: http.max_body_bytes,
            max_connections: http.max_connections,
            max_connections_per_ip: http.max_connections_per_ip,
            max_concurrent_streams: http.max_concurrent_streams,
        },
        drain_timeout: config.worker.drain_timeout,
        heartbeat_interval: config.worker.heartbeat_interval,
        blocking_threads: config.worker.blocking_threads,
        blocking_queue: config.worker.blocking_queue,
        access_log_every: config.log.access_every(),
        admission: config.admission.to_worker(),
    };
    let result =
        drover_worker::run(
            options,
            inherited,
            |context| async move { crate::app::build(&config, context).await },
        );
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "worker failed");
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
        args: super::WorkerArgs,
    }

    #[test]
    fn parses_the_command_line_the_supervisor_writes() {
        let sent = drover_protocol::worker_args::WorkerArgs::inherited(2, 5, 3);
        let argv = std::iter::once("drover-worker".to_owned()).chain(sent.to_args());
        let parsed = Harness::try_parse_from(argv).unwrap().args;
        assert_eq!(
            (parsed.slot, parsed.generation, parsed.listen_fds, parsed.control_fd),
            (sent.slot, sent.generation, sent.listen_fds, sent.control_fd)
        );
    }
}
