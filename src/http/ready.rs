//! `GET /readyz`: 200 when this worker can reach its database, 503 (with
//! the error shape and `Retry-After`) while it cannot. Redis is reported but
//! never makes the worker unready: without it requests are slower, not
//! failed. `/healthz` says the process is alive; this says it is useful.

use std::rc::Rc;

use drover_worker::{json_error, ErrorDetail, Request};
use http::{header, HeaderValue, Method, StatusCode};
use serde::Serialize;

use super::{reply, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/readyz", Method::GET, readyz);
}

/// This route in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(readyz))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    #[schema(value_type = String, example = "ok")]
    database: &'static str,
    /// `up`, `degraded` (requests read the database directly; still ready)
    /// or `not_configured`.
    #[schema(value_type = String, example = "up")]
    redis: &'static str,
}

/// Readiness: whether this worker can reach its database.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        super::openapi::errors::Unavailable,
    )
)]
fn readyz(state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        Ok(match state.db.ping().await {
            Ok(()) => reply::json(
                StatusCode::OK,
                &Ready { status: "ready", database: "ok", redis: state.cache.redis_status().as_str() },
            ),
            Err(error) => {
                tracing::debug!(%error, "readiness check failed");
                let mut response = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the database is unreachable",
                    &[ErrorDetail { field: "database".into(), issue: "unreachable".into() }],
                );
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        })
    })
}
