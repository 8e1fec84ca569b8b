//! `GET /healthz`: the worker is up; the body names it (slot, pid,
//! generation), which is how tests and operators see which worker answered.

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::{reply, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/healthz", Method::GET, healthz);
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    slot: usize,
    pid: u32,
    generation: u64,
}

fn healthz(state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    let worker = state.worker;
    Reply::ready(reply::json(
        StatusCode::OK,
        &Health { status: "ok", slot: worker.slot, pid: worker.pid, generation: worker.generation },
    ))
}
