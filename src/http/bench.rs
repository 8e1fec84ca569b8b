//! The TechEmpower endpoints, for load testers: `GET /bench/plaintext`
//! answers `Hello, World!` and `GET /bench/json` serialises
//! `{"message":"Hello, World!"}` per request, as the benchmark's rules ask.

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::{reply, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/bench/plaintext", Method::GET, plaintext);
    table.add("/bench/json", Method::GET, json);
}

fn plaintext(_state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    Reply::ready(reply::text(StatusCode::OK, "Hello, World!"))
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

fn json(_state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    Reply::ready(reply::json(
        StatusCode::OK,
        &Message {
            message: "Hello, World!",
        },
    ))
}
