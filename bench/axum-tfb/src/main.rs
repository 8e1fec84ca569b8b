//! The TechEmpower database tests the way an axum user writes them: a
//! deadpool-postgres pool with one checkout per request, prepared
//! statements cached per connection, an askama template for fortunes and an
//! in-process copy of the world table for cached-queries.
//!
//! Usage: `axum-tfb ADDR DATABASE_URL [WORKER_THREADS] [POOL_SIZE]`.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;
use tokio_postgres::NoTls;

#[derive(Serialize, Clone, Copy)]
struct World {
    id: i32,
    #[serde(rename = "randomNumber")]
    random_number: i32,
}

struct Fortune {
    id: i32,
    message: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>{% for f in fortunes %}<tr><td>{{ f.id }}</td><td>{{ f.message }}</td></tr>{% endfor %}</table></body></html>"
)]
struct FortunesPage<'a> {
    fortunes: &'a [Fortune],
}

struct AppState {
    pool: Pool,
    cache: OnceLock<Vec<World>>,
}

type Shared = Arc<AppState>;

fn internal<E: std::fmt::Display>(e: E) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

fn count(params: &HashMap<String, String>, name: &str) -> usize {
    match params.get(name).and_then(|v| v.parse::<i64>().ok()) {
        Some(n) if n > 500 => 500,
        Some(n) if n >= 1 => n as usize,
        _ => 1,
    }
}

fn random_id(rng: &mut SmallRng) -> i32 {
    rng.gen_range(1..=10_000)
}

async fn db(State(state): State<Shared>) -> Result<Response, Response> {
    let client = state.pool.get().await.map_err(internal)?;
    let stmt = client.prepare_cached("SELECT id, randomnumber FROM world WHERE id = $1").await.map_err(internal)?;
    let id = random_id(&mut SmallRng::from_entropy());
    let row = client.query_one(&stmt, &[&id]).await.map_err(internal)?;
    Ok(Json(World { id: row.get(0), random_number: row.get(1) }).into_response())
}

async fn read(client: &deadpool_postgres::Object, n: usize) -> Result<Vec<World>, Response> {
    let stmt = client.prepare_cached("SELECT id, randomnumber FROM world WHERE id = $1").await.map_err(internal)?;
    let mut rng = SmallRng::from_entropy();
    let mut worlds = Vec::with_capacity(n);
    for _ in 0..n {
        let id = random_id(&mut rng);
        let row = client.query_one(&stmt, &[&id]).await.map_err(internal)?;
        worlds.push(World { id: row.get(0), random_number: row.get(1) });
    }
    Ok(worlds)
}

async fn queries(State(state): State<Shared>, Query(params): Query<HashMap<String, String>>) -> Result<Response, Response> {
    let client = state.pool.get().await.map_err(internal)?;
    Ok(Json(read(&client, count(&params, "queries")).await?).into_response())
}

async fn updates(State(state): State<Shared>, Query(params): Query<HashMap<String, String>>) -> Result<Response, Response> {
    let client = state.pool.get().await.map_err(internal)?;
    let mut worlds = read(&client, count(&params, "queries")).await?;
    let mut rng = SmallRng::from_entropy();
    for w in &mut worlds {
        w.random_number = random_id(&mut rng);
    }
    let mut distinct: HashMap<i32, i32> = HashMap::new();
    for w in &worlds {
        distinct.insert(w.id, w.random_number);
    }
    for w in &mut worlds {
        w.random_number = distinct[&w.id];
    }
    // One statement, the same drover sends: a join on a VALUES list.
    let mut sql = String::from("UPDATE world SET randomnumber = v.r FROM (VALUES ");
    let mut params: Vec<i32> = Vec::new();
    for (i, (id, n)) in distinct.iter().enumerate() {
        params.push(*id);
        params.push(*n);
        let (a, b) = (params.len() - 1, params.len());
        if i == 0 {
            sql.push_str(&format!("(CAST(${a} AS INTEGER), CAST(${b} AS INTEGER))"));
        } else {
            sql.push_str(&format!(", (${a}, ${b})"));
        }
    }
    sql.push_str(") AS v (id, r) WHERE world.id = v.id");
    let stmt = client.prepare_cached(&sql).await.map_err(internal)?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    client.execute(&stmt, &refs).await.map_err(internal)?;
    Ok(Json(worlds).into_response())
}

async fn fortunes(State(state): State<Shared>) -> Result<Response, Response> {
    let client = state.pool.get().await.map_err(internal)?;
    let stmt = client.prepare_cached("SELECT id, message FROM fortune").await.map_err(internal)?;
    let rows = client.query(&stmt, &[]).await.map_err(internal)?;
    let mut fortunes: Vec<Fortune> = rows.iter().map(|r| Fortune { id: r.get(0), message: r.get(1) }).collect();
    fortunes.push(Fortune { id: 0, message: "Additional fortune added at request time.".into() });
    fortunes.sort_by(|a, b| a.message.cmp(&b.message));
    let page = FortunesPage { fortunes: &fortunes }.render().map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(page)).into_response())
}

async fn cached_queries(
    State(state): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    if state.cache.get().is_none() {
        let client = state.pool.get().await.map_err(internal)?;
        let rows = client.query("SELECT id, randomnumber FROM world ORDER BY id", &[]).await.map_err(internal)?;
        let _ = state.cache.set(rows.iter().map(|r| World { id: r.get(0), random_number: r.get(1) }).collect());
    }
    let table = state.cache.get().expect("filled above");
    let mut rng = SmallRng::from_entropy();
    let worlds: Vec<World> = (0..count(&params, "count")).map(|_| table[(random_id(&mut rng) - 1) as usize]).collect();
    Ok(Json(worlds).into_response())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8083".into());
    let url = args.next().expect("usage: axum-tfb ADDR DATABASE_URL [WORKER_THREADS] [POOL_SIZE]");
    let threads: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    // deadpool's default pool size: 4 connections per CPU it may use.
    let pool_size: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(threads * 4);
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(async move {
        let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(pool_size).build().expect("a pool");
        let state = Arc::new(AppState { pool, cache: OnceLock::new() });
        let app = Router::new()
            .route("/bench/db", get(db))
            .route("/bench/queries", get(queries))
            .route("/bench/fortunes", get(fortunes))
            .route("/bench/updates", get(updates))
            .route("/bench/cached-queries", get(cached_queries))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(&addr).await?.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    })
}
