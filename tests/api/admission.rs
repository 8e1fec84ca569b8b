//! `[admission]` through the real binary: requests over a worker's limit
//! wait in a bounded queue, whose oldest waiter is refused 503 `overloaded`
//! at once when a newcomer finds it full; health checks always answer, the
//! figures reach `/metrics`, and closed-loop load within limit + queue is
//! never refused.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{get, run_load, Conn, Drover, Load, Options, Response};
use crate::metrics::{scrape, sum};

/// Starts one worker whose limit is pinned to `limit` (no adaptation), with
/// `queue` places to wait for at most `max_wait`.
fn pinned(limit: &str, queue: &str, max_wait: &str) -> Drover {
    Drover::start_with(Options {
        workers: 1,
        env: vec![
            ("DROVER_ADMISSION__INITIAL_LIMIT", limit),
            ("DROVER_ADMISSION__MIN_LIMIT", limit),
            ("DROVER_ADMISSION__MAX_LIMIT", limit),
            ("DROVER_ADMISSION__QUEUE", queue),
            ("DROVER_ADMISSION__MAX_WAIT", max_wait),
        ],
        ..Options::default()
    })
}

/// Sends `GET path` on a new connection of its own, and returns the
/// connection, to read its answer later.
async fn send(drover: &Drover, path: &str) -> Conn {
    let mut conn = Conn::connect(drover.addr).await.unwrap();
    conn.send(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).await.unwrap();
    conn
}

fn assert_overloaded(response: &Response) {
    assert_eq!(response.status, 503, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.json()["error"]["code"], "overloaded");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(response.header("x-request-id").is_some());
    // A refusal for load is no reason to close the connection.
    assert!(!response.closes());
}

/// Waits for a heartbeat to carry the counts to the supervisor (bounded).
async fn metrics_until(drover: &Drover, done: impl Fn(&str) -> bool) -> String {
    let admin = drover.admin.expect("admin listener");
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(admin).await;
        if done(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_requests_wait_in_a_bounded_queue_whose_oldest_make_room_for_newcomers() {
    let drover = pinned("4", "4", "10s");
    // Four slow requests take every place...
    let mut admitted = Vec::new();
    for _ in 0..4 {
        admitted.push(send(&drover, "/bench/delay/1500").await);
    }
    // ...let them reach the worker before the next ones, one at a time, so
    // that their order in the queue is known.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(send(&drover, "/bench/delay/10").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The queue is full: a newcomer takes the place of the oldest waiter,
    // which is refused at once, long before a place frees up; its
    // connection stays usable.
    let mut newcomer = send(&drover, "/bench/delay/10").await;
    let mut oldest = waiting.remove(0);
    let response = tokio::time::timeout(Duration::from_millis(1000), oldest.read_response())
        .await
        .expect("the oldest waiter is refused at once")
        .unwrap();
    assert_overloaded(&response);
    // Health checks are never limited, however full the worker is.
    assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(drover.addr, "/readyz").await.unwrap().status, 200);
    // Everything admitted or still queued is answered.
    for conn in admitted.iter_mut().chain(waiting.iter_mut()).chain([&mut newcomer]) {
        let response = conn.read_response().await.unwrap();
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    }
    // The refused connection serves its next request once there is room.
    assert_eq!(oldest.get("/bench/delay/1").await.unwrap().status, 200);

    let text = metrics_until(&drover, |text| sum(text, "drover_admission_admitted_total", &[]) >= 9.0).await;
    assert_eq!(sum(&text, "drover_admission_admitted_total", &[r#"slot="0""#]), 9.0, "{text}");
    assert_eq!(sum(&text, "drover_admission_shed_total", &[r#"slot="0""#]), 1.0, "{text}");
    assert_eq!(sum(&text, "drover_admission_limit", &[r#"slot="0""#]), 4.0, "{text}");
    assert_eq!(sum(&text, "drover_admission_queued", &[]), 0.0, "{text}");
    // Four requests waited for a place (over 100 ms each, until the slow
    // ones ended); the rest were admitted at once.
    let waited_under_100ms = sum(&text, "drover_admission_queue_wait_seconds_bucket", &[r#"le="0.1""#]);
    assert_eq!(waited_under_100ms, 5.0, "{text}");
    assert_eq!(sum(&text, "drover_admission_queue_wait_seconds_count", &[]), 9.0, "{text}");
    // The refusal is counted under its own route label.
    assert_eq!(
        sum(&text, "drover_http_requests_total", &[r#"route="overloaded""#, r#"class="5xx""#]),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_longer_than_max_wait_is_refused() {
    let drover = pinned("1", "8", "300ms");
    let mut slow = send(&drover, "/bench/delay/2000").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = send(&drover, "/bench/delay/1").await;
    // Refused once it has waited 300 ms, without waiting for the slow one.
    let response = tokio::time::timeout(Duration::from_millis(1500), late.read_response())
        .await
        .expect("refused at max_wait, not when the place frees")
        .unwrap();
    assert_overloaded(&response);
    assert_eq!(slow.read_response().await.unwrap().status, 200);
    // The place is free again.
    assert_eq!(late.get("/bench/delay/1").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_load_within_limit_and_queue_is_never_refused() {
    // The defaults: admission control on, adaptive limit, queue 256.
    let drover = Drover::start(1);
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load {
        connections: 256,
        path: "/bench/delay/2",
        max_requests_per_connection: 20,
        max_duration: Duration::from_secs(60),
        ..Load::default()
    };
    let report = run_load(drover.addr, load, stop).await;
    report.assert_clean(&drover, 256 * 20);
    let text =
        metrics_until(&drover, |text| sum(text, "drover_admission_admitted_total", &[]) >= 5120.0).await;
    assert_eq!(sum(&text, "drover_admission_shed_total", &[]), 0.0, "{text}");
    assert!(sum(&text, "drover_admission_limit", &[]) >= 8.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_can_be_turned_off() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![
            ("DROVER_ADMISSION__ENABLED", "false"),
            ("DROVER_ADMISSION__MAX_LIMIT", "8"),
            ("DROVER_ADMISSION__MIN_LIMIT", "1"),
            ("DROVER_ADMISSION__INITIAL_LIMIT", "1"),
        ],
        ..Options::default()
    });
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(send(&drover, "/bench/delay/300").await);
    }
    for conn in &mut conns {
        assert_eq!(conn.read_response().await.unwrap().status, 200);
    }
    let text = metrics_until(&drover, |text| text.contains("drover_admission_limit{")).await;
    assert_eq!(sum(&text, "drover_admission_limit", &[]), 0.0, "{text}");
    assert_eq!(sum(&text, "drover_admission_admitted_total", &[]), 0.0, "{text}");
}
