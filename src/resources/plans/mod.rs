//! Plans: what a subscription pays, per month or per year. Created by
//! administrators, listed to anyone signed in.

pub mod http;
pub mod repo;

use std::rc::Rc;
use std::time::SystemTime;

use crate::domain::proration::PlanTerms;
use crate::domain::time::Clock;
use crate::domain::Invalid;
use crate::repo::{Database, Repos};
use crate::resources::products::service::admin_only;
use crate::service::{Principal, ServiceError};

pub use repo::{PlanRepo, SqlPlanRepo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanId(pub i64);

/// A plan's code: 1–64 lower-case letters, digits, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCode(String);

impl PlanCode {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new("plan", "must be 1-64 lower-case letters, digits, '_' or '-'"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: PlanId,
    pub code: PlanCode,
    pub name: String,
    pub terms: PlanTerms,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct NewPlan {
    pub code: PlanCode,
    pub name: String,
    pub terms: PlanTerms,
}

/// The repository over the pool, or over a transaction's connection.
pub fn repo(repos: &dyn Repos) -> SqlPlanRepo {
    SqlPlanRepo::new(repos.sql())
}

#[derive(Clone)]
pub struct PlanService {
    db: Rc<Database>,
    clock: Rc<dyn Clock>,
}

impl PlanService {
    pub fn new(db: Rc<Database>, clock: Rc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// [`ServiceError::Taken`]`("code")` on a code in use.
    pub async fn create(&self, by: Principal, plan: NewPlan) -> Result<Plan, ServiceError> {
        admin_only(by)?;
        Ok(repo(&*self.db).create(&plan, self.clock.now()).await?)
    }

    /// Every plan, oldest first (a short list by nature; capped).
    pub async fn list(&self) -> Result<Vec<Plan>, ServiceError> {
        Ok(repo(&*self.db).list().await?)
    }
}
