//! Products, stored: one implementation for every backend, on the portable
//! statement layer. Stock only ever changes through conditional updates
//! (`… WHERE on_hand - reserved >= ?`), which the database applies
//! atomically per row: concurrent orders cannot oversell, whatever the
//! isolation level.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    InventoryLine, NewProduct, Product, ProductField, ProductId, ProductName, ProductPatch, ProductQuery,
    ProductView, Sku, Stock,
};
use crate::domain::money::{Currency, Money};
use crate::params;
use crate::repo::sql::{self, Row, SqlRef, Value};
use crate::repo::RepoError;

/// What a conditional stock change found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    Done,
    /// It would take `available` (or `on_hand`) below zero.
    Short,
    NoSuchProduct,
}

#[async_trait(?Send)]
pub trait ProductRepo {
    /// [`RepoError::Conflict`]`("sku")` on a taken SKU.
    async fn create(&self, product: &NewProduct, now: SystemTime) -> Result<Product, RepoError>;
    async fn find(&self, id: ProductId) -> Result<Option<Product>, RepoError>;
    /// Several products by id, in id order; missing ones are left out.
    async fn find_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepoError>;
    /// A page in id order, only the columns of `query.fields` (and `id`).
    async fn list(&self, query: &ProductQuery) -> Result<Vec<(ProductId, ProductView)>, RepoError>;
    /// `None` if no such product; [`RepoError::Conflict`]`("sku")`.
    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: SystemTime,
    ) -> Result<Option<Product>, RepoError>;
    /// Adds `delta` to `on_hand`, unless that takes it below `reserved`.
    async fn adjust(&self, id: ProductId, delta: i64, now: SystemTime) -> Result<StockChange, RepoError>;
    /// Reserves `quantity` units, if that many are available.
    async fn reserve(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError>;
    /// Returns `quantity` reserved units (an order cancelled).
    async fn release(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError>;
    /// Takes `quantity` reserved units out of the warehouse (an order
    /// shipped): `on_hand` and `reserved` both drop.
    async fn ship(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError>;
    /// Records a change of `on_hand` in the stock ledger.
    async fn record_movement(&self, movement: &Movement, now: SystemTime) -> Result<(), RepoError>;
    /// Totals per currency, by one aggregate query.
    async fn inventory(&self) -> Result<Vec<InventoryLine>, RepoError>;
    /// Adds an order's `units` of `product` to its sales counters.
    async fn count_sale(&self, product: ProductId, units: i64) -> Result<(), RepoError>;
    /// The sales counters' units, summed per currency.
    async fn units_ordered(&self) -> Result<Vec<(String, i64)>, RepoError>;
}

/// A line of the stock ledger.
#[derive(Debug, Clone)]
pub struct Movement {
    pub product: ProductId,
    pub delta: i64,
    pub reason: String,
    pub user_id: Option<i64>,
    pub order_id: Option<i64>,
}

/// [`ProductRepo`] on any backend.
pub struct SqlProductRepo {
    sql: SqlRef,
}

impl SqlProductRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }

    /// A conditional update that changed one row, or why it did not.
    async fn change(
        &self,
        statement: &str,
        params: &[Value],
        id: ProductId,
    ) -> Result<StockChange, RepoError> {
        if self.sql.execute(statement, params).await? == 1 {
            return Ok(StockChange::Done);
        }
        let exists = self.sql.query_opt("SELECT id FROM products WHERE id = ?", params![id.0]).await?;
        Ok(if exists.is_some() { StockChange::Short } else { StockChange::NoSuchProduct })
    }
}

const COLUMNS: &str = "id, sku, name, price_amount, currency, on_hand, reserved, created_at, updated_at";

fn stored(e: crate::domain::Invalid) -> RepoError {
    RepoError::Other(format!("stored product breaks a domain rule: {e}").into())
}

fn money(amount: i64, currency: &str) -> Result<Money, RepoError> {
    Ok(Money::new(amount, Currency::parse(currency).map_err(stored)?))
}

fn product(row: &Row) -> Result<Product, RepoError> {
    Ok(Product {
        id: ProductId(row.int(0)?),
        sku: Sku::parse(&row.text(1)?).map_err(stored)?,
        name: ProductName::parse(&row.text(2)?).map_err(stored)?,
        price: money(row.int(3)?, &row.text(4)?)?,
        stock: Stock { on_hand: row.int(5)?, reserved: row.int(6)? },
        created_at: row.time(7)?,
        updated_at: row.time(8)?,
    })
}

#[async_trait(?Send)]
impl ProductRepo for SqlProductRepo {
    async fn create(&self, p: &NewProduct, now: SystemTime) -> Result<Product, RepoError> {
        let id = self
            .sql
            .insert(
                "INSERT INTO products (sku, name, price_amount, currency, on_hand, reserved, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                params![p.sku.as_str(), p.name.as_str(), p.price.amount, p.price.currency.code(), p.stock, now, now],
            )
            .await
            .map_err(|e| e.unique_is("sku"))?;
        Ok(Product {
            id: ProductId(id),
            sku: p.sku.clone(),
            name: p.name.clone(),
            price: p.price,
            stock: Stock { on_hand: p.stock, reserved: 0 },
            // Read back as stored: milliseconds.
            created_at: sql::from_millis(sql::millis(now)),
            updated_at: sql::from_millis(sql::millis(now)),
        })
    }

    async fn find(&self, id: ProductId) -> Result<Option<Product>, RepoError> {
        let row = self
            .sql
            .query_opt(&format!("SELECT {COLUMNS} FROM products WHERE id = ?"), params![id.0])
            .await?;
        row.as_ref().map(product).transpose()
    }

    async fn find_many(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let params: Vec<Value> = ids.iter().map(|id| Value::Int(id.0)).collect();
        let rows = self
            .sql
            .query(&format!("SELECT {COLUMNS} FROM products WHERE id IN ({marks}) ORDER BY id"), &params)
            .await?;
        rows.iter().map(product).collect()
    }

    async fn list(&self, query: &ProductQuery) -> Result<Vec<(ProductId, ProductView)>, RepoError> {
        // Only the asked-for columns leave the database; `id` always does,
        // for the cursor.
        let mut columns = vec!["id"];
        for field in query.fields.iter().filter(|f| *f != ProductField::Id) {
            columns.extend_from_slice(field.columns());
        }
        let mut sql = format!("SELECT {} FROM products WHERE id > ?", columns.join(", "));
        let mut params = vec![Value::Int(query.after.map_or(0, |id| id.0))];
        if let Some(sku) = &query.sku {
            sql.push_str(" AND sku = ?");
            params.push(sku.as_str().into());
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        params.push(Value::Int(query.limit));
        let rows = self.sql.query(&sql, &params).await?;
        rows.iter()
            .map(|row| {
                let id = ProductId(row.int(0)?);
                let mut view = ProductView::default();
                let mut at = 1;
                for field in query.fields.iter() {
                    match field {
                        ProductField::Id => view.id = Some(id),
                        ProductField::Sku => view.sku = Some(Sku::parse(&row.text(at)?).map_err(stored)?),
                        ProductField::Name => {
                            view.name = Some(ProductName::parse(&row.text(at)?).map_err(stored)?)
                        }
                        ProductField::Price => view.price = Some(money(row.int(at)?, &row.text(at + 1)?)?),
                        ProductField::Stock => {
                            view.stock = Some(Stock { on_hand: row.int(at)?, reserved: row.int(at + 1)? })
                        }
                        ProductField::CreatedAt => view.created_at = Some(row.time(at)?),
                        ProductField::UpdatedAt => view.updated_at = Some(row.time(at)?),
                    }
                    if field != ProductField::Id {
                        at += field.columns().len();
                    }
                }
                Ok((id, view))
            })
            .collect()
    }

    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: SystemTime,
    ) -> Result<Option<Product>, RepoError> {
        // One statement for every patch: NULL leaves a column as it is.
        // The product is read back, which also tells whether it exists.
        self.sql
            .execute(
                "UPDATE products SET sku = COALESCE(?, sku), name = COALESCE(?, name), \
                 price_amount = COALESCE(?, price_amount), currency = COALESCE(?, currency), updated_at = ? \
                 WHERE id = ?",
                params![
                    patch.sku.as_ref().map(Sku::as_str),
                    patch.name.as_ref().map(ProductName::as_str),
                    patch.price.map(|p| p.amount),
                    patch.price.as_ref().map(|p| p.currency.code()),
                    now,
                    id.0
                ],
            )
            .await
            .map_err(|e| e.unique_is("sku"))?;
        self.find(id).await
    }

    async fn adjust(&self, id: ProductId, delta: i64, now: SystemTime) -> Result<StockChange, RepoError> {
        let statement = "UPDATE products SET on_hand = on_hand + ?, updated_at = ? \
                         WHERE id = ? AND on_hand + ? >= reserved AND on_hand + ? <= ?";
        self.change(statement, params![delta, now, id.0, delta, delta, super::MAX_UNITS], id).await
    }

    async fn reserve(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError> {
        let statement = "UPDATE products SET reserved = reserved + ?, updated_at = ? \
                         WHERE id = ? AND on_hand - reserved >= ?";
        self.change(statement, params![quantity, now, id.0, quantity], id).await
    }

    async fn release(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError> {
        let statement =
            "UPDATE products SET reserved = reserved - ?, updated_at = ? WHERE id = ? AND reserved >= ?";
        self.change(statement, params![quantity, now, id.0, quantity], id).await
    }

    async fn ship(&self, id: ProductId, quantity: i64, now: SystemTime) -> Result<StockChange, RepoError> {
        let statement = "UPDATE products SET on_hand = on_hand - ?, reserved = reserved - ?, updated_at = ? \
                         WHERE id = ? AND reserved >= ?";
        self.change(statement, params![quantity, quantity, now, id.0, quantity], id).await
    }

    async fn record_movement(&self, m: &Movement, now: SystemTime) -> Result<(), RepoError> {
        self.sql
            .insert(
                "INSERT INTO stock_movements (product_id, delta, reason, user_id, order_id, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![m.product.0, m.delta, m.reason.as_str(), m.user_id, m.order_id, now],
            )
            .await
            .map(drop)
    }

    async fn units_ordered(&self) -> Result<Vec<(String, i64)>, RepoError> {
        let statement = format!(
            "SELECT p.currency, {} FROM product_sales s JOIN products p ON p.id = s.product_id GROUP BY p.currency",
            sql::sum(self.sql.backend(), "s.units_ordered")
        );
        let rows = self.sql.query(&statement, &[]).await?;
        rows.iter().map(|row| Ok((row.text(0)?, row.int(1)?))).collect()
    }

    async fn count_sale(&self, product: ProductId, units: i64) -> Result<(), RepoError> {
        // The row first, so that the update below always finds one, also
        // when two consumers count the product's first sale at once.
        let insert =
            sql::insert_ignore(self.sql.backend(), "INSERT INTO product_sales (product_id) VALUES (?)");
        self.sql.execute(&insert, params![product.0]).await?;
        self.sql
            .execute(
                "UPDATE product_sales SET units_ordered = units_ordered + ?, orders = orders + 1 WHERE product_id = ?",
                params![units, product.0],
            )
            .await?;
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<InventoryLine>, RepoError> {
        let backend = self.sql.backend();
        let statement = format!(
            "SELECT currency, COUNT(*), {}, {}, {} FROM products GROUP BY currency ORDER BY currency",
            sql::sum(backend, "on_hand"),
            sql::sum(backend, "reserved"),
            sql::sum(backend, "on_hand * price_amount"),
        );
        let rows = self.sql.query(&statement, &[]).await?;
        rows.iter()
            .map(|row| {
                Ok(InventoryLine {
                    currency: row.text(0)?,
                    products: row.int(1)?,
                    on_hand: row.int(2)?,
                    reserved: row.int(3)?,
                    stock_value: row.int(4)?,
                    // Filled in by the service, uncached (see `units_ordered`).
                    units_ordered: 0,
                })
            })
            .collect()
    }
}
