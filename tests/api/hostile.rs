//! What a broken or hostile HTTP/1.1 client sends, over raw sockets (a real
//! client would hide these bugs): every response the server produced reaches
//! the client before the connection closes, and every malformed request gets
//! its 4xx in the API's JSON shape.

use std::time::Duration;

use serde_json::json;

use crate::auth::{call, register, token_for};
use crate::helpers::{get, Conn, Drover, Response};

/// Sends `bytes` in one write on a fresh connection and reads `n` responses,
/// then expects the server to close.
async fn exchange(drover: &Drover, bytes: &[u8], n: usize) -> Vec<Response> {
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(bytes).await.unwrap();
    let mut responses = Vec::new();
    for i in 0..n {
        let response = conn.read_response().await.unwrap_or_else(|e| {
            panic!(
                "response {i} to {:?} lost: {e}\n{}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]),
                drover.log()
            )
        });
        responses.push(response);
    }
    assert!(conn.is_closed_by_peer(Duration::from_secs(5)).await, "the server should close the connection");
    responses
}

fn assert_json_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["error"]["code"], code, "{}", String::from_utf8_lossy(&response.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_not_lost_when_garbage_follows_its_request() {
    let drover = Drover::start(1);
    let got = exchange(&drover, b"GET /bench/plaintext HTTP/1.1\r\nhost: t\r\n\r\nGARBAGE\r\n\r\n", 2).await;
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].body, b"Hello, World!");
    assert_json_error(&got[1], 400, "malformed_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_answered_even_when_a_stray_byte_follows() {
    let drover = Drover::start(1);
    assert_eq!(
        register(drover.addr, "stray@example.com", "correct horse battery", "Stray").await.status,
        201
    );
    let token = token_for(drover.addr, "stray@example.com", "correct horse battery").await;
    let body = json!({"name": "Renamed"}).to_string();
    let request = format!(
        "PATCH /v1/users/me HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}X",
        body.len()
    );
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(request.as_bytes()).await.unwrap();
    // The stray byte starts a request head that never completes; the answer
    // to the PATCH must not wait for it.
    let response = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
        .await
        .expect("the PATCH is answered without waiting for the next request")
        .unwrap();
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.json()["name"], "Renamed");
    let me = call(drover.addr, "GET", "/v1/users/me", Some(&token), None).await;
    assert_eq!(me.json()["name"], "Renamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_in_one_write_gets_its_413() {
    // The default limit (1 MiB), a body a little over it, all in one write:
    // the 413 is produced while the rest of the body is still unread.
    let drover = Drover::start(1);
    let payload = format!("{{\"email\":\"{}\"}}", "a".repeat(1024 * 1024 + 16 * 1024));
    let request = format!(
        "POST /v1/auth/register HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
        payload.len()
    );
    let got = exchange(&drover, request.as_bytes(), 1).await;
    assert_json_error(&got[0], 413, "body_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_malformed_request_gets_a_json_400() {
    let drover = Drover::start(1);
    let cases: &[(&str, &[u8], &str)] = &[
        ("obs-fold", b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-a: 1\r\n  folded\r\n\r\n", "malformed_request"),
        ("bad method character", b"G(T /healthz HTTP/1.1\r\nhost: t\r\n\r\n", "malformed_request"),
        ("HTTP/1.2", b"GET /healthz HTTP/1.2\r\nhost: t\r\n\r\n", "malformed_request"),
        ("bare CR", b"GET /healthz HTTP/1.1\rhost: t\r\n\r\n", "malformed_request"),
        ("NUL in a header", b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-a: a\0b\r\n\r\n", "malformed_request"),
        ("0xFF in the request line", b"GET /\xff HTTP/1.1\r\nhost: t\r\n\r\n", "malformed_request"),
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3), so "X"
        // is read as a chunk size, which it is not: the body is refused.
        (
            "Transfer-Encoding and Content-Length, then a byte",
            b"POST /v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\nX",
            "invalid_request",
        ),
    ];
    for (what, bytes, code) in cases {
        let got = exchange(&drover, bytes, 1).await;
        assert_eq!(got[0].status, 400, "{what}: {}", String::from_utf8_lossy(&got[0].body));
        assert_json_error(&got[0], 400, code);
    }
    // Every one counted, none a 2xx.
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_twice_the_limit_gets_the_promised_431() {
    let drover = Drover::start(1);
    let huge = "x".repeat(200 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {huge}\r\n\r\n");
    let got = exchange(&drover, request.as_bytes(), 1).await;
    assert_json_error(&got[0], 431, "headers_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_exactly_one_host_is_400() {
    let drover = Drover::start(1);
    for request in
        [&b"GET /healthz HTTP/1.1\r\n\r\n"[..], b"GET /healthz HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"]
    {
        let got = exchange(&drover, request, 1).await;
        assert_json_error(&got[0], 400, "malformed_request");
    }
    // HTTP/1.0 never needed one.
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);
}
