//! Orders, stored: one implementation for every backend, on the portable
//! statement layer. Status changes are conditional (`WHERE status = ?`), so
//! two concurrent changes of one order cannot both apply.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Order, OrderId, OrderLine, OrderQuery, OrderStatus};
use crate::domain::money::{Currency, Money};
use crate::domain::UserId;
use crate::params;
use crate::repo::sql::{Row, SqlRef, Value};
use crate::repo::RepoError;
use crate::resources::products::ProductId;

#[async_trait(?Send)]
pub trait OrderRepo {
    /// Stores a new order and its lines; the id it got.
    async fn insert(&self, order: &Order) -> Result<OrderId, RepoError>;
    async fn find(&self, id: OrderId) -> Result<Option<Order>, RepoError>;
    /// A page, newest first, lines included.
    async fn list(&self, query: &OrderQuery) -> Result<Vec<Order>, RepoError>;
    /// Moves the order from `from` to `to`; `false` if it was not in `from`
    /// (any more).
    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: SystemTime,
    ) -> Result<bool, RepoError>;
    /// Up to `limit` orders still `placed` that were created before
    /// `before`, oldest first.
    async fn placed_before(&self, before: SystemTime, limit: i64) -> Result<Vec<OrderId>, RepoError>;
}

/// [`OrderRepo`] on any backend.
pub struct SqlOrderRepo {
    sql: SqlRef,
}

impl SqlOrderRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }

    /// The lines of `orders`, by order id, in one query.
    async fn lines(&self, orders: &[i64]) -> Result<HashMap<i64, Vec<OrderLine>>, RepoError> {
        let mut by_order: HashMap<i64, Vec<OrderLine>> = HashMap::new();
        if orders.is_empty() {
            return Ok(by_order);
        }
        let marks = vec!["?"; orders.len()].join(", ");
        let params: Vec<Value> = orders.iter().map(|id| Value::Int(*id)).collect();
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT l.order_id, l.product_id, l.sku, l.name, l.quantity, l.unit_amount, l.line_amount, o.currency \
                     FROM order_lines l JOIN orders o ON o.id = l.order_id \
                     WHERE l.order_id IN ({marks}) ORDER BY l.order_id, l.id"
                ),
                &params,
            )
            .await?;
        for row in &rows {
            let currency = currency(&row.text(7)?)?;
            by_order.entry(row.int(0)?).or_default().push(OrderLine {
                product: ProductId(row.int(1)?),
                sku: row.text(2)?,
                name: row.text(3)?,
                quantity: row.int(4)?,
                unit_price: Money::new(row.int(5)?, currency),
                total: Money::new(row.int(6)?, currency),
            });
        }
        Ok(by_order)
    }

    async fn with_lines(&self, rows: Vec<Row>) -> Result<Vec<Order>, RepoError> {
        let mut orders: Vec<Order> = rows.iter().map(order).collect::<Result<_, _>>()?;
        let ids: Vec<i64> = orders.iter().map(|o| o.id.0).collect();
        let mut lines = self.lines(&ids).await?;
        for order in &mut orders {
            order.lines = lines.remove(&order.id.0).unwrap_or_default();
        }
        Ok(orders)
    }
}

fn stored(issue: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored order breaks a domain rule: {issue}").into())
}

fn currency(code: &str) -> Result<Currency, RepoError> {
    Currency::parse(code).map_err(stored)
}

const COLUMNS: &str = "id, user_id, status, currency, total_amount, created_at, updated_at";

/// An order row, without its lines.
fn order(row: &Row) -> Result<Order, RepoError> {
    let status = row.text(2)?;
    Ok(Order {
        id: OrderId(row.int(0)?),
        user: UserId(row.int(1)?),
        status: OrderStatus::parse(&status).ok_or_else(|| stored(format!("status {status:?}")))?,
        total: Money::new(row.int(4)?, currency(&row.text(3)?)?),
        lines: Vec::new(),
        created_at: row.time(5)?,
        updated_at: row.time(6)?,
    })
}

#[async_trait(?Send)]
impl OrderRepo for SqlOrderRepo {
    async fn insert(&self, order: &Order) -> Result<OrderId, RepoError> {
        let id = self
            .sql
            .insert(
                "INSERT INTO orders (user_id, status, currency, total_amount, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    order.user.0,
                    order.status.as_str(),
                    order.total.currency.code(),
                    order.total.amount,
                    order.created_at,
                    order.updated_at
                ],
            )
            .await?;
        for line in &order.lines {
            self.sql
                .insert(
                    "INSERT INTO order_lines (order_id, product_id, sku, name, quantity, unit_amount, line_amount) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    params![
                        id,
                        line.product.0,
                        line.sku.as_str(),
                        line.name.as_str(),
                        line.quantity,
                        line.unit_price.amount,
                        line.total.amount
                    ],
                )
                .await?;
        }
        Ok(OrderId(id))
    }

    async fn find(&self, id: OrderId) -> Result<Option<Order>, RepoError> {
        let rows =
            self.sql.query(&format!("SELECT {COLUMNS} FROM orders WHERE id = ?"), params![id.0]).await?;
        Ok(self.with_lines(rows).await?.pop())
    }

    async fn placed_before(&self, before: SystemTime, limit: i64) -> Result<Vec<OrderId>, RepoError> {
        let rows = self
            .sql
            .query(
                "SELECT id FROM orders WHERE status = 'placed' AND created_at < ? ORDER BY id LIMIT ?",
                crate::params![before, limit],
            )
            .await?;
        rows.iter().map(|row| row.int(0).map(OrderId)).collect()
    }

    async fn list(&self, query: &OrderQuery) -> Result<Vec<Order>, RepoError> {
        let mut sql = format!("SELECT {COLUMNS} FROM orders WHERE id < ?");
        let mut params = vec![Value::Int(query.before.map_or(i64::MAX, |id| id.0))];
        if let Some(user) = query.user {
            sql.push_str(" AND user_id = ?");
            params.push(Value::Int(user.0));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        params.push(Value::Int(query.limit));
        let rows = self.sql.query(&sql, &params).await?;
        self.with_lines(rows).await
    }

    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: SystemTime,
    ) -> Result<bool, RepoError> {
        let changed = self
            .sql
            .execute(
                "UPDATE orders SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
                params![to.as_str(), now, id.0, from.as_str()],
            )
            .await?;
        Ok(changed == 1)
    }
}
