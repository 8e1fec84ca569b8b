//! `/v1/subscriptions`: subscribe, read, preview and make a plan change,
//! cancel. Each change answers with the invoice it issued.

use std::rc::Rc;
use std::time::SystemTime;

use drover_worker::Request;
use garde::Validate;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::service::Subscribed;
use super::SubscriptionId;
use crate::domain::proration::LineKind;
use crate::http::openapi::errors;
use crate::http::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::resources::invoices::http::InvoiceBody;
use crate::resources::invoices::http::LineKindBody;
use crate::resources::invoices::Invoice;
use crate::resources::plans::http::PlanBody;
use crate::resources::plans::PlanCode;
use crate::resources::products::http::{rfc3339, MoneyBody};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/subscriptions", Method::POST, subscribe);
    table.add("/v1/subscriptions/{id}", Method::GET, get);
    table.add("/v1/subscriptions/{id}/change-preview", Method::GET, preview);
    table.add("/v1/subscriptions/{id}/change", Method::POST, change);
    table.add("/v1/subscriptions/{id}/cancel", Method::POST, cancel);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(subscribe, get, preview, change, cancel))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Subscription)]
struct SubscriptionBody {
    id: i64,
    user_id: i64,
    plan: PlanBody,
    #[schema(value_type = String, example = "active")]
    status: &'static str,
    #[schema(format = DateTime)]
    current_period_start: String,
    #[schema(format = DateTime)]
    current_period_end: String,
    cancel_at_period_end: bool,
    #[schema(format = DateTime)]
    cancelled_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&Subscribed> for SubscriptionBody {
    fn from(s: &Subscribed) -> Self {
        let sub = &s.subscription;
        Self {
            id: sub.id.0,
            user_id: sub.user.0,
            plan: PlanBody::from(&s.plan),
            status: sub.status.as_str(),
            current_period_start: rfc3339(sub.period.start),
            current_period_end: rfc3339(sub.period.end),
            cancel_at_period_end: sub.cancel_at_period_end,
            cancelled_at: sub.cancelled_at.map(rfc3339),
            created_at: rfc3339(sub.created_at),
        }
    }
}

/// A subscription and the invoice its change issued.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SubscriptionChange)]
struct ChangedBody {
    subscription: SubscriptionBody,
    invoice: Option<InvoiceBody>,
}

fn changed(subscribed: &Subscribed, invoice: Option<&Invoice>) -> ChangedBody {
    ChangedBody { subscription: subscribed.into(), invoice: invoice.map(InvoiceBody::from) }
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = PlanChoice)]
#[serde(deny_unknown_fields)]
struct PlanChoice {
    /// A plan's `code`.
    #[garde(skip)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$", example = "pro-monthly")]
    plan: String,
}

fn plan_code(raw: &str) -> Result<PlanCode, ApiError> {
    PlanCode::parse(raw).map_err(|e| ApiError::invalid("plan", &e.issue))
}

/// Subscribes you to a plan; the first period's invoice is issued now.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "subscriptions",
    request_body = PlanChoice,
    responses(
        (status = 201, description = "The subscription and its first invoice.", body = ChangedBody),
        errors::JsonBody,
        errors::SignedIn,
        errors::Conflict,
        errors::Unprocessable,
    ),
    security(("bearerAuth" = []))
)]
fn subscribe(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let principal = crate::ready_or_return!(extract::principal(state, &request));
    let state = state.clone();
    Reply::later(async move {
        let body: PlanChoice = extract::json(request, state.max_body_bytes).await?;
        let code = plan_code(&body.plan)?;
        let (subscribed, invoice) = state.subscriptions.subscribe(principal, &code).await?;
        Ok(reply::json(StatusCode::CREATED, &changed(&subscribed, Some(&invoice))))
    })
}

/// A subscription: your own, or any for an administrator.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}",
    tag = "subscriptions",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id.")),
    responses(
        (status = 200, description = "The subscription.", body = SubscriptionBody),
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
        let subscribed = state.subscriptions.get(principal, SubscriptionId(id)).await?;
        Ok(reply::json(StatusCode::OK, &SubscriptionBody::from(&subscribed)))
    })
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ChangePreviewLine)]
struct PreviewLine {
    #[schema(value_type = LineKindBody)]
    kind: &'static str,
    amount: MoneyBody,
    #[schema(format = DateTime)]
    period_start: String,
    #[schema(format = DateTime)]
    period_end: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ChangePreview)]
struct PreviewBody {
    plan: PlanBody,
    #[schema(format = DateTime)]
    at: String,
    lines: Vec<PreviewLine>,
    total: MoneyBody,
    /// The period after the change.
    #[schema(format = DateTime)]
    current_period_start: String,
    #[schema(format = DateTime)]
    current_period_end: String,
}

/// What changing to another plan would charge or credit, without changing.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{id}/change-preview",
    tag = "subscriptions",
    params(
        ("id" = i64, Path, minimum = 1, description = "The subscription's id."),
        ("plan" = String, Query, pattern = "^[a-z0-9_-]{1,64}$", description = "The new plan's `code`."),
        ("at" = Option<String>, Query, format = DateTime, nullable = false, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z$",
         description = "When the change would happen (RFC 3339, UTC); now when absent."),
    ),
    responses(
        (status = 200, description = "The proration.", body = PreviewBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
        errors::Conflict,
        errors::Unprocessable,
    ),
    security(("bearerAuth" = []))
)]
fn preview(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let parsed = extract::principal(state, &request).and_then(|p| {
        let id = extract::id(&params)?;
        let code = plan_code(
            &extract::query_param(&request, "plan")
                .ok_or_else(|| ApiError::invalid("plan", "is required"))?,
        )?;
        let at = match extract::query_param(&request, "at") {
            None => None,
            Some(raw) => Some(humantime::parse_rfc3339_weak(&raw).map_err(|_| {
                ApiError::invalid("at", "must be an RFC 3339 time in UTC, such as 2026-12-03T10:00:00Z")
            })?),
        };
        Ok((p, id, code, at))
    });
    let (principal, id, code, at) = crate::ready_or_return!(parsed);
    let state = state.clone();
    Reply::later(async move {
        let preview = state.subscriptions.preview(principal, SubscriptionId(id), &code, at).await?;
        let p = &preview.proration;
        let at = at.unwrap_or_else(|| p.lines.first().map_or_else(SystemTime::now, |l| l.from));
        let body = PreviewBody {
            plan: PlanBody::from(&preview.plan),
            at: rfc3339(at),
            lines: p
                .lines
                .iter()
                .map(|l| PreviewLine {
                    kind: match l.kind {
                        LineKind::Charge => "charge",
                        LineKind::Credit => "credit",
                    },
                    amount: l.amount.into(),
                    period_start: rfc3339(l.from),
                    period_end: rfc3339(l.to),
                })
                .collect(),
            total: p.total.into(),
            current_period_start: rfc3339(p.period.start),
            current_period_end: rfc3339(p.period.end),
        };
        Ok(reply::json(StatusCode::OK, &body))
    })
}

/// Changes to another plan now, prorated; answers with the invoice issued.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/change",
    tag = "subscriptions",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id.")),
    request_body = PlanChoice,
    responses(
        (status = 200, description = "The subscription and the invoice of the change.", body = ChangedBody),
        errors::JsonBody,
        errors::SignedIn,
        errors::Missing,
        errors::Conflict,
        errors::Unprocessable,
    ),
    security(("bearerAuth" = []))
)]
fn change(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let body: PlanChoice = extract::json(request, state.max_body_bytes).await?;
        let code = plan_code(&body.plan)?;
        let (subscribed, invoice) = state.subscriptions.change(principal, SubscriptionId(id), &code).await?;
        Ok(reply::json(StatusCode::OK, &changed(&subscribed, Some(&invoice))))
    })
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = SubscriptionCancel)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// `true`: at the end of the current period; `false`: now, with a credit.
    #[garde(skip)]
    at_period_end: bool,
}

/// Cancels a subscription, now or at the end of its period.
#[utoipa::path(
    post,
    path = "/v1/subscriptions/{id}/cancel",
    tag = "subscriptions",
    params(("id" = i64, Path, minimum = 1, description = "The subscription's id.")),
    request_body = CancelBody,
    responses(
        (status = 200, description = "The subscription, and the credit note if one was issued.", body = ChangedBody),
        errors::JsonBody,
        errors::SignedIn,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
fn cancel(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let body: CancelBody = extract::json(request, state.max_body_bytes).await?;
        let (subscribed, invoice) =
            state.subscriptions.cancel(principal, SubscriptionId(id), body.at_period_end).await?;
        Ok(reply::json(StatusCode::OK, &changed(&subscribed, invoice.as_ref())))
    })
}
