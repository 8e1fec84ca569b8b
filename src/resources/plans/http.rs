//! `POST /v1/plans` (admin) and `GET /v1/plans` (anyone signed in).

use std::rc::Rc;

use drover_worker::Request;
use garde::Validate;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{NewPlan, Plan, PlanCode};
use crate::domain::proration::PlanTerms;
use crate::domain::time::Interval;
use crate::http::openapi::errors;
use crate::http::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::resources::products::http::{rfc3339, MoneyBody, PriceBody};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/plans", Method::POST, create);
    table.add("/v1/plans", Method::GET, list);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Plan)]
pub struct PlanBody {
    id: i64,
    code: String,
    name: String,
    price: MoneyBody,
    #[schema(value_type = IntervalBody)]
    interval: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A plan's billing period, as the document spells it (the domain's
/// `Interval` carries no schema).
#[derive(utoipa::ToSchema)]
#[schema(as = Interval, rename_all = "lowercase")]
#[allow(dead_code)]
enum IntervalBody {
    Month,
    Year,
}

impl From<&Plan> for PlanBody {
    fn from(plan: &Plan) -> Self {
        Self {
            id: plan.id.0,
            code: plan.code.as_str().to_owned(),
            name: plan.name.clone(),
            price: plan.terms.price.into(),
            interval: plan.terms.interval.as_str(),
            created_at: rfc3339(plan.created_at),
        }
    }
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = NewPlan)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[garde(skip)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$", example = "pro-monthly")]
    code: String,
    /// Trimmed; not blank.
    #[garde(length(chars, min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200, pattern = r"[^\s\u0085]")]
    name: String,
    #[garde(dive)]
    price: PriceBody,
    #[garde(skip)]
    #[schema(value_type = IntervalBody)]
    interval: String,
}

/// Creates a plan (administrators only).
#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "plans",
    request_body = CreateBody,
    responses(
        (status = 201, description = "The new plan.", body = PlanBody),
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
        let invalid = |field: &str, e: crate::domain::Invalid| ApiError::invalid(field, &e.issue);
        if body.name.trim().is_empty() {
            return Err(ApiError::invalid("name", "must not be blank"));
        }
        let plan = NewPlan {
            code: PlanCode::parse(&body.code).map_err(|e| invalid("code", e))?,
            name: body.name.trim().to_owned(),
            terms: PlanTerms {
                price: body.price.parse("price")?,
                interval: Interval::parse(&body.interval).map_err(|e| invalid("interval", e))?,
            },
        };
        let created = state.plans.create(principal, plan).await?;
        Ok(reply::json(StatusCode::CREATED, &PlanBody::from(&created)))
    })
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PlanList)]
struct ListBody {
    items: Vec<PlanBody>,
}

/// Every plan.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    responses(
        (status = 200, description = "The plans.", body = ListBody),
        errors::SignedIn,
    ),
    security(("bearerAuth" = []))
)]
fn list(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    if let Err(error) = extract::principal(state, &request) {
        return error.into();
    }
    let state = state.clone();
    Reply::later(async move {
        let plans = state.plans.list().await?;
        Ok(reply::json(StatusCode::OK, &ListBody { items: plans.iter().map(PlanBody::from).collect() }))
    })
}
