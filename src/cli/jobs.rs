//! `drover jobs`: run a job process (`work`), and look after the queue
//! (`status`, `dead`, `retry`). Every subcommand reads the configuration
//! like `serve` and talks to the application database.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use drover_worker::{BlockingPool, Broadcast};

use super::{block_on_local, config_failure, ConfigArgs};
use crate::app::Services;
use crate::jobs::lease;
use crate::jobs::schedule::{self, Schedules};
use crate::jobs::transport::{self, Transport};
use crate::repo::Repos;
use crate::resources::events;
use crate::resources::products::http::rfc3339;
use crate::telemetry::{self, Role as LogRole};

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Run one job process in the foreground: relay the outbox, consume the
    /// queue, until SIGTERM or SIGINT (it finishes the message in hand).
    Work(ConfigArgs),
    /// The outbox backlog and each queue's depth and dead messages.
    Status(ConfigArgs),
    /// List dead messages, oldest first.
    Dead(DeadArgs),
    /// Revive a dead message (or --all): due now, attempts from zero.
    Retry(RetryArgs),
    /// Scheduled tasks' latest runs, newest first.
    Runs(RunsArgs),
    /// Run a scheduled task now, through the same lease as its schedule.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this task's.
    #[arg(long)]
    task: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// orders.expire, outbox.prune or subscriptions.renew.
    task: String,
}

#[derive(Args, Debug)]
pub struct DeadArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only this queue's.
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The dead message's id (from `drover jobs dead`: a number with the
    /// embedded queue, the event id with RabbitMQ).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Every dead message.
    #[arg(long)]
    all: bool,
}

pub fn run(command: JobsCommand) -> ExitCode {
    let config_args = match &command {
        JobsCommand::Work(config) | JobsCommand::Status(config) => config,
        JobsCommand::Dead(args) => &args.config,
        JobsCommand::Retry(args) => &args.config,
        JobsCommand::Runs(args) => &args.config,
        JobsCommand::Run(args) => &args.config,
    };
    let config = match config_args.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    if let JobsCommand::Work(_) = command {
        return super::job_worker::run_job_process(&config, 0, 0, None);
    }
    telemetry::init(&config.log, LogRole::Command);
    // Checked with the rest of the configuration already.
    let schedules = match Schedules::from_config(&config.jobs.schedule) {
        Ok(schedules) => schedules,
        Err(message) => {
            eprintln!("drover: invalid configuration: jobs.schedule: {message}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let tasks = config.task_settings();
    let result = block_on_local(async {
        let services = Services::build(
            &config,
            BlockingPool::new(config.worker.blocking_threads),
            Broadcast::standalone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let transport = transport::open(&config.jobs.transport(), services.db.clone());
        let transport = &*transport;
        match &command {
            JobsCommand::Work(_) => unreachable!("run above"),
            JobsCommand::Status(_) => status(&services, transport, &schedules).await,
            JobsCommand::Runs(args) => runs(&services, args.task.as_deref()).await,
            JobsCommand::Run(args) => {
                let run = schedule::run_now(&services, &args.task, tasks).await?;
                println!("{}: {} ({})", run.task, run.outcome, run.detail);
                if run.outcome == "ok" {
                    Ok(())
                } else {
                    Err(format!("{} failed", run.task))
                }
            }
            JobsCommand::Dead(args) => dead(transport, args.queue.as_deref()).await,
            JobsCommand::Retry(args) => retry(transport, args.id.as_deref().filter(|_| !args.all)).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("drover jobs: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn status(services: &Services, transport: &dyn Transport, schedules: &Schedules) -> Result<(), String> {
    let sql = services.db.sql();
    let backlog = events::backlog(&*sql).await.map_err(|e| e.to_string())?;
    println!("outbox: {backlog} events not yet published");
    let depths = transport.depths().await.map_err(|e| e.to_string())?;
    println!("transport: {}", transport.name());
    println!("{:<20} {:>8} {:>8}", "queue", "ready", "dead");
    for (name, _) in crate::jobs::QUEUES {
        let depth = depths.iter().find(|d| d.queue == *name);
        println!("{:<20} {:>8} {:>8}", name, depth.map_or(0, |d| d.ready), depth.map_or(0, |d| d.dead));
    }
    let done = lease::done_ticks(&*sql).await.map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now();
    println!("{:<20} {:<24} {:<24}", "schedule", "last tick done", "next tick");
    for task in schedules.tasks() {
        let last = done
            .iter()
            .find(|(t, _)| t == task)
            .map(|(_, at)| *at)
            .filter(|at| *at > std::time::UNIX_EPOCH)
            .map_or_else(|| "never".to_owned(), rfc3339);
        let next = schedules.next(task, now).map_or_else(|| "never".to_owned(), rfc3339);
        println!("{task:<20} {last:<24} {next:<24}");
    }
    Ok(())
}

async fn runs(services: &Services, task: Option<&str>) -> Result<(), String> {
    let runs = lease::runs(&*services.db.sql(), task, 50).await.map_err(|e| e.to_string())?;
    if runs.is_empty() {
        println!("no runs");
    }
    for run in runs {
        println!(
            "{}\t{}\ttick={}\tstarted={}\t{} ms\t{}\t{}\t{}",
            run.id,
            run.task,
            rfc3339(run.tick),
            rfc3339(run.started_at),
            run.finished_at.duration_since(run.started_at).unwrap_or_default().as_millis(),
            run.outcome,
            run.runner,
            run.detail
        );
    }
    Ok(())
}

async fn dead(transport: &dyn Transport, queue: Option<&str>) -> Result<(), String> {
    let dead = transport.dead(queue, 1000).await.map_err(|e| e.to_string())?;
    if dead.is_empty() {
        println!("no dead messages");
    }
    for message in dead {
        println!(
            "{}\t{}\t{}\t{}\tattempts={}\tdead_at={}\t{}",
            message.id,
            message.queue,
            message.kind,
            message.event_id,
            message.attempts,
            rfc3339(message.dead_at),
            message.last_error
        );
    }
    Ok(())
}

async fn retry(transport: &dyn Transport, id: Option<&str>) -> Result<(), String> {
    let revived = transport.revive(id).await.map_err(|e| e.to_string())?;
    match (id, revived) {
        (Some(id), 0) => Err(format!("no dead message with id {id}")),
        _ => {
            println!("revived {revived} dead message(s)");
            Ok(())
        }
    }
}
