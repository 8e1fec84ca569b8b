//! Cleartext HTTP/2 (prior knowledge) on the same port as HTTP/1.1, and
//! GOAWAY when the worker drains.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::helpers::Drover;

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> hyper::Result<(u16, Bytes)> {
    let request = http::Request::get(format!("http://test{path}")).body(Empty::new()).unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_served_and_drained_with_goaway() {
    let drover = Drover::start(1);
    let stream = TcpStream::connect(drover.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);

    // Many concurrent streams on one connection.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move { h2_get(&mut sender, "/bench/json").await }));
    }
    for stream in streams {
        let (status, body) = stream.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, Bytes::from_static(br#"{"message":"Hello, World!"}"#));
    }

    // A request in flight when the worker starts draining still completes;
    // then the server sends GOAWAY and the connection ends cleanly.
    let mut slow_sender = sender.clone();
    let slow = tokio::spawn(async move { h2_get(&mut slow_sender, "/bench/delay/800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drover.signal(libc::SIGHUP);
    let (status, _) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "connection should end cleanly after GOAWAY: {ended:?}");
    assert!(h2_get(&mut sender, "/healthz").await.is_err(), "no new streams after GOAWAY");
}
