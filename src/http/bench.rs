//! The TechEmpower endpoints, for load testers: `GET /bench/plaintext`
//! answers `Hello, World!` and `GET /bench/json` serialises
//! `{"message":"Hello, World!"}` per request, as the benchmark's rules ask.
//! `GET /bench/delay/{ms}` answers after a delay, to simulate a slow
//! upstream (and to test draining with requests in flight).

use std::rc::Rc;

use drover_worker::Request;
use http::{Method, StatusCode};
use serde::Serialize;

use super::{reply, ApiError, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/bench/plaintext", Method::GET, plaintext);
    table.add("/bench/json", Method::GET, json);
    table.add("/bench/delay/{ms}", Method::GET, delay);
}

/// Longest delay `/bench/delay` accepts, so it cannot pin a connection for
/// long.
const MAX_DELAY_MS: u64 = 10_000;

fn delay(_state: &Rc<State>, _request: Request, params: Params) -> Reply {
    let ms = params.first().and_then(|(_, v)| v.parse::<u64>().ok()).filter(|&ms| ms <= MAX_DELAY_MS);
    let Some(ms) = ms else {
        return ApiError::invalid(
            "ms",
            &format!("must be a whole number of milliseconds up to {MAX_DELAY_MS}"),
        )
        .into();
    };
    Reply::later(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(reply::json(StatusCode::OK, &Delayed { delayed_ms: ms }))
    })
}

#[derive(Serialize)]
struct Delayed {
    delayed_ms: u64,
}

fn plaintext(_state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    Reply::ready(reply::text(StatusCode::OK, "Hello, World!"))
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

fn json(_state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    Reply::ready(reply::json(StatusCode::OK, &Message { message: "Hello, World!" }))
}
