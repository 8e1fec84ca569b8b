//! `drover ctl`: asks a running supervisor, over its control socket, for its
//! status, a rolling restart or a stop.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use drover_supervisor::control::{self, Request};
use serde_json::Value;

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
    /// With status: print the supervisor's JSON answer as it is.
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
    let answer = match block_on_local(control::request(&path, &request)) {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("drover: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ok = answer["ok"].as_bool() == Some(true);
    match args.command {
        CtlCommand::Status if args.json => println!("{answer}"),
        CtlCommand::Status if ok => print!("{}", render_status(&answer)),
        _ => match (ok, answer["message"].as_str(), answer["error"].as_str()) {
            (true, Some(message), _) => println!("{message}"),
            (_, _, Some(error)) => eprintln!("drover: {error}"),
            (_, Some(message), None) => eprintln!("drover: {message}"),
            _ => println!("{answer}"),
        },
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn render_status(status: &Value) -> String {
    let listen: Vec<&str> =
        status["listen"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut out = format!(
        "drover {}: {}, generation {}, {} slots, listening on {}\n",
        status["pid"],
        status["phase"].as_str().unwrap_or("?"),
        status["generation"],
        status["slots"],
        listen.join(", ")
    );
    out.push_str(&format!(
        "{:<5} {:<8} {:<4} {:<9} {:>8} {:>10} {:>9} {:>6} {:>9} {:>8} {:>10}\n",
        "SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "IN-FLIGHT", "CONNS", "RSS", "LAG", "HEARTBEAT"
    ));
    for w in status["workers"].as_array().into_iter().flatten() {
        let rss =
            w["rss_bytes"].as_u64().map_or("-".to_owned(), |b| format!("{:.1}MiB", b as f64 / 1_048_576.0));
        out.push_str(&format!(
            "{:<5} {:<8} {:<4} {:<9} {:>7.0}s {:>10} {:>9} {:>6} {:>9} {:>6.1}ms {:>8.1}s\n",
            w["slot"].to_string(),
            w["pid"].to_string(),
            w["generation"].to_string(),
            w["state"].as_str().unwrap_or("?"),
            w["uptime_s"].as_f64().unwrap_or(0.0),
            w["requests"].to_string(),
            w["in_flight"].to_string(),
            w["connections"].to_string(),
            rss,
            w["loop_lag_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            w["last_heartbeat_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        ));
    }
    out
}
