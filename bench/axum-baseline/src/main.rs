//! Idiomatic axum 0.8 baseline: one tokio worker thread, same routes and
//! bodies as drover's /bench endpoints. Usage: `axum-baseline 127.0.0.1:8082`.
use axum::{http::header, response::IntoResponse, routing::get, serve::ListenerExt, Json, Router};
use serde::Serialize;

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

async fn json() -> impl IntoResponse {
    ([(header::SERVER, "axum")], Json(Message { message: "Hello, World!" }))
}

async fn plaintext() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain"), (header::SERVER, "axum")], "Hello, World!")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8082".into());
    let app = Router::new()
        .route("/bench/json", get(json))
        .route("/bench/plaintext", get(plaintext));
    // TCP_NODELAY on accepted sockets, as drover and the floor do.
    let listener = tokio::net::TcpListener::bind(&addr)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await
}
