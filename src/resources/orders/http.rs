//! `/v1/orders`: place (with a required `Idempotency-Key`), list, read,
//! and `pay`, `ship`, `cancel`.

use std::rc::Rc;

use bytes::Bytes;
use drover_worker::{Body, Request, Response};
use garde::Validate;
use http::{header, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::service::{check_items, Receipt};
use super::{Order, OrderId, OrderItem, OrderService};
use crate::domain::{Invalid, UserId};
use crate::http::openapi::errors;
use crate::http::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::resources::idempotency::{Claim, Fingerprint, IdempotencyKey, StoredResponse};
use crate::resources::products::http::{rfc3339, MoneyBody};
use crate::resources::products::ProductId;
use crate::resources::{cursor, DEFAULT_PAGE, MAX_PAGE};
use crate::service::{Principal, ServiceError};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/orders", Method::POST, place);
    table.add("/v1/orders", Method::GET, list);
    table.add("/v1/orders/{id}", Method::GET, get);
    table.add("/v1/orders/{id}/pay", Method::POST, pay);
    table.add("/v1/orders/{id}/ship", Method::POST, ship);
    table.add("/v1/orders/{id}/cancel", Method::POST, cancel);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(place, list, get, pay, ship, cancel))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OrderLine)]
struct LineBody {
    product_id: i64,
    sku: String,
    name: String,
    quantity: i64,
    unit_price: MoneyBody,
    total: MoneyBody,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Order)]
struct OrderBody {
    id: i64,
    user_id: i64,
    #[schema(value_type = OrderStatusBody)]
    status: &'static str,
    total: MoneyBody,
    lines: Vec<LineBody>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// An order's status, as the document spells it (the domain's status type
/// carries no schema).
#[derive(utoipa::ToSchema)]
#[schema(as = OrderStatus, rename_all = "lowercase")]
#[allow(dead_code)]
enum OrderStatusBody {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id.0,
            user_id: order.user.0,
            status: order.status.as_str(),
            total: order.total.into(),
            lines: order
                .lines
                .iter()
                .map(|l| LineBody {
                    product_id: l.product.0,
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.into(),
                    total: l.total.into(),
                })
                .collect(),
            created_at: rfc3339(order.created_at),
            updated_at: rfc3339(order.updated_at),
        }
    }
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = OrderItem)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    #[serde(deserialize_with = "extract::whole_number")]
    #[garde(range(min = 1))]
    #[schema(minimum = 1)]
    product_id: i64,
    #[serde(deserialize_with = "extract::whole_number")]
    #[garde(range(min = 1, max = super::MAX_QUANTITY))]
    #[schema(minimum = 1, maximum = 1000000)]
    quantity: i64,
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = NewOrder)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    /// One line per product.
    #[garde(length(min = 1, max = super::MAX_ITEMS), dive)]
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemBody>,
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::invalid(e.field, &e.issue)
}

/// The `Idempotency-Key` header: required on `POST /v1/orders`.
fn idempotency_key(request: &Request) -> Result<IdempotencyKey, ApiError> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::invalid(
            "idempotency-key",
            "send exactly one Idempotency-Key header (1-255 visible ASCII characters)",
        ));
    };
    let text = value.to_str().map_err(|_| ApiError::invalid("idempotency-key", "must be visible ASCII"))?;
    IdempotencyKey::parse(text).map_err(invalid)
}

/// A stored answer, sent again.
fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::new(Bytes::from(stored.body)));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn render(order: &Order) -> StoredResponse {
    // Strings and integers always serialise.
    StoredResponse { status: 201, body: serde_json::to_string(&OrderBody::from(order)).unwrap_or_default() }
}

/// Places an order; its units are reserved until it ships or is cancelled.
///
/// The same `Idempotency-Key` with the same items answers with the first
/// outcome again (`Idempotent-Replayed: true`), without placing another.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            description = "A key unique to this order, reused only to retry it.")),
    request_body = PlaceBody,
    responses(
        (status = 201, description = "The order (or the replay of its first answer).", body = OrderBody),
        errors::JsonBody,
        errors::SignedIn,
        errors::Conflict,
        errors::Unprocessable,
    ),
    security(("bearerAuth" = []))
)]
fn place(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let (principal, key) =
        match extract::principal(state, &request).and_then(|p| Ok((p, idempotency_key(&request)?))) {
            Ok(found) => found,
            Err(error) => return error.into(),
        };
    let state = state.clone();
    Reply::later(async move {
        let body: PlaceBody = extract::json(request, state.max_body_bytes).await?;
        let mut items: Vec<OrderItem> = body
            .items
            .iter()
            .map(|i| OrderItem { product: ProductId(i.product_id), quantity: i.quantity })
            .collect();
        // Refused before the key is claimed: a malformed request has no
        // outcome to remember.
        check_items(&items).map_err(invalid)?;
        items.sort_by_key(|i| i.product);
        let canonical: Vec<String> =
            items.iter().map(|i| format!("{}x{}", i.product.0, i.quantity)).collect();
        let fingerprint = Fingerprint::of(&format!("POST /v1/orders {}", canonical.join(",")));
        let token = match state.idempotency.claim(principal.user, &key, &fingerprint).await? {
            Claim::Claimed(token) => token,
            Claim::Replay(stored) => return Ok(replay(stored)),
            Claim::InProgress => return Err(ApiError::RequestInProgress),
            Claim::Reused => return Err(ApiError::IdempotencyKeyReused),
        };
        let receipt = Receipt { key: &key, token, render: &render };
        match state.orders.place(principal, &items, Some(receipt)).await {
            Ok(order) => {
                let stored = render(&order);
                let mut response = replay(stored);
                response.headers_mut().remove("idempotent-replayed");
                Ok(response)
            }
            Err(error) => {
                let error = ApiError::from(error);
                let (status, body) = error.status_and_body();
                let outcome = StoredResponse {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                if let Err(settle) = state.idempotency.settle(principal.user, &key, token, &outcome).await {
                    // The key stays claimed; it is taken over once stale.
                    tracing::warn!(error = %settle, "could not store the outcome of an idempotent request");
                }
                Err(error)
            }
        }
    })
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OrderPage)]
struct PageBody {
    items: Vec<OrderBody>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

/// Orders, newest first: your own, or an administrator's choice.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, nullable = false,
         description = "Orders per page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^c[0-9a-f]{1,15}$",
         description = "The `next` of the previous page."),
        ("user_id" = Option<i64>, Query, minimum = 1, nullable = false,
         description = "Only this user's orders (administrators; ignored for others)."),
    ),
    responses(
        (status = 200, description = "A page of orders.", body = PageBody),
        errors::Invalid,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request).and_then(|p| {
        let (limit, before) = extract::page(&request, DEFAULT_PAGE, MAX_PAGE)?;
        let user = match extract::query_param(&request, "user_id") {
            None => None,
            Some(raw) => Some(UserId(
                raw.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| ApiError::invalid("user_id", "must be a positive integer"))?,
            )),
        };
        Ok((p, limit, before, user))
    });
    let (principal, limit, before, user) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let (orders, next) = state.orders.list(principal, user, before.map(OrderId), limit).await?;
        let body = PageBody {
            items: orders.iter().map(OrderBody::from).collect(),
            next: next.map(|id| cursor(id.0)),
        };
        Ok(reply::json(StatusCode::OK, &body))
    })
}

/// An order: your own, or any for an administrator.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order's id.")),
    responses(
        (status = 200, description = "The order.", body = OrderBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
fn get(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let order = state.orders.get(principal, OrderId(id)).await?;
        Ok(reply::json(StatusCode::OK, &OrderBody::from(&order)))
    })
}

type Transition = for<'a> fn(
    &'a OrderService,
    Principal,
    OrderId,
) -> futures_util::future::LocalBoxFuture<'a, Result<Order, ServiceError>>;

fn transition(state: &Rc<State>, request: Request, params: Params, change: Transition) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let order = change(&state.orders, principal, OrderId(id)).await?;
        Ok(reply::json(StatusCode::OK, &OrderBody::from(&order)))
    })
}

/// `placed` to `paid` (administrators only).
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/pay",
    tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, paid.", body = OrderBody),
        errors::Invalid,
        errors::AdminOnly,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
fn pay(state: &Rc<State>, request: Request, params: Params) -> Reply {
    transition(state, request, params, |orders, by, id| Box::pin(orders.pay(by, id)))
}

/// `paid` to `shipped` (administrators only).
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/ship",
    tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, shipped.", body = OrderBody),
        errors::Invalid,
        errors::AdminOnly,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
fn ship(state: &Rc<State>, request: Request, params: Params) -> Reply {
    transition(state, request, params, |orders, by, id| Box::pin(orders.ship(by, id)))
}

/// `placed` to `cancelled`: the customer's own order, or any for an
/// administrator. The reserved units are available again.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, cancelled.", body = OrderBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
fn cancel(state: &Rc<State>, request: Request, params: Params) -> Reply {
    transition(state, request, params, |orders, by, id| Box::pin(orders.cancel(by, id)))
}
