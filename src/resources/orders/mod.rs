//! Orders: placed against the catalog's stock (every line reserved, or the
//! order refused), then paid and shipped, or cancelled. Prices are copied
//! onto the lines when the order is placed.

pub mod http;
pub mod repo;
pub mod service;

use std::time::SystemTime;

use super::products::ProductId;
use crate::domain::money::Money;
use crate::domain::UserId;

pub use repo::{OrderRepo, SqlOrderRepo};
pub use service::OrderService;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub i64);

/// Where an order is in its life: `placed → paid → shipped`, or `placed →
/// cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [OrderStatus::Placed, OrderStatus::Paid, OrderStatus::Shipped, OrderStatus::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether the lifecycle allows going from this state to `to`.
    pub fn can_become(self, to: OrderStatus) -> bool {
        matches!(
            (self, to),
            (OrderStatus::Placed, OrderStatus::Paid)
                | (OrderStatus::Paid, OrderStatus::Shipped)
                | (OrderStatus::Placed, OrderStatus::Cancelled)
        )
    }
}

/// What a customer asks for: a product and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderItem {
    pub product: ProductId,
    pub quantity: i64,
}

/// Most lines in one order, and most units in one line.
pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub product: ProductId,
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    /// The product's price when the order was placed.
    pub unit_price: Money,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    pub status: OrderStatus,
    pub total: Money,
    pub lines: Vec<OrderLine>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// Which orders to list: newest first.
#[derive(Debug, Clone, Copy)]
pub struct OrderQuery {
    /// Only this user's; `None` for everyone's (administrators).
    pub user: Option<UserId>,
    /// Orders older than this one (the cursor).
    pub before: Option<OrderId>,
    pub limit: i64,
}
