//! Connections that never finish: a body that stops arriving gets 408, an
//! HTTP/2 peer that never answers is closed, and neither holds up a drain.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{get, Conn, Drover, Options};

/// A login whose head arrived and whose body stops after 9 of 1000 bytes.
const STALLED_LENGTH: &[u8] =
    b"POST /v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"email\":";
/// The same with a chunked body whose first chunk never completes.
const STALLED_CHUNKED: &[u8] =
    b"POST /v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n{\"email\":";

/// An HTTP/2 client that sends its preface and an empty SETTINGS frame, then
/// never reads or acknowledges anything.
async fn silent_http2(drover: &Drover) -> TcpStream {
    let mut stream = TcpStream::connect(drover.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // length 0, type SETTINGS (4), no flags, stream 0.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__BODY_READ_TIMEOUT", "2s")],
        ..Options::default()
    });
    for stalled in [STALLED_LENGTH, STALLED_CHUNKED] {
        let mut conn = Conn::connect(drover.addr).await.unwrap();
        conn.send(stalled).await.unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), conn.read_response())
            .await
            .expect("a stalled body is not waited for forever")
            .unwrap();
        assert_eq!(response.status, 408, "{}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["error"]["code"], "request_timeout");
        assert!(response.closes());
        assert!(conn.is_closed_by_peer(Duration::from_secs(5)).await);
    }
    // A body that keeps arriving, slowly but well within the gap (a busy CI
    // machine must not make it look stalled), is read whole.
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    let body = br#"{"email":"slow@example.com","password":"wrong password"}"#;
    conn.send(
        format!(
            "POST /v1/auth/login HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for piece in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.send(piece).await.unwrap();
    }
    assert_eq!(conn.read_response().await.unwrap().status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_closed_once_idle() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__KEEP_ALIVE_TIMEOUT", "1s")],
        ..Options::default()
    });
    let mut silent = silent_http2(&drover).await;
    // The server's frames wait unread in our socket; the server must close
    // anyway (it sees EOF-free silence, sends GOAWAY, and gives up on it).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sink = vec![0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(&mut silent, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent HTTP/2 connection stays open\n{}", drover.log());
}

/// Holds one of each connection that never finishes, plus an idle keep-alive
/// one, while the worker is drained.
struct Stragglers {
    _body: Conn,
    _chunked: Conn,
    _http2: TcpStream,
    _idle: Conn,
}

async fn stragglers(drover: &Drover) -> Stragglers {
    let mut body = Conn::connect(drover.addr).await.unwrap();
    body.send(STALLED_LENGTH).await.unwrap();
    let mut chunked = Conn::connect(drover.addr).await.unwrap();
    chunked.send(STALLED_CHUNKED).await.unwrap();
    let http2 = silent_http2(drover).await;
    let mut idle = Conn::connect(drover.addr).await.unwrap();
    assert_eq!(idle.get("/healthz").await.unwrap().status, 200);
    // Let the server see every one of them before the drain starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Stragglers { _body: body, _chunked: chunked, _http2: http2, _idle: idle }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_stalled_or_silent_connections() {
    // The default timeouts: a 10 s body gap and a 30 s drain would each be
    // waited out in full if draining did not close what stalls.
    let mut drover = Drover::start(1);
    let _held = stragglers(&drover).await;
    let started = Instant::now();
    drover.signal(libc::SIGTERM);
    let status = drover.wait_exit(Duration::from_secs(20)).expect("drover exits");
    let took = started.elapsed();
    assert!(status.success(), "{status}\n{}", drover.log());
    // Well under the 10 s and 30 s it would otherwise take; 2 s by design.
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}\n{}", drover.log());
    eprintln!("SIGTERM with stalled and silent connections open: exited in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_is_not_held_up_by_stalled_connections() {
    let drover = Drover::start(1);
    let old: HashSet<u32> = drover.worker_pids();
    let _held = stragglers(&drover).await;
    let started = Instant::now();
    drover.signal(libc::SIGHUP);
    drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == 1 && pids.is_disjoint(&old));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "the old worker took {took:?} to go\n{}", drover.log());
    eprintln!("SIGHUP with stalled and silent connections open: old worker gone in {took:?}");
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
}
