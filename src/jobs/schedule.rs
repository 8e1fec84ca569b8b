//! Scheduled tasks (`[jobs.schedule]`): cron expressions, in UTC, naming a
//! task. Every job process checks them each round; a due tick runs once
//! across all of them and every other drover instance sharing the
//! database (a lease in `job_schedules`, see [`super::lease`]). After
//! downtime only the latest missed tick runs, once. A process that dies
//! mid-run leaves its lease to expire (`jobs.lease`); the tick is then run
//! again by another, so tasks are written to be safe to repeat.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rand_core::{OsRng, RngCore};

use super::lease::{self, Run};
use crate::app::Services;
use crate::repo::sql::{self, Sql};
use crate::repo::{RepoError, Repos};

/// The tasks a schedule may name.
pub const TASKS: &[&str] = &["orders.expire", "outbox.prune", "subscriptions.renew"];

/// Orders cancelled per `orders.expire` run; the next tick takes the rest.
const EXPIRE_BATCH: i64 = 1000;

/// Subscriptions renewed or ended per `subscriptions.renew` run; the next
/// tick takes the rest.
const RENEW_MAX: u64 = 10_000;

/// A cron expression: five fields (minute hour day-of-month month
/// day-of-week), or six with seconds first.
pub fn parse(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expression}"),
        6 => expression.to_owned(),
        _ => {
            return Err(format!("{expression:?} is not a cron expression of 5 fields (or 6, seconds first)"))
        }
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("{expression:?}: {e}"))
}

/// What the tasks need to know (`[jobs]`, `[orders]`).
#[derive(Debug, Clone, Copy)]
pub struct TaskSettings {
    pub lease: Duration,
    /// `orders.expire`: placed orders older than this are cancelled.
    pub unpaid_ttl: Duration,
    /// `outbox.prune`: published events older than this are deleted.
    pub outbox_retention: Duration,
}

/// The configured schedules.
pub struct Schedules(Vec<(&'static str, cron::Schedule)>);

impl Schedules {
    /// From `[jobs.schedule]`; an empty expression turns a task off.
    pub fn from_config(entries: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut schedules = Vec::new();
        for (task, expression) in entries {
            let Some(known) = TASKS.iter().find(|t| *t == task) else {
                return Err(format!("{task:?} is not a task; the tasks are {}", TASKS.join(", ")));
            };
            if expression.trim().is_empty() {
                continue;
            }
            schedules.push((*known, parse(expression).map_err(|e| format!("{task}: {e}"))?));
        }
        Ok(Self(schedules))
    }

    pub fn tasks(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(task, _)| *task)
    }

    /// The next tick of `task` after `now`.
    pub fn next(&self, task: &str, now: SystemTime) -> Option<SystemTime> {
        let (_, schedule) = self.0.iter().find(|(t, _)| *t == task)?;
        schedule.after(&chrono::DateTime::<chrono::Utc>::from(now)).next().map(SystemTime::from)
    }

    /// The latest tick of `task` at or before `now`.
    fn latest(schedule: &cron::Schedule, now: SystemTime) -> Option<SystemTime> {
        let after = chrono::DateTime::<chrono::Utc>::from(now + Duration::from_millis(1));
        schedule.after(&after).next_back().map(SystemTime::from)
    }
}

/// Who runs: host and pid, in `job_runs`.
fn runner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

pub(super) fn token() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> SystemTime {
    sql::from_millis(sql::millis(SystemTime::now()))
}

/// Runs every task whose latest tick is not done and not held by another
/// process. The number of runs.
pub async fn run_due(
    services: &Services,
    schedules: &Schedules,
    settings: TaskSettings,
) -> Result<usize, RepoError> {
    let sql = services.db.sql();
    let mut ran = 0;
    for (task, schedule) in &schedules.0 {
        let now = now_ms();
        let Some(tick) = Schedules::latest(schedule, now) else { continue };
        lease::ensure(&*sql, task).await?;
        let token = token();
        if !lease::claim_tick(&*sql, task, tick, &token, now, now + settings.lease).await? {
            continue;
        }
        run_claimed(services, &*sql, task, tick, settings).await?;
        // A failed run is done for this tick too: the next tick tries again.
        lease::finish_tick(&*sql, task, &token).await?;
        ran += 1;
    }
    Ok(ran)
}

/// Runs `task` now, outside its schedule, through the same lease: refused
/// while another process runs it. The run as recorded.
pub async fn run_now(services: &Services, task: &str, settings: TaskSettings) -> Result<Run, String> {
    let Some(task) = TASKS.iter().find(|t| **t == task) else {
        return Err(format!("{task:?} is not a task; the tasks are {}", TASKS.join(", ")));
    };
    let sql = services.db.sql();
    let now = now_ms();
    let token = token();
    lease::ensure(&*sql, task).await.map_err(|e| e.to_string())?;
    if !lease::claim_now(&*sql, task, &token, now, now + settings.lease).await.map_err(|e| e.to_string())? {
        return Err(format!("{task} is running in another process; try again when it is done"));
    }
    let run = run_claimed(services, &*sql, task, now, settings).await.map_err(|e| e.to_string());
    lease::release(&*sql, task, &token).await.map_err(|e| e.to_string())?;
    run
}

/// Runs a claimed task and records the run.
async fn run_claimed(
    services: &Services,
    sql: &dyn Sql,
    task: &'static str,
    tick: SystemTime,
    settings: TaskSettings,
) -> Result<Run, RepoError> {
    let started_at = now_ms();
    let before = |age: Duration| started_at.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let result = match task {
        "orders.expire" => services
            .orders
            .expire_unpaid(before(settings.unpaid_ttl), EXPIRE_BATCH)
            .await
            .map(|n| format!("{n} unpaid orders cancelled"))
            .map_err(|e| e.to_string()),
        "subscriptions.renew" => services
            .subscriptions
            .renew_due(RENEW_MAX)
            .await
            .map(|r| format!("{} periods renewed, {} subscriptions ended", r.renewed, r.ended))
            .map_err(|e| e.to_string()),
        "outbox.prune" => crate::resources::events::prune(sql, before(settings.outbox_retention))
            .await
            .map(|n| format!("{n} rows pruned"))
            .map_err(|e| e.to_string()),
        other => Err(format!("no such task {other}")),
    };
    let (outcome, detail) = match result {
        Ok(detail) => ("ok", detail),
        Err(error) => {
            tracing::error!(task, %error, "a scheduled task failed");
            ("failed", error)
        }
    };
    let run = Run {
        id: 0,
        task: task.to_owned(),
        tick,
        started_at,
        finished_at: now_ms(),
        outcome: outcome.to_owned(),
        detail,
        runner: runner(),
    };
    lease::record(sql, &run).await?;
    tracing::info!(task, outcome, detail = %run.detail, "scheduled task ran");
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_or_six_and_the_latest_tick_at_or_before_now() {
        assert!(parse("*/5 * * * *").is_ok());
        assert!(parse("*/2 * * * * *").is_ok());
        assert!(parse("* * *").is_err());
        assert!(parse("61 * * * *").is_err());
        let every_five = parse("*/5 * * * *").unwrap();
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // 1970-01-01 00:07:30 -> the 00:05 tick; exactly 00:10 -> itself.
        assert_eq!(Schedules::latest(&every_five, at(450)), Some(at(300)));
        assert_eq!(Schedules::latest(&every_five, at(600)), Some(at(600)));
        let map = BTreeMap::from([("orders.expire".to_owned(), "*/5 * * * *".to_owned())]);
        let schedules = Schedules::from_config(&map).unwrap();
        assert_eq!(schedules.next("orders.expire", at(450)), Some(at(600)));
        let unknown = BTreeMap::from([("backup".to_owned(), "* * * * *".to_owned())]);
        assert!(Schedules::from_config(&unknown).is_err());
        let off = BTreeMap::from([("outbox.prune".to_owned(), String::new())]);
        assert_eq!(Schedules::from_config(&off).unwrap().tasks().count(), 0);
    }
}
