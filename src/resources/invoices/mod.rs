//! Invoices: what a subscription charges and credits, numbered per year
//! without gaps (`2026-000001`): the number is taken from a per-year
//! counter inside the transaction that creates the invoice, so a rolled
//! back invoice gives its number back.

pub mod http;
pub mod repo;

use std::rc::Rc;
use std::time::SystemTime;

use crate::domain::money::{Currency, Money};
use crate::domain::proration::LineKind;
use crate::domain::{Role, UserId};
use crate::repo::{Database, Repos};
use crate::service::{Principal, ServiceError};

pub use repo::{InvoiceRepo, SqlInvoiceRepo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvoiceId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    pub kind: LineKind,
    pub description: String,
    /// Negative for a credit.
    pub amount: Money,
    pub period_start: SystemTime,
    pub period_end: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: InvoiceId,
    pub number: String,
    pub user: UserId,
    pub subscription: Option<i64>,
    pub total: Money,
    pub lines: Vec<InvoiceLine>,
    pub created_at: SystemTime,
}

/// An invoice to issue; its total is the sum of its lines.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub user: UserId,
    pub subscription: Option<i64>,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
}

impl NewInvoice {
    /// The sum of the lines; [`ServiceError::MixedCurrencies`] if they are
    /// not all in the invoice's currency.
    pub fn total(&self) -> Result<Money, ServiceError> {
        Money::sum(self.currency, self.lines.iter().map(|l| l.amount)).map_err(|e| match e {
            crate::domain::money::MoneyError::MixedCurrencies(a, b) => {
                ServiceError::MixedCurrencies(format!("an invoice in {a} cannot hold a line in {b}"))
            }
            other => ServiceError::Invalid(crate::domain::Invalid::new("price", other.to_string())),
        })
    }
}

/// The repository over the pool, or over a transaction's connection.
pub fn repo(repos: &dyn Repos) -> SqlInvoiceRepo {
    SqlInvoiceRepo::new(repos.sql())
}

#[derive(Clone)]
pub struct InvoiceService {
    db: Rc<Database>,
}

impl InvoiceService {
    pub fn new(db: Rc<Database>) -> Self {
        Self { db }
    }

    /// An invoice, as `viewer` may see it: their own, or any for an admin.
    pub async fn get(&self, viewer: Principal, id: InvoiceId) -> Result<Invoice, ServiceError> {
        let invoice = repo(&*self.db).find(id).await?.ok_or(ServiceError::NotFound)?;
        if invoice.user != viewer.user && viewer.role != Role::Admin {
            return Err(ServiceError::NotFound);
        }
        Ok(invoice)
    }

    /// The viewer's invoices, newest first.
    pub async fn list(
        &self,
        viewer: Principal,
        before: Option<InvoiceId>,
        limit: i64,
    ) -> Result<(Vec<Invoice>, Option<InvoiceId>), ServiceError> {
        let mut page = repo(&*self.db).list(viewer.user, before, limit + 1).await?;
        let more = page.len() as i64 > limit;
        page.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more { page.last().map(|i| i.id) } else { None };
        Ok((page, next))
    }
}
