//! `drover ctl` and the supervisor's control socket: one JSON request per
//! connection, one JSON reply. Requests are tagged by `cmd`; a reply is a
//! [`Status`] for `status` and an [`Answer`] for everything else (and for
//! any refusal), both with `ok`, so a script can test one key.

use serde::{Deserialize, Serialize};

/// The longest request line the supervisor reads; requests are a few dozen
/// bytes.
pub const MAX_REQUEST: usize = 4096;

/// What `drover ctl` can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Stop,
    /// Run this many workers.
    Scale {
        workers: usize,
    },
    /// Upgrade the supervisor itself (as SIGUSR2).
    Upgrade,
}

/// The reply to any request but `status`, and to a `status` that could not
/// be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    /// What was done, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why nothing was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub fn done(message: impl Into<String>) -> Self {
        Self { ok: true, message: Some(message.into()), error: None }
    }

    /// Not done, with a sentence saying why, shown as a message.
    pub fn declined(message: impl Into<String>) -> Self {
        Self { ok: false, message: Some(message.into()), error: None }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        Self { ok: false, message: None, error: Some(error.into()) }
    }
}

impl From<Result<String, String>> for Answer {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(message) => Answer::done(message),
            Err(error) => Answer::failed(error),
        }
    }
}

/// What the supervisor is doing as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Starting the first workers; not every slot is ready yet.
    Booting,
    /// Every slot has a ready worker.
    Running,
    /// A rolling restart is replacing workers one slot at a time.
    Reloading,
    /// Stopping: every worker was told to drain.
    Draining,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Running => "running",
            Phase::Reloading => "reloading",
            Phase::Draining => "draining",
        }
    }
}

/// Where one worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, not ready yet.
    Booting,
    /// Serving.
    Ready,
    /// Finishing what it has, then exiting.
    Draining,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
        }
    }
}

/// The reply to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Always true: a failed status is an [`Answer`].
    pub ok: bool,
    /// The supervisor's pid.
    pub pid: u32,
    pub phase: Phase,
    /// Rolling restarts and upgrades so far (the workers' generation).
    pub generation: u64,
    /// Every listening address.
    pub listen: Vec<String>,
    /// HTTP worker slots configured now.
    pub slots: usize,
    /// Job process slots configured (`jobs.workers`).
    #[serde(default)]
    pub job_slots: usize,
    pub workers: Vec<WorkerRow>,
}

/// What a worker process does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// Serves HTTP on its slot's sockets.
    #[default]
    Http,
    /// Consumes the job queues and runs scheduled tasks; no socket.
    Jobs,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Http => "http",
            WorkerKind::Jobs => "jobs",
        }
    }
}

/// One worker in a [`Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Slots are numbered per kind.
    #[serde(default)]
    pub kind: WorkerKind,
    pub slot: usize,
    pub pid: u32,
    pub generation: u64,
    pub state: WorkerState,
    pub uptime_s: f64,
    /// Requests answered; for a job process, messages handled.
    pub requests: u64,
    /// Requests being answered; for a job process, messages in hand.
    pub in_flight: u64,
    pub connections: u64,
    /// A job process's messages that failed (retried or dead).
    #[serde(default)]
    pub failures: u64,
    /// None when /proc could not tell.
    pub rss_bytes: Option<u64>,
    pub loop_lag_us: u64,
    pub last_heartbeat_ms: u64,
}

/// Any reply, as the supervisor sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Status),
    Answer(Answer),
}

impl Reply {
    pub fn ok(&self) -> bool {
        match self {
            Reply::Status(status) => status.ok,
            Reply::Answer(answer) => answer.ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_cmd() {
        let line = serde_json::to_string(&Request::Scale { workers: 3 }).unwrap();
        assert_eq!(line, r#"{"cmd":"scale","workers":3}"#);
        let back: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(back, Request::Status);
    }

    #[test]
    fn replies_decode_as_what_they_are() {
        let status = Status {
            ok: true,
            pid: 1,
            phase: Phase::Running,
            generation: 2,
            listen: vec!["127.0.0.1:3000".into()],
            slots: 1,
            job_slots: 0,
            workers: vec![WorkerRow {
                kind: WorkerKind::Http,
                slot: 0,
                pid: 9,
                generation: 2,
                state: WorkerState::Ready,
                uptime_s: 1.5,
                requests: 10,
                in_flight: 0,
                connections: 1,
                failures: 0,
                rss_bytes: None,
                loop_lag_us: 3,
                last_heartbeat_ms: 20,
            }],
        };
        let line = serde_json::to_string(&Reply::Status(status.clone())).unwrap();
        assert!(line.contains(r#""phase":"running""#) && line.contains(r#""state":"ready""#), "{line}");
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), Reply::Status(status));

        let refused = Reply::Answer(Answer::failed("busy"));
        let line = serde_json::to_string(&refused).unwrap();
        assert_eq!(line, r#"{"ok":false,"error":"busy"}"#);
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), refused);
    }
}
