//! `GET /v1/invoices` (your own, newest first) and `GET /v1/invoices/{id}`
//! (owner or admin).

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::{Invoice, InvoiceId};
use crate::domain::proration::LineKind;
use crate::http::openapi::errors;
use crate::http::{extract, reply, Params, Reply, RouteTable, State};
use crate::resources::products::http::{rfc3339, MoneyBody};
use crate::resources::{cursor, DEFAULT_PAGE, MAX_PAGE};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/invoices", Method::GET, list);
    table.add("/v1/invoices/{id}", Method::GET, get);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, get))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = InvoiceLine)]
struct LineBody {
    #[schema(value_type = LineKindBody)]
    kind: &'static str,
    description: String,
    amount: MoneyBody,
    #[schema(format = DateTime)]
    period_start: String,
    #[schema(format = DateTime)]
    period_end: String,
}

/// Whether a line charges or credits, as the document spells it (the
/// domain's `LineKind` carries no schema).
#[derive(utoipa::ToSchema)]
#[schema(as = LineKind, rename_all = "lowercase")]
#[allow(dead_code)]
pub enum LineKindBody {
    Charge,
    Credit,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Invoice)]
pub struct InvoiceBody {
    id: i64,
    number: String,
    user_id: i64,
    /// The subscription that issued it, if any.
    subscription_id: Option<i64>,
    total: MoneyBody,
    lines: Vec<LineBody>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&Invoice> for InvoiceBody {
    fn from(invoice: &Invoice) -> Self {
        Self {
            id: invoice.id.0,
            number: invoice.number.clone(),
            user_id: invoice.user.0,
            subscription_id: invoice.subscription,
            total: invoice.total.into(),
            lines: invoice
                .lines
                .iter()
                .map(|l| LineBody {
                    kind: match l.kind {
                        LineKind::Charge => "charge",
                        LineKind::Credit => "credit",
                    },
                    description: l.description.clone(),
                    amount: l.amount.into(),
                    period_start: rfc3339(l.period_start),
                    period_end: rfc3339(l.period_end),
                })
                .collect(),
            created_at: rfc3339(invoice.created_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = InvoicePage)]
struct PageBody {
    items: Vec<InvoiceBody>,
    /// The `cursor` of the next page; `null` on the last one.
    next: Option<String>,
}

/// Your invoices, newest first.
#[utoipa::path(
    get,
    path = "/v1/invoices",
    tag = "invoices",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, nullable = false,
         description = "Invoices per page (default 20)."),
        ("cursor" = Option<String>, Query, nullable = false, pattern = "^c[0-9a-f]{1,15}$",
         description = "The `next` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of invoices.", body = PageBody),
        errors::Invalid,
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let parsed = extract::principal(state, &request)
        .and_then(|p| Ok((p, extract::page(&request, DEFAULT_PAGE, MAX_PAGE)?)));
    let (principal, (limit, before)) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let (invoices, next) = state.invoices.list(principal, before.map(InvoiceId), limit).await?;
        let body = PageBody {
            items: invoices.iter().map(InvoiceBody::from).collect(),
            next: next.map(|id| cursor(id.0)),
        };
        Ok(reply::json(StatusCode::OK, &body))
    })
}

/// An invoice: your own, or any for an administrator.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "invoices",
    params(("id" = i64, Path, minimum = 1, description = "The invoice's id.")),
    responses(
        (status = 200, description = "The invoice.", body = InvoiceBody),
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
        let invoice = state.invoices.get(principal, InvoiceId(id)).await?;
        Ok(reply::json(StatusCode::OK, &InvoiceBody::from(&invoice)))
    })
}
