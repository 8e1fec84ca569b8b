//! The floor of drover's stack: bare hyper 1.x, HTTP/1.1 keep-alive, on one
//! current-thread tokio runtime. Usage: `floor 127.0.0.1:8081`.
use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, SERVER};
use hyper::{server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (body, ctype, status) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/bench/plaintext") => (&b"Hello, World!"[..], "text/plain", StatusCode::OK),
        (&Method::GET, "/bench/json") => (&br#"{"message":"Hello, World!"}"#[..], "application/json", StatusCode::OK),
        _ => (&b"Not Found"[..], "text/plain", StatusCode::NOT_FOUND),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(SERVER, HeaderValue::from_static("floor"));
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
