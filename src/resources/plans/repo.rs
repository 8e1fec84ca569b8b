//! Plans, stored: one implementation for every backend.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{NewPlan, Plan, PlanCode, PlanId};
use crate::domain::money::{Currency, Money};
use crate::domain::proration::PlanTerms;
use crate::domain::time::Interval;
use crate::params;
use crate::repo::sql::{self, Row, SqlRef};
use crate::repo::RepoError;

/// The most plans [`PlanRepo::list`] returns.
pub const MAX_PLANS: i64 = 500;

#[async_trait(?Send)]
pub trait PlanRepo {
    async fn create(&self, plan: &NewPlan, now: SystemTime) -> Result<Plan, RepoError>;
    async fn find(&self, id: PlanId) -> Result<Option<Plan>, RepoError>;
    async fn find_by_code(&self, code: &PlanCode) -> Result<Option<Plan>, RepoError>;
    async fn list(&self) -> Result<Vec<Plan>, RepoError>;
}

pub struct SqlPlanRepo {
    sql: SqlRef,
}

impl SqlPlanRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }
}

const COLUMNS: &str = "id, code, name, price_amount, currency, billing_interval, created_at";

fn stored(e: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored plan breaks a domain rule: {e}").into())
}

fn plan(row: &Row) -> Result<Plan, RepoError> {
    Ok(Plan {
        id: PlanId(row.int(0)?),
        code: PlanCode::parse(&row.text(1)?).map_err(stored)?,
        name: row.text(2)?,
        terms: PlanTerms {
            price: Money::new(row.int(3)?, Currency::parse(&row.text(4)?).map_err(stored)?),
            interval: Interval::parse(&row.text(5)?).map_err(stored)?,
        },
        created_at: row.time(6)?,
    })
}

#[async_trait(?Send)]
impl PlanRepo for SqlPlanRepo {
    async fn create(&self, p: &NewPlan, now: SystemTime) -> Result<Plan, RepoError> {
        let id = self
            .sql
            .insert(
                "INSERT INTO plans (code, name, price_amount, currency, billing_interval, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    p.code.as_str(),
                    p.name.as_str(),
                    p.terms.price.amount,
                    p.terms.price.currency.code(),
                    p.terms.interval.as_str(),
                    now
                ],
            )
            .await
            .map_err(|e| e.unique_is("code"))?;
        Ok(Plan {
            id: PlanId(id),
            code: p.code.clone(),
            name: p.name.clone(),
            terms: p.terms,
            created_at: sql::from_millis(sql::millis(now)),
        })
    }

    async fn find(&self, id: PlanId) -> Result<Option<Plan>, RepoError> {
        let row =
            self.sql.query_opt(&format!("SELECT {COLUMNS} FROM plans WHERE id = ?"), params![id.0]).await?;
        row.as_ref().map(plan).transpose()
    }

    async fn find_by_code(&self, code: &PlanCode) -> Result<Option<Plan>, RepoError> {
        let row = self
            .sql
            .query_opt(&format!("SELECT {COLUMNS} FROM plans WHERE code = ?"), params![code.as_str()])
            .await?;
        row.as_ref().map(plan).transpose()
    }

    async fn list(&self) -> Result<Vec<Plan>, RepoError> {
        let rows = self
            .sql
            .query(&format!("SELECT {COLUMNS} FROM plans ORDER BY id LIMIT ?"), params![MAX_PLANS])
            .await?;
        rows.iter().map(plan).collect()
    }
}
