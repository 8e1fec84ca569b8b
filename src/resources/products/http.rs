//! `/v1/products` (create and change: admin; read: anyone signed in),
//! `/v1/products/{id}/stock` (adjustments, admin) and
//! `/v1/inventory/summary` (admin).

use std::rc::Rc;
use std::time::SystemTime;

use drover_worker::Request;
use garde::Validate;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{
    InventoryLine, NewProduct, ProductFields, ProductId, ProductName, ProductPatch, ProductQuery,
    ProductView, Sku, StockAdjustment, MAX_PRICE, MAX_UNITS,
};
use crate::domain::money::{Currency, Money};
use crate::domain::Invalid;
use crate::http::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::resources::{cursor, DEFAULT_PAGE, MAX_PAGE};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/products", Method::POST, create);
    table.add("/v1/products", Method::GET, list);
    table.add("/v1/products/{id}", Method::GET, get);
    table.add("/v1/products/{id}", Method::PATCH, update);
    table.add("/v1/products/{id}/stock", Method::POST, adjust);
    table.add("/v1/inventory/summary", Method::GET, inventory);
}

/// Money as the API shows and takes it: minor units and an ISO 4217 code.
#[derive(Serialize, Deserialize, Validate, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    #[garde(range(min = 0, max = MAX_PRICE))]
    pub amount: i64,
    #[garde(skip)]
    pub currency: String,
}

impl From<Money> for MoneyBody {
    fn from(money: Money) -> Self {
        Self { amount: money.amount, currency: money.currency.code().to_owned() }
    }
}

impl MoneyBody {
    /// The domain value; errors name `{field}.currency`.
    pub fn parse(&self, field: &str) -> Result<Money, ApiError> {
        let currency = Currency::parse(&self.currency)
            .map_err(|e| ApiError::invalid(&format!("{field}.currency"), &e.issue))?;
        Ok(Money::new(self.amount, currency))
    }
}

#[derive(Serialize)]
struct StockBody {
    on_hand: i64,
    reserved: i64,
    available: i64,
}

/// A product as the API shows it; fields not asked for are left out.
#[derive(Serialize)]
struct ProductBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<MoneyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stock: Option<StockBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl From<ProductView> for ProductBody {
    fn from(view: ProductView) -> Self {
        Self {
            id: view.id.map(|id| id.0),
            sku: view.sku.map(|s| s.as_str().to_owned()),
            name: view.name.map(|n| n.as_str().to_owned()),
            price: view.price.map(MoneyBody::from),
            stock: view.stock.map(|s| StockBody {
                on_hand: s.on_hand,
                reserved: s.reserved,
                available: s.available(),
            }),
            created_at: view.created_at.map(rfc3339),
            updated_at: view.updated_at.map(rfc3339),
        }
    }
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::invalid(e.field, &e.issue)
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[garde(skip)]
    sku: String,
    #[garde(skip)]
    name: String,
    #[garde(dive)]
    price: MoneyBody,
    /// Units on hand to start with.
    #[serde(default)]
    #[garde(range(min = 0, max = MAX_UNITS))]
    stock: i64,
}

fn create(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let principal = crate::ready_or_return!(extract::principal(state, &request));
    let state = state.clone();
    Reply::later(async move {
        let body: CreateBody = extract::json(request, state.max_body_bytes).await?;
        let product = NewProduct {
            sku: Sku::parse(&body.sku).map_err(invalid)?,
            name: ProductName::parse(&body.name).map_err(invalid)?,
            price: body.price.parse("price")?,
            stock: body.stock,
        };
        let created = state.products.create(principal, product).await?;
        Ok(reply::json(StatusCode::CREATED, &ProductBody::from(ProductView::from(created))))
    })
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[garde(skip)]
    sku: Option<String>,
    #[garde(skip)]
    name: Option<String>,
    #[garde(dive)]
    price: Option<MoneyBody>,
}

fn update(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let body: PatchBody = extract::json(request, state.max_body_bytes).await?;
        let patch = ProductPatch {
            sku: body.sku.as_deref().map(Sku::parse).transpose().map_err(invalid)?,
            name: body.name.as_deref().map(ProductName::parse).transpose().map_err(invalid)?,
            price: body.price.as_ref().map(|p| p.parse("price")).transpose()?,
        };
        let product = state.products.update(principal, ProductId(id), patch).await?;
        Ok(reply::json(StatusCode::OK, &ProductBody::from(ProductView::from(product))))
    })
}

fn fields(request: &Request) -> Result<ProductFields, ApiError> {
    match extract::query_param(request, "fields") {
        None => Ok(ProductFields::ALL),
        Some(list) => ProductFields::parse_list(&list).map_err(invalid),
    }
}

fn get(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let parsed =
        extract::principal(state, &request).and_then(|_| Ok((extract::id(&params)?, fields(&request)?)));
    let (id, fields) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let product = state.products.get(ProductId(id)).await?;
        let mut view = ProductView::from(product);
        for field in super::ProductField::ALL.into_iter().filter(|f| !fields.contains(*f)) {
            match field {
                super::ProductField::Id => view.id = None,
                super::ProductField::Sku => view.sku = None,
                super::ProductField::Name => view.name = None,
                super::ProductField::Price => view.price = None,
                super::ProductField::Stock => view.stock = None,
                super::ProductField::CreatedAt => view.created_at = None,
                super::ProductField::UpdatedAt => view.updated_at = None,
            }
        }
        Ok(reply::json(StatusCode::OK, &ProductBody::from(view)))
    })
}

#[derive(Serialize)]
struct PageBody {
    items: Vec<ProductBody>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request).and_then(|_| {
        let (limit, after) = extract::page(&request, DEFAULT_PAGE, MAX_PAGE)?;
        let sku =
            extract::query_param(&request, "sku").map(|s| Sku::parse(&s)).transpose().map_err(invalid)?;
        Ok(ProductQuery { after: after.map(ProductId), limit, sku, fields: fields(&request)? })
    });
    let query = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let page = state.products.list(query).await?;
        let body = PageBody {
            items: page.items.into_iter().map(ProductBody::from).collect(),
            next: page.next.map(|id| cursor(id.0)),
        };
        Ok(reply::json(StatusCode::OK, &body))
    })
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    /// Units added (positive) or removed (negative).
    #[garde(range(min = -MAX_UNITS, max = MAX_UNITS), custom(nonzero))]
    delta: i64,
    #[garde(length(chars, min = 1, max = 200))]
    reason: String,
}

fn nonzero(value: &i64, _: &()) -> garde::Result {
    if *value == 0 {
        return Err(garde::Error::new("must not be zero"));
    }
    Ok(())
}

fn adjust(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let body: AdjustBody = extract::json(request, state.max_body_bytes).await?;
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(ApiError::invalid("reason", "must not be blank"));
        }
        let adjustment = StockAdjustment { delta: body.delta, reason: reason.to_owned() };
        let product = state.products.adjust(principal, ProductId(id), adjustment).await?;
        Ok(reply::json(StatusCode::OK, &ProductBody::from(ProductView::from(product))))
    })
}

#[derive(Serialize)]
struct InventoryLineBody {
    currency: String,
    products: i64,
    on_hand: i64,
    reserved: i64,
    available: i64,
    stock_value: MoneyBody,
    /// Units ordered so far (counted by a job from order.placed events).
    units_ordered: i64,
}

#[derive(Serialize)]
struct InventoryBody {
    currencies: Vec<InventoryLineBody>,
}

fn inventory(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let principal = crate::ready_or_return!(extract::principal(state, &request));
    let state = state.clone();
    Reply::later(async move {
        let lines = state.products.inventory(principal).await?;
        let currencies = lines
            .into_iter()
            .map(|l: InventoryLine| InventoryLineBody {
                available: l.on_hand - l.reserved,
                stock_value: MoneyBody { amount: l.stock_value, currency: l.currency.clone() },
                currency: l.currency,
                products: l.products,
                on_hand: l.on_hand,
                reserved: l.reserved,
                units_ordered: l.units_ordered,
            })
            .collect();
        Ok(reply::json(StatusCode::OK, &InventoryBody { currencies }))
    })
}
