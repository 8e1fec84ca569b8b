//! Subscriptions to plans: calendar periods anchored on the start date, an
//! invoice for the first period, plan changes prorated to the second (see
//! [`crate::domain::proration`]), and cancellation now (with a credit for
//! the unused time) or at the period's end.

pub mod http;
pub mod repo;
pub mod service;

use std::time::SystemTime;

use super::plans::PlanId;
use crate::domain::proration::Period;
use crate::domain::UserId;

pub use repo::{SqlSubscriptionRepo, SubscriptionRepo};
pub use service::SubscriptionService;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Active,
    Cancelled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(SubscriptionStatus::Active),
            "cancelled" => Some(SubscriptionStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub user: UserId,
    pub plan: PlanId,
    pub status: SubscriptionStatus,
    /// The current period, `[start, end)`.
    pub period: Period,
    /// Where its periods are counted from (`domain::time::next_period_end`):
    /// the first period's start, or the start of the period a change of
    /// interval began.
    pub anchor: SystemTime,
    /// Ends when the period does, without renewing.
    pub cancel_at_period_end: bool,
    pub cancelled_at: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}
