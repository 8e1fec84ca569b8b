//! `drover ctl`: asks a running supervisor, over its control socket, for its
//! status, a rolling restart or a stop.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use drover_protocol::ctl::{Answer, Reply, Request, Status, WorkerKind, WorkerRow};
use drover_supervisor::control;

use super::{block_on_local, config_failure, ConfigArgs};

/// An action and the flags that find the supervisor, all on one level, so
/// `drover ctl status --json --control-socket PATH` reads as it is typed.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// status: every worker (slot, pid, generation, state, uptime, requests,
    /// in flight, connections, RSS, event-loop lag, last heartbeat);
    /// reload: rolling restart (as SIGHUP); scale N: run N workers (scaling
    /// down drops no connection); upgrade: replace the supervisor itself with
    /// the binary on disk (as SIGUSR2); stop: drain and exit (as SIGTERM).
    #[arg(value_enum)]
    command: CtlCommand,
    /// With scale: the number of workers.
    #[arg(value_name = "N")]
    count: Option<usize>,
    /// Print the supervisor's JSON reply instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CtlCommand {
    Status,
    Reload,
    Scale,
    Upgrade,
    Stop,
}

pub fn run(args: &CtlArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    let path = config.control_socket();
    let request = match args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Upgrade => Request::Upgrade,
        CtlCommand::Scale => match args.count {
            Some(workers) => Request::Scale { workers },
            None => {
                eprintln!("drover: scale needs the number of workers: drover ctl scale N");
                return ExitCode::from(super::EXIT_USAGE);
            }
        },
        CtlCommand::Stop => Request::Stop,
    };
    let reply = match block_on_local(control::request(&path, &request)) {
        Ok(reply) => reply,
        Err(error) => {
            eprintln!("drover: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ok = reply.ok();
    match reply {
        _ if args.json => println!("{}", serde_json::to_string(&reply).unwrap_or_default()),
        Reply::Status(status) => print!("{}", render_status(&status)),
        Reply::Answer(Answer { ok: true, message: Some(message), .. }) => println!("{message}"),
        Reply::Answer(Answer { error: Some(error), .. }) => eprintln!("drover: {error}"),
        Reply::Answer(Answer { message: Some(message), .. }) => eprintln!("drover: {message}"),
        Reply::Answer(Answer { ok, .. }) => println!("{}", if ok { "done" } else { "failed" }),
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn render_status(status: &Status) -> String {
    let jobs = match status.job_slots {
        0 => String::new(),
        1 => ", 1 job process".to_owned(),
        n => format!(", {n} job processes"),
    };
    let mut out = format!(
        "drover {}: {}, generation {}, {} slots{jobs}, listening on {}\n",
        status.pid,
        status.phase.as_str(),
        status.generation,
        status.slots,
        status.listen.join(", ")
    );
    out.push_str(&format!(
        "{:<5} {:<8} {:<4} {:<9} {:>8} {:>10} {:>9} {:>6} {:>9} {:>8} {:>10}\n",
        "SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "IN-FLIGHT", "CONNS", "RSS", "LAG", "HEARTBEAT"
    ));
    let row = |w: &WorkerRow, third: u64| {
        let rss = w.rss_bytes.map_or("-".to_owned(), |b| format!("{:.1}MiB", b as f64 / 1_048_576.0));
        format!(
            "{:<5} {:<8} {:<4} {:<9} {:>7.0}s {:>10} {:>9} {:>6} {:>9} {:>6.1}ms {:>8.1}s\n",
            w.slot,
            w.pid,
            w.generation,
            w.state.as_str(),
            w.uptime_s,
            w.requests,
            w.in_flight,
            third,
            rss,
            w.loop_lag_us as f64 / 1000.0,
            w.last_heartbeat_ms as f64 / 1000.0,
        )
    };
    for w in status.workers.iter().filter(|w| w.kind == WorkerKind::Http) {
        out.push_str(&row(w, w.connections));
    }
    let job_rows: Vec<&WorkerRow> = status.workers.iter().filter(|w| w.kind == WorkerKind::Jobs).collect();
    if !job_rows.is_empty() {
        // The same columns: messages handled, in hand, and failed.
        out.push_str(&format!(
            "{:<5} {:<8} {:<4} {:<9} {:>8} {:>10} {:>9} {:>6} {:>9} {:>8} {:>10}\n",
            "JOBS",
            "PID",
            "GEN",
            "STATE",
            "UPTIME",
            "HANDLED",
            "IN-HAND",
            "FAILED",
            "RSS",
            "LAG",
            "HEARTBEAT"
        ));
        for w in job_rows {
            out.push_str(&row(w, w.failures));
        }
    }
    out
}
