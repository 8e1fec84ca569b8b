//! The rules of subscriptions: who may see and change one, the first
//! period and its invoice, prorated plan changes and cancellations, each
//! with its invoice in the same transaction.

use std::rc::Rc;
use std::time::SystemTime;

use super::{SqlSubscriptionRepo, Subscription, SubscriptionId, SubscriptionRepo, SubscriptionStatus};
use crate::domain::proration::{
    credit_for_unused, prorate_change, LineKind, Period, Proration, ProrationError, ProrationLine,
};
use crate::domain::time::{next_period_end, period_end, Clock};
use crate::domain::{Invalid, Role};
use crate::repo::sql;
use crate::repo::{Database, Repos};
use crate::resources::events::{self, Event};
use crate::resources::invoices::{self, Invoice, InvoiceLine, InvoiceRepo, NewInvoice};
use crate::resources::plans::{self, Plan, PlanCode, PlanRepo};
use crate::service::{Principal, ServiceError};

fn subscriptions(repos: &dyn Repos) -> SqlSubscriptionRepo {
    SqlSubscriptionRepo::new(repos.sql())
}

/// A subscription with its plan.
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub subscription: Subscription,
    pub plan: Plan,
}

/// What one `subscriptions.renew` run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renewals {
    /// Periods renewed, each with its invoice.
    pub renewed: u64,
    /// Subscriptions that ended with their period (cancelled at its end).
    pub ended: u64,
}

/// Subscriptions taken per query by [`SubscriptionService::renew_due`].
const RENEW_BATCH: i64 = 100;

/// What a plan change would cost: the lines, their total, and the period
/// after it.
#[derive(Debug, Clone)]
pub struct ChangePreview {
    pub plan: Plan,
    pub proration: Proration,
}

#[derive(Clone)]
pub struct SubscriptionService {
    db: Rc<Database>,
    clock: Rc<dyn Clock>,
}

fn proration_error(error: ProrationError) -> ServiceError {
    match error {
        ProrationError::OutsidePeriod => {
            Invalid::new("at", "must be within the subscription's current period").into()
        }
        ProrationError::Money(crate::domain::money::MoneyError::MixedCurrencies(a, b)) => {
            ServiceError::MixedCurrencies(format!("a plan in {a} cannot be changed for one in {b}"))
        }
        ProrationError::Money(other) => Invalid::new("plan", other.to_string()).into(),
    }
}

fn line(plan: &Plan, line: &ProrationLine) -> InvoiceLine {
    let description = match line.kind {
        LineKind::Charge => format!("{} ({})", plan.name, plan.code.as_str()),
        LineKind::Credit => format!("unused time on {} ({})", plan.name, plan.code.as_str()),
    };
    InvoiceLine {
        kind: line.kind,
        // Within the column (300): a plan's name is at most 200 and its
        // code 64 characters.
        description: description.chars().take(300).collect(),
        amount: line.amount,
        period_start: line.from,
        period_end: line.to,
    }
}

/// Owners and admins see a subscription; to anyone else it does not exist.
fn visible(viewer: Principal, subscription: &Subscription) -> Result<(), ServiceError> {
    if subscription.user == viewer.user || viewer.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::NotFound)
    }
}

/// Issues an invoice for `lines` in the caller's transaction.
async fn invoice(
    repos: &dyn Repos,
    subscription: &Subscription,
    plan: &Plan,
    lines: Vec<InvoiceLine>,
    now: SystemTime,
) -> Result<Invoice, ServiceError> {
    let new = NewInvoice {
        user: subscription.user,
        subscription: Some(subscription.id.0),
        currency: plan.terms.price.currency,
        lines,
    };
    let total = new.total()?;
    let issued = invoices::repo(repos).issue(&new, total, now).await?;
    let created = Event::InvoiceCreated {
        invoice_id: issued.id.0,
        user_id: issued.user.0,
        number: issued.number.clone(),
        total_amount: issued.total.amount,
        currency: issued.total.currency.code().to_owned(),
    };
    events::record(&*repos.sql(), &created, now).await?;
    changed(repos, subscription, plan, now).await?;
    Ok(issued)
}

/// Records `subscription.changed` in the transaction of the change.
async fn changed(
    repos: &dyn Repos,
    subscription: &Subscription,
    plan: &Plan,
    now: SystemTime,
) -> Result<(), ServiceError> {
    let event = Event::SubscriptionChanged {
        subscription_id: subscription.id.0,
        user_id: subscription.user.0,
        plan: plan.code.as_str().to_owned(),
        status: subscription.status.as_str().to_owned(),
    };
    Ok(events::record(&*repos.sql(), &event, now).await?)
}

impl SubscriptionService {
    pub fn new(db: Rc<Database>, clock: Rc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// "Now", as stored: to the millisecond.
    fn now(&self) -> SystemTime {
        sql::from_millis(sql::millis(self.clock.now()))
    }

    /// Subscribes `by` to the plan `code`: the first period starts now,
    /// and its invoice charges the plan in full.
    pub async fn subscribe(
        &self,
        by: Principal,
        code: &PlanCode,
    ) -> Result<(Subscribed, Invoice), ServiceError> {
        let now = self.now();
        self.db
            .transaction(|repos| {
                Box::pin(async move {
                    let plan = plans::repo(&*repos)
                        .find_by_code(code)
                        .await?
                        .ok_or_else(|| Invalid::new("plan", "no such plan"))?;
                    let period = Period { start: now, end: period_end(now, plan.terms.interval, 1) };
                    let mut subscription = Subscription {
                        id: SubscriptionId(0),
                        user: by.user,
                        plan: plan.id,
                        status: SubscriptionStatus::Active,
                        period,
                        cancel_at_period_end: false,
                        cancelled_at: None,
                        created_at: now,
                        updated_at: now,
                        anchor: now,
                    };
                    subscription.id = subscriptions(&*repos).insert(&subscription).await?;
                    let charge = ProrationLine {
                        kind: LineKind::Charge,
                        amount: plan.terms.price,
                        from: period.start,
                        to: period.end,
                    };
                    let first =
                        invoice(&*repos, &subscription, &plan, vec![line(&plan, &charge)], now).await?;
                    Ok((Subscribed { subscription, plan }, first))
                })
            })
            .await
    }

    pub async fn get(&self, viewer: Principal, id: SubscriptionId) -> Result<Subscribed, ServiceError> {
        let subscription = subscriptions(&*self.db).find(id).await?.ok_or(ServiceError::NotFound)?;
        visible(viewer, &subscription)?;
        let plan = plans::repo(&*self.db)
            .find(subscription.plan)
            .await?
            .ok_or_else(|| ServiceError::Internal("a subscription's plan is gone".into()))?;
        Ok(Subscribed { subscription, plan })
    }

    /// What changing to plan `code` at `at` (default now) would cost,
    /// without changing anything.
    pub async fn preview(
        &self,
        viewer: Principal,
        id: SubscriptionId,
        code: &PlanCode,
        at: Option<SystemTime>,
    ) -> Result<ChangePreview, ServiceError> {
        let current = self.get(viewer, id).await?;
        let plan = plans::repo(&*self.db)
            .find_by_code(code)
            .await?
            .ok_or_else(|| Invalid::new("plan", "no such plan"))?;
        let at = at.unwrap_or_else(|| self.now());
        let proration = Self::prorate(&current, &plan, at)?;
        Ok(ChangePreview { plan, proration })
    }

    fn prorate(current: &Subscribed, plan: &Plan, at: SystemTime) -> Result<Proration, ServiceError> {
        if current.subscription.status == SubscriptionStatus::Cancelled {
            return Err(ServiceError::InvalidTransition { from: "cancelled", to: "changed" });
        }
        if plan.id == current.plan.id {
            return Err(Invalid::new("plan", "is the subscription's current plan").into());
        }
        prorate_change(current.plan.terms, plan.terms, current.subscription.period, at)
            .map_err(proration_error)
    }

    /// Changes to plan `code` now: the period stays (or, for a change of
    /// interval, a new one starts now), and an invoice credits the unused
    /// part of the old plan and charges the new one.
    pub async fn change(
        &self,
        by: Principal,
        id: SubscriptionId,
        code: &PlanCode,
    ) -> Result<(Subscribed, Invoice), ServiceError> {
        let now = self.now();
        self.db
            .transaction(|repos| {
                Box::pin(async move {
                    let old = subscriptions(&*repos).find(id).await?.ok_or(ServiceError::NotFound)?;
                    visible(by, &old)?;
                    let plans_repo = plans::repo(&*repos);
                    let current_plan = plans_repo
                        .find(old.plan)
                        .await?
                        .ok_or_else(|| ServiceError::Internal("a subscription's plan is gone".into()))?;
                    let plan = plans_repo
                        .find_by_code(code)
                        .await?
                        .ok_or_else(|| Invalid::new("plan", "no such plan"))?;
                    let current = Subscribed { subscription: old.clone(), plan: current_plan.clone() };
                    let proration = Self::prorate(&current, &plan, now)?;
                    // A change of interval starts a new series of periods.
                    let anchor =
                        if proration.period == old.period { old.anchor } else { proration.period.start };
                    let new = Subscription {
                        plan: plan.id,
                        period: proration.period,
                        anchor,
                        updated_at: now,
                        ..old.clone()
                    };
                    subscriptions(&*repos).replace(&old, &new).await?;
                    let lines = proration
                        .lines
                        .iter()
                        .map(|l| match l.kind {
                            LineKind::Credit => line(&current_plan, l),
                            LineKind::Charge => line(&plan, l),
                        })
                        .collect();
                    let bill = invoice(&*repos, &new, &plan, lines, now).await?;
                    Ok((Subscribed { subscription: new, plan }, bill))
                })
            })
            .await
    }

    /// Cancels at the end of the period (nothing is invoiced), or now, with
    /// an invoice crediting the unused time.
    pub async fn cancel(
        &self,
        by: Principal,
        id: SubscriptionId,
        at_period_end: bool,
    ) -> Result<(Subscribed, Option<Invoice>), ServiceError> {
        let now = self.now();
        self.db
            .transaction(|repos| {
                Box::pin(async move {
                    let old = subscriptions(&*repos).find(id).await?.ok_or(ServiceError::NotFound)?;
                    visible(by, &old)?;
                    if old.status == SubscriptionStatus::Cancelled {
                        return Err(ServiceError::InvalidTransition { from: "cancelled", to: "cancelled" });
                    }
                    let plan = plans::repo(&*repos)
                        .find(old.plan)
                        .await?
                        .ok_or_else(|| ServiceError::Internal("a subscription's plan is gone".into()))?;
                    if at_period_end {
                        if old.cancel_at_period_end {
                            // Already so: nothing to change.
                            return Ok((Subscribed { subscription: old, plan }, None));
                        }
                        let new = Subscription { cancel_at_period_end: true, updated_at: now, ..old.clone() };
                        subscriptions(&*repos).replace(&old, &new).await?;
                        changed(&*repos, &new, &plan, now).await?;
                        return Ok((Subscribed { subscription: new, plan }, None));
                    }
                    let credit = credit_for_unused(plan.terms, old.period, now).map_err(proration_error)?;
                    let new = Subscription {
                        status: SubscriptionStatus::Cancelled,
                        cancelled_at: Some(now),
                        updated_at: now,
                        ..old.clone()
                    };
                    subscriptions(&*repos).replace(&old, &new).await?;
                    let bill = invoice(&*repos, &new, &plan, vec![line(&plan, &credit)], now).await?;
                    Ok((Subscribed { subscription: new, plan }, Some(bill)))
                })
            })
            .await
    }

    /// `subscriptions.renew`: every active subscription whose period has
    /// ended is renewed for the next period (counted from its anchor) with
    /// an invoice charging its plan, or, if it was cancelled at period end,
    /// ends. One that is several periods behind gets a period and an
    /// invoice for each. Each subscription in its own transaction; one
    /// changed meanwhile (a request won) is left for the next run. At most
    /// `max` changes per run.
    pub async fn renew_due(&self, max: u64) -> Result<Renewals, ServiceError> {
        let now = self.now();
        let mut done = Renewals::default();
        while done.renewed + done.ended < max {
            let due = subscriptions(&*self.db).due(now, RENEW_BATCH).await?;
            if due.is_empty() {
                break;
            }
            let mut progressed = false;
            for subscription in due {
                match self.renew(subscription.id, now).await {
                    Ok(Some(true)) => done.renewed += 1,
                    Ok(Some(false)) => done.ended += 1,
                    Ok(None) | Err(ServiceError::Contention(_)) => continue,
                    // The database is down: the next tick tries again.
                    Err(error @ ServiceError::Unavailable(_)) => return Err(error),
                    // This one cannot be renewed (its plan is gone, say):
                    // the others still are.
                    Err(error) => {
                        tracing::error!(subscription = subscription.id.0, %error, "cannot renew a subscription; skipped");
                        continue;
                    }
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(done)
    }

    /// Renews (`Some(true)`) or ends (`Some(false)`) one subscription whose
    /// period ended by `now`; `None` if it is not due after all.
    async fn renew(&self, id: SubscriptionId, now: SystemTime) -> Result<Option<bool>, ServiceError> {
        self.db
            .transaction(|repos| {
                Box::pin(async move {
                    let Some(old) = subscriptions(&*repos).find(id).await? else { return Ok(None) };
                    if old.status != SubscriptionStatus::Active || old.period.end > now {
                        return Ok(None);
                    }
                    let plan = plans::repo(&*repos)
                        .find(old.plan)
                        .await?
                        .ok_or_else(|| ServiceError::Internal("a subscription's plan is gone".into()))?;
                    if old.cancel_at_period_end {
                        let new = Subscription {
                            status: SubscriptionStatus::Cancelled,
                            cancelled_at: Some(old.period.end),
                            updated_at: now,
                            ..old.clone()
                        };
                        subscriptions(&*repos).replace(&old, &new).await?;
                        changed(&*repos, &new, &plan, now).await?;
                        return Ok(Some(false));
                    }
                    let end = next_period_end(old.anchor, plan.terms.interval, old.period.end).ok_or_else(
                        || ServiceError::Internal(format!("subscription {} has no next period", id.0).into()),
                    )?;
                    let period = Period { start: old.period.end, end };
                    let new = Subscription { period, updated_at: now, ..old.clone() };
                    subscriptions(&*repos).replace(&old, &new).await?;
                    let charge = ProrationLine {
                        kind: LineKind::Charge,
                        amount: plan.terms.price,
                        from: period.start,
                        to: period.end,
                    };
                    invoice(&*repos, &new, &plan, vec![line(&plan, &charge)], now).await?;
                    Ok(Some(true))
                })
            })
            .await
    }
}
