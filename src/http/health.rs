//! `GET /healthz`: the worker is up; the body names it (slot, pid,
//! generation), which is how tests and operators see which worker answered,
//! and carries its cache counters per tier.

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::{reply, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/healthz", Method::GET, healthz);
}

/// This route in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz))]
pub struct Api;

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    slot: usize,
    pid: u32,
    generation: u64,
    cache: CacheCounters,
}

/// This worker's cache counters, per tier.
#[derive(Serialize, utoipa::ToSchema)]
struct CacheCounters {
    local_hits: u64,
    local_misses: u64,
    redis_hits: u64,
    redis_misses: u64,
    redis_errors: u64,
    /// Reads that went to the database.
    loads: u64,
    invalidations: u64,
}

/// Liveness: the worker that answered, and its cache counters.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "The worker is up.", body = Health))
)]
fn healthz(state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    let worker = state.worker;
    let stats = state.cache.stats();
    let cache = CacheCounters {
        local_hits: stats.local_hits.get(),
        local_misses: stats.local_misses.get(),
        redis_hits: stats.redis_hits.get(),
        redis_misses: stats.redis_misses.get(),
        redis_errors: stats.redis_errors.get(),
        loads: stats.loads.get(),
        invalidations: stats.invalidations.get(),
    };
    Reply::ready(reply::json(
        StatusCode::OK,
        &Health { status: "ok", slot: worker.slot, pid: worker.pid, generation: worker.generation, cache },
    ))
}
