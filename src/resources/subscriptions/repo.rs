//! Subscriptions, stored: one implementation for every backend. Updates are
//! conditional on the state they were computed from, so two concurrent
//! changes of one subscription cannot both apply: the loser sees
//! contention and runs again on the new state.

use async_trait::async_trait;

use super::{Subscription, SubscriptionId, SubscriptionStatus};
use crate::domain::proration::Period;
use crate::domain::UserId;
use crate::params;
use crate::repo::sql::{Row, SqlRef};
use crate::repo::RepoError;
use crate::resources::plans::PlanId;

#[async_trait(?Send)]
pub trait SubscriptionRepo {
    async fn insert(&self, subscription: &Subscription) -> Result<SubscriptionId, RepoError>;
    async fn find(&self, id: SubscriptionId) -> Result<Option<Subscription>, RepoError>;
    /// Writes `new` over the stored row if it is still `old`;
    /// [`RepoError::Contention`] if it changed meanwhile.
    async fn replace(&self, old: &Subscription, new: &Subscription) -> Result<(), RepoError>;
    /// Active subscriptions whose period ended at or before `now`, the
    /// longest overdue first.
    async fn due(&self, now: std::time::SystemTime, limit: i64) -> Result<Vec<Subscription>, RepoError>;
}

pub struct SqlSubscriptionRepo {
    sql: SqlRef,
}

impl SqlSubscriptionRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }
}

const COLUMNS: &str = "id, user_id, plan_id, status, period_start, period_end, cancel_at_period_end, \
                       cancelled_at, created_at, updated_at, period_anchor";

fn subscription(row: &Row) -> Result<Subscription, RepoError> {
    let status = row.text(3)?;
    Ok(Subscription {
        id: SubscriptionId(row.int(0)?),
        user: UserId(row.int(1)?),
        plan: PlanId(row.int(2)?),
        status: SubscriptionStatus::parse(&status)
            .ok_or_else(|| RepoError::Other(format!("stored subscription status {status:?}").into()))?,
        period: Period { start: row.time(4)?, end: row.time(5)? },
        cancel_at_period_end: row.int(6)? != 0,
        cancelled_at: row.opt_int(7)?.map(crate::repo::sql::from_millis),
        created_at: row.time(8)?,
        updated_at: row.time(9)?,
        anchor: row.time(10)?,
    })
}

#[async_trait(?Send)]
impl SubscriptionRepo for SqlSubscriptionRepo {
    async fn insert(&self, s: &Subscription) -> Result<SubscriptionId, RepoError> {
        let id = self
            .sql
            .insert(
                "INSERT INTO subscriptions (user_id, plan_id, status, period_start, period_end, cancel_at_period_end, \
                 cancelled_at, created_at, updated_at, period_anchor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    s.user.0,
                    s.plan.0,
                    s.status.as_str(),
                    s.period.start,
                    s.period.end,
                    i64::from(s.cancel_at_period_end),
                    s.cancelled_at,
                    s.created_at,
                    s.updated_at,
                    s.anchor
                ],
            )
            .await?;
        Ok(SubscriptionId(id))
    }

    async fn find(&self, id: SubscriptionId) -> Result<Option<Subscription>, RepoError> {
        let row = self
            .sql
            .query_opt(&format!("SELECT {COLUMNS} FROM subscriptions WHERE id = ?"), params![id.0])
            .await?;
        row.as_ref().map(subscription).transpose()
    }

    async fn replace(&self, old: &Subscription, new: &Subscription) -> Result<(), RepoError> {
        let changed = self
            .sql
            .execute(
                "UPDATE subscriptions SET plan_id = ?, status = ?, period_start = ?, period_end = ?, \
                 cancel_at_period_end = ?, cancelled_at = ?, updated_at = ?, period_anchor = ? \
                 WHERE id = ? AND plan_id = ? AND status = ? AND period_start = ? AND period_end = ? \
                 AND cancel_at_period_end = ?",
                params![
                    new.plan.0,
                    new.status.as_str(),
                    new.period.start,
                    new.period.end,
                    i64::from(new.cancel_at_period_end),
                    new.cancelled_at,
                    new.updated_at,
                    new.anchor,
                    old.id.0,
                    old.plan.0,
                    old.status.as_str(),
                    old.period.start,
                    old.period.end,
                    i64::from(old.cancel_at_period_end)
                ],
            )
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(RepoError::Contention(format!("subscription {} changed meanwhile", old.id.0).into()))
        }
    }

    async fn due(&self, now: std::time::SystemTime, limit: i64) -> Result<Vec<Subscription>, RepoError> {
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM subscriptions WHERE status = 'active' AND period_end <= ? \
                     ORDER BY period_end, id LIMIT ?"
                ),
                params![now, limit],
            )
            .await?;
        rows.iter().map(subscription).collect()
    }
}
