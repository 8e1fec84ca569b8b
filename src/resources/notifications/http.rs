//! `GET /v1/notifications`: the caller's notifications, newest first, a
//! page at a time (`?limit=&cursor=`).

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::Notification;
use crate::http::openapi::errors;
use crate::http::reply::{self, Reply};
use crate::http::{extract, Params, RouteTable, State};
use crate::resources::products::http::rfc3339;
use crate::resources::{cursor, DEFAULT_PAGE, MAX_PAGE};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/notifications", Method::GET, list);
}

/// This route in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Notification)]
struct NotificationBody<'a> {
    id: i64,
    /// What happened, such as `order.placed`.
    kind: &'a str,
    message: &'a str,
    #[schema(format = DateTime)]
    created_at: String,
}

impl<'a> From<&'a Notification> for NotificationBody<'a> {
    fn from(n: &'a Notification) -> Self {
        Self { id: n.id, kind: &n.kind, message: &n.message, created_at: rfc3339(n.created_at) }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = NotificationPage)]
struct PageBody<'a> {
    items: Vec<NotificationBody<'a>>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

/// Your notifications, newest first.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "notifications",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, nullable = false,
         description = "Notifications per page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^c[0-9a-f]{1,15}$",
         description = "The `next` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of notifications.", body = PageBody),
        errors::Invalid,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request)
        .and_then(|p| extract::page(&request, DEFAULT_PAGE, MAX_PAGE).map(|page| (p, page)));
    let (principal, (limit, before)) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let (items, next) = state.notifications.list(principal, before, limit).await?;
        let body =
            PageBody { items: items.iter().map(NotificationBody::from).collect(), next: next.map(cursor) };
        Ok(reply::private(reply::json(StatusCode::OK, &body)))
    })
}
