//! The admin listener's Prometheus `/metrics`: aggregated over workers, and
//! totals that never go backwards when workers are replaced.

use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::{get, Conn, Drover};

pub(crate) async fn scrape(admin: SocketAddr) -> String {
    let mut conn = Conn::connect(admin).await.unwrap();
    let response = conn.get("/metrics").await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().contains("openmetrics"));
    String::from_utf8(response.body).unwrap()
}

/// The sum of every sample of `metric` whose labels contain all of `having`.
pub(crate) fn sum(text: &str, metric: &str, having: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")) || line.starts_with(&format!("{metric} ")))
        .filter(|line| having.iter().all(|h| line.contains(h)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_aggregate_workers_and_never_go_backwards_across_a_reload() {
    let drover = Drover::start(2);
    let admin = drover.admin.expect("the ready file names the admin listener");
    assert_ne!(admin.port(), drover.addr.port(), "never the public port");
    for _ in 0..60 {
        assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    }
    for _ in 0..5 {
        get(drover.addr, "/nope").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a heartbeat carries the counts
    let text = scrape(admin).await;
    let healthz = r#"route="/healthz""#;
    let before = sum(&text, "drover_http_requests_total", &[healthz, r#"class="2xx""#]);
    assert!(before >= 60.0, "{text}");
    assert!(sum(&text, "drover_http_requests_total", &[r#"route="unmatched""#, r#"class="4xx""#]) >= 5.0);
    assert_eq!(sum(&text, "drover_http_request_duration_seconds_count", &[healthz]), before);
    // The top bucket (+Inf, which prometheus-client writes as "inf") holds
    // every request; buckets are cumulative.
    let top = sum(&text, "drover_http_request_duration_seconds_bucket", &[healthz, r#"le="inf""#])
        + sum(&text, "drover_http_request_duration_seconds_bucket", &[healthz, r#"le="+Inf""#]);
    assert_eq!(top, before, "{text}");
    assert_eq!(sum(&text, "drover_workers", &[r#"state="ready""#]), 2.0, "{text}");
    assert!(text.contains("drover_worker_loop_lag_seconds{slot=\"0\"}"), "{text}");
    assert!(text.contains("drover_app_events_total{") && text.contains("cache_local_misses"), "{text}");
    // Pool and cache figures (SQLite here, the default).
    assert!(sum(&text, "drover_app_gauge", &[r#"name="db_sqlite_pool_connections""#]) >= 2.0, "{text}");
    assert!(text.contains(r#"name="cache_local_entries""#), "{text}");

    // Replace every worker: their counts fold into the slots' totals.
    let old = drover.worker_pids();
    drover.signal(libc::SIGHUP);
    drover.wait_workers(Duration::from_secs(20), |pids| pids.len() == 2 && pids.is_disjoint(&old));
    let text = scrape(admin).await;
    let after_reload = sum(&text, "drover_http_requests_total", &[healthz, r#"class="2xx""#]);
    assert!(after_reload >= before, "went backwards: {before} then {after_reload}\n{text}");
    assert_eq!(sum(&text, "drover_generation", &[]), 2.0);

    for _ in 0..40 {
        get(drover.addr, "/healthz").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape(admin).await;
    let last = sum(&text, "drover_http_requests_total", &[healthz, r#"class="2xx""#]);
    assert!(
        sum(&text, "drover_requests_total", &[]) >= last,
        "the unlabelled total counts everything\n{text}"
    );
    assert!(last >= before + 40.0, "old workers' and new workers' counts: {before} then {last}\n{text}");

    // Anything but /metrics is not served there.
    let mut conn = Conn::connect(admin).await.unwrap();
    assert_eq!(conn.get("/healthz").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_asks_for_its_token_and_lets_slow_clients_go() {
    let dir = crate::helpers::TempDir::new("admin-token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-admin-token-0123456789\n").unwrap();
    let token_path = token_file.to_str().unwrap();
    let drover = crate::helpers::Drover::start_with(crate::helpers::Options {
        workers: 1,
        env: vec![("DROVER_SERVER__ADMIN_TOKEN", token_path)],
        ..crate::helpers::Options::default()
    });
    let admin = drover.admin.expect("the ready file names the admin listener");
    let ask = |authorization: &'static str| async move {
        let mut conn = Conn::connect(admin).await.unwrap();
        conn.send(format!("GET /metrics HTTP/1.1\r\nhost: test\r\n{authorization}\r\n").as_bytes())
            .await
            .unwrap();
        conn.read_response().await.unwrap()
    };
    for refused in [ask("").await, ask("authorization: Bearer wrong-token-0123456789012\r\n").await] {
        assert_eq!(refused.status, 401);
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    let scraped = ask("authorization: Bearer s3cret-admin-token-0123456789\r\n").await;
    assert_eq!(scraped.status, 200);
    assert!(String::from_utf8_lossy(&scraped.body).contains("drover_requests"));

    // A head that never completes is not waited for.
    let mut slow = Conn::connect(admin).await.unwrap();
    slow.send(b"GET /metr").await.unwrap();
    assert!(slow.is_closed_by_peer(Duration::from_secs(10)).await, "a stalled head holds the admin listener");

    // A token file that is missing, or too short to be a secret: exit 64
    // naming the key, before anything starts.
    std::fs::write(&token_file, "short\n").unwrap();
    for source in [token_path, "/nonexistent/token"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["config", "check"])
            .env("DROVER_SERVER__ADMIN_TOKEN", source)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{source}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("server.admin_token"), "{source}");
    }
}
