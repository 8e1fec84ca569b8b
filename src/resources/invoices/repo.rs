//! Invoices, stored: one implementation for every backend. [`InvoiceRepo::issue`]
//! must run inside a transaction: the number it takes is only gap-free if
//! the counter's increment commits or rolls back with the invoice.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Invoice, InvoiceId, InvoiceLine, NewInvoice};
use crate::domain::money::{Currency, Money};
use crate::domain::proration::LineKind;
use crate::domain::time::year_of;
use crate::domain::UserId;
use crate::params;
use crate::repo::sql::{self, Row, SqlRef, Value};
use crate::repo::RepoError;

#[async_trait(?Send)]
pub trait InvoiceRepo {
    /// Numbers and stores an invoice (in the caller's transaction).
    async fn issue(&self, invoice: &NewInvoice, total: Money, now: SystemTime) -> Result<Invoice, RepoError>;
    async fn find(&self, id: InvoiceId) -> Result<Option<Invoice>, RepoError>;
    /// A user's invoices, newest first.
    async fn list(
        &self,
        user: UserId,
        before: Option<InvoiceId>,
        limit: i64,
    ) -> Result<Vec<Invoice>, RepoError>;
}

pub struct SqlInvoiceRepo {
    sql: SqlRef,
}

impl SqlInvoiceRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }

    async fn with_lines(&self, rows: Vec<Row>) -> Result<Vec<Invoice>, RepoError> {
        let mut invoices: Vec<Invoice> = rows.iter().map(invoice).collect::<Result<_, _>>()?;
        if invoices.is_empty() {
            return Ok(invoices);
        }
        let marks = vec!["?"; invoices.len()].join(", ");
        let params: Vec<Value> = invoices.iter().map(|i| Value::Int(i.id.0)).collect();
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT invoice_id, kind, description, amount, period_start, period_end FROM invoice_lines \
                     WHERE invoice_id IN ({marks}) ORDER BY invoice_id, id"
                ),
                &params,
            )
            .await?;
        let mut lines: HashMap<i64, Vec<InvoiceLine>> = HashMap::new();
        let currencies: HashMap<i64, Currency> =
            invoices.iter().map(|i| (i.id.0, i.total.currency)).collect();
        for row in &rows {
            let id = row.int(0)?;
            let currency = *currencies.get(&id).ok_or_else(|| stored("a line of another invoice"))?;
            let kind = match row.text(1)?.as_str() {
                "charge" => LineKind::Charge,
                "credit" => LineKind::Credit,
                other => return Err(stored(format!("line kind {other:?}"))),
            };
            lines.entry(id).or_default().push(InvoiceLine {
                kind,
                description: row.text(2)?,
                amount: Money::new(row.int(3)?, currency),
                period_start: row.time(4)?,
                period_end: row.time(5)?,
            });
        }
        for invoice in &mut invoices {
            invoice.lines = lines.remove(&invoice.id.0).unwrap_or_default();
        }
        Ok(invoices)
    }
}

fn stored(e: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored invoice breaks a domain rule: {e}").into())
}

const COLUMNS: &str = "id, number, user_id, subscription_id, currency, total_amount, created_at";

fn invoice(row: &Row) -> Result<Invoice, RepoError> {
    Ok(Invoice {
        id: InvoiceId(row.int(0)?),
        number: row.text(1)?,
        user: UserId(row.int(2)?),
        subscription: row.opt_int(3)?,
        total: Money::new(row.int(5)?, Currency::parse(&row.text(4)?).map_err(stored)?),
        lines: Vec::new(),
        created_at: row.time(6)?,
    })
}

fn kind(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Charge => "charge",
        LineKind::Credit => "credit",
    }
}

#[async_trait(?Send)]
impl InvoiceRepo for SqlInvoiceRepo {
    async fn issue(&self, new: &NewInvoice, total: Money, now: SystemTime) -> Result<Invoice, RepoError> {
        let now = sql::from_millis(sql::millis(now));
        let year = year_of(now);
        // The counter row is locked by the increment until the transaction
        // ends: concurrent invoices of one year take numbers one at a time.
        let create = sql::insert_ignore(
            self.sql.backend(),
            "INSERT INTO invoice_counters (year, last_number) VALUES (?, 0)",
        );
        self.sql.execute(&create, params![year]).await?;
        self.sql
            .execute(
                "UPDATE invoice_counters SET last_number = last_number + 1 WHERE year = ?",
                params![year],
            )
            .await?;
        let seq = self
            .sql
            .query_one("SELECT last_number FROM invoice_counters WHERE year = ?", params![year])
            .await?
            .int(0)?;
        let number = format!("{year}-{seq:06}");
        let id = self
            .sql
            .insert(
                "INSERT INTO invoices (number, user_id, subscription_id, currency, total_amount, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![number.as_str(), new.user.0, new.subscription, new.currency.code(), total.amount, now],
            )
            .await?;
        for line in &new.lines {
            self.sql
                .insert(
                    "INSERT INTO invoice_lines (invoice_id, kind, description, amount, period_start, period_end) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                    params![id, kind(line.kind), line.description.as_str(), line.amount.amount, line.period_start, line.period_end],
                )
                .await?;
        }
        let lines = new
            .lines
            .iter()
            .map(|l| InvoiceLine {
                period_start: sql::from_millis(sql::millis(l.period_start)),
                period_end: sql::from_millis(sql::millis(l.period_end)),
                ..l.clone()
            })
            .collect();
        Ok(Invoice {
            id: InvoiceId(id),
            number,
            user: new.user,
            subscription: new.subscription,
            total,
            lines,
            created_at: now,
        })
    }

    async fn find(&self, id: InvoiceId) -> Result<Option<Invoice>, RepoError> {
        let rows =
            self.sql.query(&format!("SELECT {COLUMNS} FROM invoices WHERE id = ?"), params![id.0]).await?;
        Ok(self.with_lines(rows).await?.pop())
    }

    async fn list(
        &self,
        user: UserId,
        before: Option<InvoiceId>,
        limit: i64,
    ) -> Result<Vec<Invoice>, RepoError> {
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM invoices WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
                ),
                params![user.0, before.map_or(i64::MAX, |id| id.0), limit],
            )
            .await?;
        self.with_lines(rows).await
    }
}
