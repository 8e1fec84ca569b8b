//! Products: the catalog and its stock. `on_hand` units are in the
//! warehouse, `reserved` of them are held by placed orders, and `available`
//! (`on_hand - reserved`) can still be sold; no write ever makes it
//! negative.

pub mod http;
pub mod repo;
pub mod service;

use std::time::SystemTime;

use crate::domain::money::Money;
use crate::domain::Invalid;

pub use repo::{ProductRepo, SqlProductRepo};
pub use service::ProductService;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductId(pub i64);

/// A stock-keeping unit: 1–64 letters, digits, `.`, `_` or `-`, compared
/// exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new("sku", "must be 1-64 letters, digits, '.', '_' or '-'"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's name: 1–200 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if (1..=200).contains(&trimmed.chars().count()) {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(Invalid::new("name", "must be 1-200 characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Most units of one product, and the highest price in minor units: their
/// product (a stock value) stays within an `i64`.
pub const MAX_UNITS: i64 = 1_000_000_000;
pub const MAX_PRICE: i64 = 1_000_000_000;

/// Stock figures of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub sku: Sku,
    pub name: ProductName,
    pub price: Money,
    pub stock: Stock,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// What reading a product may leave out (`?fields=`): `None` is a field
/// not asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductView {
    pub id: Option<ProductId>,
    pub sku: Option<Sku>,
    pub name: Option<ProductName>,
    pub price: Option<Money>,
    pub stock: Option<Stock>,
    pub created_at: Option<SystemTime>,
    pub updated_at: Option<SystemTime>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            id: Some(p.id),
            sku: Some(p.sku),
            name: Some(p.name),
            price: Some(p.price),
            stock: Some(p.stock),
            created_at: Some(p.created_at),
            updated_at: Some(p.updated_at),
        }
    }
}

/// A field of a product, as `?fields=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductField {
    Id,
    Sku,
    Name,
    Price,
    Stock,
    CreatedAt,
    UpdatedAt,
}

impl ProductField {
    pub const ALL: [ProductField; 7] = [
        ProductField::Id,
        ProductField::Sku,
        ProductField::Name,
        ProductField::Price,
        ProductField::Stock,
        ProductField::CreatedAt,
        ProductField::UpdatedAt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProductField::Id => "id",
            ProductField::Sku => "sku",
            ProductField::Name => "name",
            ProductField::Price => "price",
            ProductField::Stock => "stock",
            ProductField::CreatedAt => "created_at",
            ProductField::UpdatedAt => "updated_at",
        }
    }

    /// The columns it is read from.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            ProductField::Id => &["id"],
            ProductField::Sku => &["sku"],
            ProductField::Name => &["name"],
            ProductField::Price => &["price_amount", "currency"],
            ProductField::Stock => &["on_hand", "reserved"],
            ProductField::CreatedAt => &["created_at"],
            ProductField::UpdatedAt => &["updated_at"],
        }
    }
}

/// A set of product fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductFields(u8);

impl ProductFields {
    pub const ALL: ProductFields = ProductFields(0x7f);

    pub fn contains(self, field: ProductField) -> bool {
        self.0 & (1 << field as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = ProductField> {
        ProductField::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// `id,name,stock`: known names only, at least one.
    pub fn parse_list(list: &str) -> Result<Self, Invalid> {
        let mut mask = 0u8;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let field = ProductField::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                Invalid::new(
                    "fields",
                    format!(
                        "unknown field {name:?}; known: id, sku, name, price, stock, created_at, updated_at"
                    ),
                )
            })?;
            mask |= 1 << field as u8;
        }
        if mask == 0 {
            return Err(Invalid::new("fields", "must name at least one field"));
        }
        Ok(ProductFields(mask))
    }
}

/// A new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: ProductName,
    pub price: Money,
    pub stock: i64,
}

/// Changes to a product; `None` keeps a field. Stock changes go through
/// adjustments, never here.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub sku: Option<Sku>,
    pub name: Option<ProductName>,
    pub price: Option<Money>,
}

/// Which products to list.
#[derive(Debug, Clone)]
pub struct ProductQuery {
    pub after: Option<ProductId>,
    pub limit: i64,
    pub sku: Option<Sku>,
    pub fields: ProductFields,
}

/// An adjustment of stock by hand.
#[derive(Debug, Clone)]
pub struct StockAdjustment {
    /// Units added (positive) or removed (negative); never zero.
    pub delta: i64,
    pub reason: String,
}

/// Stock totals of the products priced in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryLine {
    pub currency: String,
    pub products: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand × price` summed, in minor units.
    pub stock_value: i64,
    /// Units ordered in placed orders, as the sales handler has counted
    /// them so far (a job, so a moment behind the orders).
    pub units_ordered: i64,
}
