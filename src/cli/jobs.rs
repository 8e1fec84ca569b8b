//! `drover jobs`: run a job process (`work`), and look after the queue
//! (`status`, `dead`, `retry`). Every subcommand reads the configuration
//! like `serve` and talks to the application database.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use drover_worker::{BlockingPool, Broadcast};

use super::{block_on_local, config_failure, ConfigArgs};
use crate::app::Services;
use crate::jobs::{consumer, queue};
use crate::repo::{sql, Repos};
use crate::resources::events;
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
    /// The dead message's id (from `drover jobs dead`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<i64>,
    /// Every dead message.
    #[arg(long)]
    all: bool,
}

pub fn run(command: JobsCommand) -> ExitCode {
    let config_args = match &command {
        JobsCommand::Work(config) | JobsCommand::Status(config) => config,
        JobsCommand::Dead(args) => &args.config,
        JobsCommand::Retry(args) => &args.config,
    };
    let config = match config_args.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    telemetry::init(&config.log, LogRole::Command);
    let result = block_on_local(async {
        let services = Services::build(
            &config,
            BlockingPool::new(config.worker.blocking_threads),
            Broadcast::standalone(),
        )
        .await
        .map_err(|e| e.to_string())?;
        match &command {
            JobsCommand::Work(_) => work(&services, config.jobs.settings()).await,
            JobsCommand::Status(_) => status(&services).await,
            JobsCommand::Dead(args) => dead(&services, args.queue.as_deref()).await,
            JobsCommand::Retry(args) => retry(&services, args.id.filter(|_| !args.all)).await,
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

async fn work(services: &Services, settings: consumer::Settings) -> Result<(), String> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::task::spawn_local(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(term) => {
                    term.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        let _ = stop_tx.send(true);
    });
    tracing::info!(pid = std::process::id(), "the job process is consuming");
    let counts = consumer::run(services, settings, stop).await;
    tracing::info!(
        published = counts.published,
        handled = counts.handled,
        retried = counts.retried,
        dead = counts.dead,
        "the job process stopped"
    );
    Ok(())
}

async fn status(services: &Services) -> Result<(), String> {
    let sql = services.db.sql();
    let backlog = events::backlog(&*sql).await.map_err(|e| e.to_string())?;
    let depths = queue::depths(&*sql).await.map_err(|e| e.to_string())?;
    println!("outbox: {backlog} events not yet published");
    println!("{:<20} {:>8} {:>8}", "queue", "ready", "dead");
    for (name, _) in crate::jobs::QUEUES {
        let depth = depths.iter().find(|d| d.queue == *name);
        println!("{:<20} {:>8} {:>8}", name, depth.map_or(0, |d| d.ready), depth.map_or(0, |d| d.dead));
    }
    Ok(())
}

async fn dead(services: &Services, queue: Option<&str>) -> Result<(), String> {
    let dead = queue::dead(&*services.db.sql(), queue, 1000).await.map_err(|e| e.to_string())?;
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
            crate::resources::products::http::rfc3339(message.dead_at),
            message.last_error
        );
    }
    Ok(())
}

async fn retry(services: &Services, id: Option<i64>) -> Result<(), String> {
    let now = sql::from_millis(sql::millis(std::time::SystemTime::now()));
    let revived = queue::revive(&*services.db.sql(), id, now).await.map_err(|e| e.to_string())?;
    match (id, revived) {
        (Some(id), 0) => Err(format!("no dead message with id {id}")),
        _ => {
            println!("revived {revived} dead message(s)");
            Ok(())
        }
    }
}
