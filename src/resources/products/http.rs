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
use crate::http::openapi::errors;
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

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, get, update, adjust, inventory))]
pub struct Api;

/// `?fields=` of the product routes, as the document describes it.
const FIELDS: &str = "A comma-separated subset of id, sku, name, price, stock, created_at, updated_at: \
                      only those are returned. All when absent.";

/// Money as the API shows it: minor units and an ISO 4217 code. Totals,
/// stock values and credits are not bounded as prices are.
#[derive(Serialize, Debug, Clone, utoipa::ToSchema)]
#[schema(as = Money)]
pub struct MoneyBody {
    /// In the currency's minor unit (cents for EUR); negative for a credit.
    #[schema(example = 1999)]
    pub amount: i64,
    /// An ISO 4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
}

impl From<Money> for MoneyBody {
    fn from(money: Money) -> Self {
        Self { amount: money.amount, currency: money.currency.code().to_owned() }
    }
}

/// A price as requests send it: minor units from 0 to `MAX_PRICE`, in a
/// currency drover knows.
#[derive(Deserialize, Validate, Debug, Clone, utoipa::ToSchema)]
#[schema(as = Price)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// In the currency's minor unit (cents for EUR).
    #[serde(deserialize_with = "extract::whole_number")]
    #[garde(range(min = 0, max = MAX_PRICE))]
    #[schema(minimum = 0, maximum = 1000000000, example = 1999)]
    pub amount: i64,
    #[garde(skip)]
    #[schema(schema_with = currency_codes)]
    pub currency: String,
}

/// `currency` in the document: the codes `Currency::parse` accepts.
fn currency_codes() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(crate::domain::money::currency_codes()))
        .description(Some("An ISO 4217 code that drover knows."))
        .examples(["EUR"])
        .build()
}

impl PriceBody {
    /// The domain value; errors name `{field}.currency`.
    pub fn parse(&self, field: &str) -> Result<Money, ApiError> {
        let currency = Currency::parse(&self.currency)
            .map_err(|e| ApiError::invalid(&format!("{field}.currency"), &e.issue))?;
        Ok(Money::new(self.amount, currency))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Stock)]
struct StockBody {
    on_hand: i64,
    reserved: i64,
    available: i64,
}

/// A product as the API shows it; fields not asked for are left out.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Product)]
struct ProductBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    sku: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    price: Option<MoneyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    stock: Option<StockBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
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

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = NewProduct)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[garde(skip)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "TEA-001")]
    sku: String,
    /// Trimmed.
    #[garde(skip)]
    #[schema(min_length = 1, max_length = 200, pattern = r"[^\s\u0085]")]
    name: String,
    #[garde(dive)]
    price: PriceBody,
    /// Units on hand to start with.
    #[serde(default, deserialize_with = "extract::whole_number")]
    #[garde(range(min = 0, max = MAX_UNITS))]
    #[schema(minimum = 0, maximum = 1000000000)]
    stock: i64,
}

/// Creates a product (administrators only).
#[utoipa::path(
    post,
    path = "/v1/products",
    tag = "products",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The new product.", body = ProductBody),
        errors::JsonBody,
        errors::AdminOnly,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = ProductPatch)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(skip)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", nullable = false)]
    sku: Option<String>,
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(skip)]
    #[schema(min_length = 1, max_length = 200, pattern = r"[^\s\u0085]", nullable = false)]
    name: Option<String>,
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(dive)]
    #[schema(nullable = false)]
    price: Option<PriceBody>,
}

/// Changes a product's sku, name or price (administrators only).
#[utoipa::path(
    patch,
    path = "/v1/products/{id}",
    tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id.")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The product, changed.", body = ProductBody),
        errors::JsonBody,
        errors::AdminOnly,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
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

/// A product.
#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    tag = "products",
    params(
        ("id" = i64, Path, minimum = 1, description = "The product's id."),
        ("fields" = Option<String>, Query, description = FIELDS, nullable = false,
         pattern = "^(id|sku|name|price|stock|created_at|updated_at)(,(id|sku|name|price|stock|created_at|updated_at))*$"),
    ),
    responses(
        (status = 200, description = "The product.", body = ProductBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ProductPage)]
struct PageBody {
    items: Vec<ProductBody>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

/// Products by id, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "products",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, nullable = false,
         description = "Products per page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^c[0-9a-f]{1,15}$",
         description = "The `next` of the previous page."),
        ("sku" = Option<String>, Query, nullable = false, pattern = "^[A-Za-z0-9._-]{1,64}$",
         description = "Only the product with this sku."),
        ("fields" = Option<String>, Query, description = FIELDS, nullable = false,
         pattern = "^(id|sku|name|price|stock|created_at|updated_at)(,(id|sku|name|price|stock|created_at|updated_at))*$"),
    ),
    responses(
        (status = 200, description = "A page of products.", body = PageBody),
        errors::Invalid,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = StockAdjustment)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    /// Units added (positive) or removed (negative); not zero.
    #[serde(deserialize_with = "extract::whole_number")]
    #[garde(range(min = -MAX_UNITS, max = MAX_UNITS), custom(nonzero))]
    #[schema(schema_with = nonzero_units)]
    delta: i64,
    /// Why; not blank.
    #[garde(length(chars, min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200, pattern = r"[^\s\u0085]")]
    reason: String,
}

/// `delta` in the document: from -MAX_UNITS to MAX_UNITS, but not zero.
fn nonzero_units() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .minimum(Some(min as f64))
            .maximum(Some(max as f64))
    };
    OneOfBuilder::new()
        .item(range(1, MAX_UNITS))
        .item(range(-MAX_UNITS, -1))
        .description(Some("Units added (positive) or removed (negative); not zero."))
        .build()
        .into()
}

fn nonzero(value: &i64, _: &()) -> garde::Result {
    if *value == 0 {
        return Err(garde::Error::new("must not be zero"));
    }
    Ok(())
}

/// Adds or removes stock (administrators only).
#[utoipa::path(
    post,
    path = "/v1/products/{id}/stock",
    tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "The product's id.")),
    request_body = AdjustBody,
    responses(
        (status = 200, description = "The product, with its new stock.", body = ProductBody),
        errors::JsonBody,
        errors::AdminOnly,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = InventoryLine)]
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

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Inventory)]
struct InventoryBody {
    currencies: Vec<InventoryLineBody>,
}

/// Stock and its value, per currency (administrators only).
#[utoipa::path(
    get,
    path = "/v1/inventory/summary",
    tag = "products",
    responses(
        (status = 200, description = "The inventory summary.", body = InventoryBody),
        errors::AdminOnly,
    ),
    security(("bearerAuth" = []))
)]
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
