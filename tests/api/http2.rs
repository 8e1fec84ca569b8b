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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_that_arrives_in_pieces_is_still_http2_and_one_that_stops_short_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drover = crate::helpers::Drover::start_with(crate::helpers::Options {
        workers: 1,
        env: vec![("DROVER_HTTP__HEADER_READ_TIMEOUT", "1s")],
        ..crate::helpers::Options::default()
    });
    // The worker waits for enough of the preface to tell.
    let mut stream = TcpStream::connect(drover.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut frame_head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut frame_head)).await.unwrap().unwrap();
    assert_eq!(frame_head[3], 4, "the server's first frame is SETTINGS: {frame_head:?}");

    // A preface that stops short is timed out like any request head.
    let mut conn = crate::helpers::Conn::connect(drover.addr).await.unwrap();
    conn.send(b"PRI * HT").await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), conn.read_response()).await.unwrap().unwrap();
    assert_eq!(response.status, 408);
}
