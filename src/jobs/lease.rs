//! Scheduled tasks' leases and runs, stored (`job_schedules`, `job_runs`).
//! A tick is claimed by compare-and-set: only a process that finds the
//! task's last done tick older and no live lease gets it, whichever host
//! it runs on.

use std::time::SystemTime;

use crate::params;
use crate::repo::sql::{self, Sql};
use crate::repo::RepoError;

/// One run of a task, for `drover jobs runs`.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub task: String,
    pub tick: SystemTime,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub outcome: String,
    pub detail: String,
    pub runner: String,
}

/// Makes sure `task` has its row.
pub async fn ensure(sql: &dyn Sql, task: &str) -> Result<(), RepoError> {
    let insert = sql::insert_ignore(sql.backend(), "INSERT INTO job_schedules (task) VALUES (?)");
    sql.execute(&insert, params![task]).await?;
    Ok(())
}

/// Claims tick `tick` of `task` until `until`: `false` when it is done
/// already or another process holds the lease.
pub async fn claim_tick(
    sql: &dyn Sql,
    task: &str,
    tick: SystemTime,
    token: &str,
    now: SystemTime,
    until: SystemTime,
) -> Result<bool, RepoError> {
    let claimed = sql
        .execute(
            "UPDATE job_schedules SET claim = ?, claimed_tick = ?, lease_until = ? \
             WHERE task = ? AND done_tick < ? AND lease_until < ?",
            params![token, tick, until, task, tick, now],
        )
        .await?;
    Ok(claimed == 1)
}

/// Claims `task` for a run on demand, whatever its ticks: `false` while
/// another process holds the lease.
pub async fn claim_now(
    sql: &dyn Sql,
    task: &str,
    token: &str,
    now: SystemTime,
    until: SystemTime,
) -> Result<bool, RepoError> {
    let claimed = sql
        .execute(
            "UPDATE job_schedules SET claim = ?, lease_until = ? WHERE task = ? AND lease_until < ?",
            params![token, until, task, now],
        )
        .await?;
    Ok(claimed == 1)
}

/// The claimed tick is done; the lease is given back.
pub async fn finish_tick(sql: &dyn Sql, task: &str, token: &str) -> Result<(), RepoError> {
    sql.execute(
        "UPDATE job_schedules SET done_tick = claimed_tick, lease_until = 0, claim = NULL WHERE task = ? AND claim = ?",
        params![task, token],
    )
    .await?;
    Ok(())
}

/// The lease is given back; the ticks stay as they were.
pub async fn release(sql: &dyn Sql, task: &str, token: &str) -> Result<(), RepoError> {
    sql.execute(
        "UPDATE job_schedules SET lease_until = 0, claim = NULL WHERE task = ? AND claim = ?",
        params![task, token],
    )
    .await?;
    Ok(())
}

/// The last tick each task has done (0: none).
pub async fn done_ticks(sql: &dyn Sql) -> Result<Vec<(String, SystemTime)>, RepoError> {
    let rows = sql.query("SELECT task, done_tick FROM job_schedules ORDER BY task", &[]).await?;
    rows.iter().map(|row| Ok((row.text(0)?, row.time(1)?))).collect()
}

pub async fn record(sql: &dyn Sql, run: &Run) -> Result<(), RepoError> {
    sql.execute(
        "INSERT INTO job_runs (task, tick, started_at, finished_at, outcome, detail, runner) VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![
            run.task.as_str(),
            run.tick,
            run.started_at,
            run.finished_at,
            run.outcome.as_str(),
            run.detail.chars().take(500).collect::<String>(),
            run.runner.chars().take(100).collect::<String>()
        ],
    )
    .await?;
    Ok(())
}

/// The latest `limit` runs (of one task, or all), newest first.
pub async fn runs(sql: &dyn Sql, task: Option<&str>, limit: i64) -> Result<Vec<Run>, RepoError> {
    let columns = "SELECT id, task, tick, started_at, finished_at, outcome, detail, runner FROM job_runs";
    let rows = match task {
        Some(task) => {
            sql.query(&format!("{columns} WHERE task = ? ORDER BY id DESC LIMIT ?"), params![task, limit])
                .await?
        }
        None => sql.query(&format!("{columns} ORDER BY id DESC LIMIT ?"), params![limit]).await?,
    };
    rows.iter()
        .map(|row| {
            Ok(Run {
                id: row.int(0)?,
                task: row.text(1)?,
                tick: row.time(2)?,
                started_at: row.time(3)?,
                finished_at: row.time(4)?,
                outcome: row.text(5)?,
                detail: row.text(6)?,
                runner: row.text(7)?,
            })
        })
        .collect()
}
