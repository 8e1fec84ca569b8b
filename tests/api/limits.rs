//! Protection from slow or hostile clients, and the JSON error shape of
//! every refusal.

use std::time::{Duration, Instant};

use crate::helpers::{get, Conn, Drover, Options};

fn assert_error_shape(response: &crate::helpers::Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let drover = Drover::start(1);
    assert_error_shape(&get(drover.addr, "/nope").await.unwrap(), 404, "not_found");
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(b"POST /bench/json HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    let response = conn.read_response().await.unwrap();
    assert_error_shape(&response, 405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET"));
    let response = get(drover.addr, "/bench/delay/forever").await.unwrap();
    assert_error_shape(&response, 400, "invalid_request");
    assert_eq!(response.json()["error"]["details"][0]["field"], "ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_endpoints_follow_techempower() {
    let drover = Drover::start(1);
    let plain = get(drover.addr, "/bench/plaintext").await.unwrap();
    assert_eq!(plain.body, b"Hello, World!");
    assert!(plain.header("content-type").unwrap().starts_with("text/plain"));
    assert!(plain.header("date").is_some() && plain.header("server").is_some());
    let json = get(drover.addr, "/bench/json").await.unwrap();
    assert_eq!(json.body, br#"{"message":"Hello, World!"}"#);
    assert_eq!(json.header("content-type"), Some("application/json"));

    // Pipelined: all requests written at once, answered in order.
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let mut batch = Vec::new();
    for path in ["/bench/plaintext", "/bench/json", "/nope", "/healthz"] {
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
    }
    conn.send(&batch).await.unwrap();
    let statuses: Vec<u16> = [(); 4].iter().map(|_| 0).collect();
    let mut got = Vec::new();
    for _ in statuses {
        got.push(conn.read_response().await.unwrap());
    }
    assert_eq!(got[0].body, b"Hello, World!");
    assert_eq!(got[1].body, br#"{"message":"Hello, World!"}"#);
    assert_eq!(got[2].status, 404);
    assert_eq!(got[3].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_routes_can_be_turned_off() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_BENCH__ENABLED", "false")],
        ..Options::default()
    });
    for path in ["/bench/plaintext", "/bench/json", "/bench/delay/1"] {
        assert_error_shape(&get(drover.addr, path).await.unwrap(), 404, "not_found");
    }
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let drover = Drover::start(1);
    // One header larger than max_header_bytes (16 KiB by default).
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let big = "x".repeat(20 * 1024);
    conn.send(format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").as_bytes()).await.unwrap();
    let response = conn.read_response().await.unwrap();
    assert_error_shape(&response, 431, "headers_too_large");
    assert!(response.closes());

    // More header fields than max_headers (100).
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    conn.send(format!("GET /healthz HTTP/1.1\r\nhost: t\r\n{many}\r\n").as_bytes()).await.unwrap();
    assert_error_shape(&conn.read_response().await.unwrap(), 431, "headers_too_large");

    // A head far past any limit: refused by hyper itself, still a 431.
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let huge = "x".repeat(200 * 1024);
    let _ = conn.send(format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {huge}\r\n\r\n").as_bytes()).await;
    if let Ok(response) = conn.read_response().await {
        assert_eq!(response.status, 431);
    }

    // A declared body over max_body_bytes (1 MiB), refused before it is sent.
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(b"POST /bench/json HTTP/1.1\r\nhost: t\r\ncontent-length: 2000000\r\n\r\n").await.unwrap();
    let response = conn.read_response().await.unwrap();
    assert_error_shape(&response, 413, "body_too_large");
    assert!(response.closes());

    // The worker is unharmed.
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_gets_408_and_does_not_stop_normal_clients() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__HEADER_READ_TIMEOUT", "1s")],
        ..Options::default()
    });
    // 200 connections dribbling a request head, a byte every 100 ms.
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(Conn::connect(drover.addr).await.unwrap());
    }
    let head = b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let addr = drover.addr;
    let normal = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..200 {
            let response = get(addr, "/bench/json").await.expect("normal client served");
            assert_eq!(response.status, 200);
            ok += 1;
        }
        ok
    });
    let mut sent = 0;
    while sent < head.len() && started.elapsed() < Duration::from_millis(1500) {
        for conn in &mut slow {
            let _ = conn.send(&head[sent..sent + 1]).await;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(normal.await.unwrap(), 200);
    // Each slow connection was answered 408 with the JSON shape, then closed.
    let mut timed_out = 0;
    for conn in &mut slow {
        if let Ok(response) =
            tokio::time::timeout(Duration::from_secs(3), conn.read_response()).await.unwrap()
        {
            assert_error_shape(&response, 408, "request_timeout");
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_timeout() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__KEEP_ALIVE_TIMEOUT", "300ms")],
        ..Options::default()
    });
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
    assert!(conn.is_closed_by_peer(Duration::from_secs(3)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__MAX_CONNECTIONS", "4")],
        ..Options::default()
    });
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::connect(drover.addr).await.unwrap();
        assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
        held.push(conn);
    }
    let mut extra = Conn::connect(drover.addr).await.unwrap();
    let response = extra.read_response().await.unwrap();
    assert_error_shape(&response, 503, "overloaded");
    assert_eq!(response.header("retry-after"), Some("1"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    // drover under a small open-file limit, set by a shell around it (the
    // test process's own limit is shared with every test beside it).
    let bin = crate::helpers::TempDir::new("nofile");
    let wrapper = crate::helpers::drover_wrapped(&bin, "ulimit -n 96");
    let drover = Drover::start_with(Options { workers: 1, program: Some(&wrapper), ..Options::default() });
    drover.wait_log(Duration::from_secs(5), "the open-file limit is below http.max_connections");

    // More connections than the worker has descriptors for.
    let mut first = Conn::connect(drover.addr).await.unwrap();
    assert_eq!(first.get("/healthz").await.unwrap().status, 200);
    let mut crowd = Vec::new();
    for _ in 0..150 {
        crowd.push(Conn::connect(drover.addr).await.unwrap());
    }
    drover.wait_log(Duration::from_secs(5), "cannot accept connections");
    // The connections it holds are still served while it cannot accept...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(first.get("/bench/json").await.unwrap().status, 200);
    // ...and the error is logged once, not once per attempt.
    assert_eq!(drover.log().matches("cannot accept connections").count(), 1, "{}", drover.log());

    // Once descriptors are free again, new connections are accepted.
    drop(crowd);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(2), get(drover.addr, "/healthz")).await {
            Ok(Ok(response)) if response.status == 200 => break,
            other => assert!(Instant::now() < deadline, "not accepting again: {other:?}\n{}", drover.log()),
        }
    }
    drover.wait_log(Duration::from_secs(5), "accepting connections again");
}

/// Longer than the idle time after which a worker drops hyper's connection
/// for an idle HTTP/1.1 connection (250 ms, worker/src/conn.rs).
const SET_ASIDE: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_idle_long_enough_to_be_set_aside_are_served_as_before() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__KEEP_ALIVE_TIMEOUT", "3s")],
        ..Options::default()
    });
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
    tokio::time::sleep(SET_ASIDE).await;
    assert_eq!(conn.get("/bench/json").await.unwrap().json()["message"], "Hello, World!");

    // A body read to its end, then idle: the next request is its own.
    let body = br#"{"email":"nobody@example.com","password":"not the password"}"#;
    conn.send(
        format!("POST /v1/auth/login HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
            .as_bytes(),
    )
    .await
    .unwrap();
    conn.send(body).await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 401);
    tokio::time::sleep(SET_ASIDE).await;
    assert_eq!(conn.get("/healthz").await.unwrap().status, 200);

    // A body the route never reads, then idle: still no confusion.
    conn.send(b"POST /healthz HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nGET /").await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 405);
    tokio::time::sleep(SET_ASIDE).await;
    assert_eq!(conn.get("/healthz").await.unwrap().status, 200);

    // A pipelined request whose head was cut short, in the same read as the
    // one before it: what had arrived of it survives the idle spell.
    conn.send(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\nGET /bench/json HTTP/1.1\r\nho").await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    tokio::time::sleep(SET_ASIDE).await;
    conn.send(b"st: test\r\n\r\n").await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().json()["message"], "Hello, World!");

    // And the keep-alive timeout still closes it.
    assert!(conn.is_closed_by_peer(Duration::from_secs(6)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_aside_connection_does_not_hold_up_a_drain() {
    let mut drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__KEEP_ALIVE_TIMEOUT", "60s")],
        ..Options::default()
    });
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
    tokio::time::sleep(SET_ASIDE).await;
    drover.signal(libc::SIGTERM);
    // Closed after the drain grace (0.5 s), not the 60 s keep-alive timeout.
    assert!(conn.is_closed_by_peer(Duration::from_secs(5)).await);
    let status = drover.wait_exit(Duration::from_secs(10)).expect("drover did not exit");
    assert!(status.success(), "{status:?}\n{}", drover.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_kept_from_the_client_or_its_trace() {
    let drover = Drover::start(1);
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let made = |response: &crate::helpers::Response| response.header("x-request-id").unwrap_or("").to_owned();
    let (first, second) = (conn.get("/healthz").await.unwrap(), conn.get("/no/such/route").await.unwrap());
    let (a, b) = (made(&first), made(&second));
    assert!(a.len() == 20 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b);

    let ask = |extra: &'static str| {
        let addr = drover.addr;
        async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            conn.send(format!("GET /healthz HTTP/1.1\r\nhost: test\r\n{extra}\r\n").as_bytes())
                .await
                .unwrap();
            conn.read_response().await.unwrap()
        }
    };
    assert_eq!(made(&ask("x-request-id: lb-7f3a.42\r\n").await), "lb-7f3a.42");
    let traced = ask("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n").await;
    assert_eq!(made(&traced), "4bf92f3577b34da6a3ce929d0e0e4736");
    // Not a usable id: replaced by a made one.
    assert_eq!(made(&ask("x-request-id: a;b\r\n").await).len(), 20);
    // The worker's own refusals carry one too, including those written
    // before any request could be parsed.
    let refused = ask("content-length: 99999999999\r\n").await;
    assert_error_shape(&refused, 413, "body_too_large");
    assert_eq!(made(&refused).len(), 20);
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n").await.unwrap();
    let malformed = conn.read_response().await.unwrap();
    assert_error_shape(&malformed, 400, "malformed_request");
    assert_eq!(made(&malformed).len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_get_503_and_other_addresses_do_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__MAX_CONNECTIONS_PER_IP", "3")],
        ..Options::default()
    });
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::connect(drover.addr).await.unwrap();
        assert_eq!(conn.get("/healthz").await.unwrap().status, 200);
        held.push(conn);
    }
    let mut extra = Conn::connect(drover.addr).await.unwrap();
    let refused = extra.read_response().await.unwrap();
    assert_error_shape(&refused, 503, "too_many_connections");
    assert_eq!(refused.header("retry-after"), Some("1"));

    // Another address has its own share.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(drover.addr).await.unwrap();
    other.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    other.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // A closed connection gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = Conn::connect(drover.addr).await.unwrap();
        match conn.get("/healthz").await {
            Ok(response) if response.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no place given back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HTTP/1.1 lets a client shut down its write side once it has sent its
/// requests (`nc -N`, scripts that pipe a request in): every request read
/// before the end of its input is still answered, then the connection
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_requests_gets_every_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drover = Drover::start(1);
    for requests in [1, 3] {
        let mut stream = tokio::net::TcpStream::connect(drover.addr).await.unwrap();
        let request = "GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n".repeat(requests);
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answers = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answers))
            .await
            .expect("the connection closes after the answers")
            .unwrap();
        let text = String::from_utf8_lossy(&answers);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), requests, "{text}");
    }
}
