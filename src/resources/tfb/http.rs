//! The routes of the TechEmpower database tests, under `/bench/` (routed
//! only when `bench.enabled`). JSON shapes and the fortunes page follow the
//! benchmark's rules; fortunes go through a compiled template (askama),
//! which escapes the messages.

use std::rc::Rc;

use askama::Template;
use bytes::Bytes;
use drover_worker::{Body, Request, Response};
use http::{header, HeaderValue, Method, StatusCode};
use serde::Serialize;

use super::{clamp_count, BenchError, Fortune, World};
use crate::http::{extract, reply, ApiError, Params, Reply, RouteTable, State};

pub fn routes(table: &mut RouteTable) {
    table.add("/bench/db", Method::GET, db);
    table.add("/bench/queries", Method::GET, queries);
    table.add("/bench/fortunes", Method::GET, fortunes);
    table.add("/bench/updates", Method::GET, updates);
    table.add("/bench/cached-queries", Method::GET, cached_queries);
}

/// A row as the benchmark shows it: `{"id":…,"randomNumber":…}`.
#[derive(Serialize)]
struct WorldBody {
    id: i32,
    #[serde(rename = "randomNumber")]
    random_number: i32,
}

impl From<&World> for WorldBody {
    fn from(w: &World) -> Self {
        Self { id: w.id, random_number: w.random_number }
    }
}

/// Rows serialised as they are, without a copy into body structs.
struct Worlds<'a>(&'a [World]);

impl Serialize for Worlds<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(WorldBody::from))
    }
}

fn worlds(rows: &[World]) -> Worlds<'_> {
    Worlds(rows)
}

impl From<BenchError> for ApiError {
    fn from(error: BenchError) -> Self {
        match error {
            BenchError::NotSetUp => ApiError::NotSetUp,
            BenchError::Repo(error) => crate::service::ServiceError::from(error).into(),
        }
    }
}

fn db(state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let world = state.tfb.world().await?;
        Ok(reply::json(StatusCode::OK, &WorldBody::from(&world)))
    })
}

fn count(request: &Request, name: &str) -> usize {
    clamp_count(extract::query_param(request, name).as_deref())
}

fn queries(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let (state, n) = (state.clone(), count(&request, "queries"));
    Reply::later(async move { Ok(reply::json(StatusCode::OK, &worlds(&state.tfb.worlds(n).await?))) })
}

fn updates(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let (state, n) = (state.clone(), count(&request, "queries"));
    Reply::later(async move { Ok(reply::json(StatusCode::OK, &worlds(&state.tfb.update(n).await?))) })
}

fn cached_queries(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let n = count(&request, "count");
    if let Some(rows) = state.tfb.cached_now(n) {
        return Reply::ready(reply::json(StatusCode::OK, &worlds(&rows)));
    }
    let state = state.clone();
    Reply::later(async move { Ok(reply::json(StatusCode::OK, &worlds(&state.tfb.cached(n).await?))) })
}

#[derive(Template)]
#[template(
    ext = "html",
    source = "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>{% for f in fortunes %}<tr><td>{{ f.id }}</td><td>{{ f.message }}</td></tr>{% endfor %}</table></body></html>"
)]
struct FortunesPage<'a> {
    fortunes: &'a [Fortune],
}

fn fortunes(state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let mut fortunes = state.tfb.fortunes().await?;
        fortunes.push(Fortune { id: 0, message: "Additional fortune added at request time.".to_owned() });
        fortunes.sort_by(|a, b| a.message.cmp(&b.message));
        let page = FortunesPage { fortunes: &fortunes }.render().map_err(ApiError::internal)?;
        let mut response = Response::new(Body::new(Bytes::from(page)));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        Ok(response)
    })
}
