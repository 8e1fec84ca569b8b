//! PostgreSQL restarted while drover runs: requests during the outage fail
//! fast with 503 and Retry-After, and the server recovers by itself.

use std::time::{Duration, Instant};

use crate::auth::{call, register, token_for};
use crate::db::PrivateCluster;
use crate::helpers::{Drover, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_gives_fast_503s_then_recovers_without_a_restart() {
    // A cluster of the test's own: stopping the machine's server would break
    // every other test running beside this one.
    let Some(mut cluster) = PrivateCluster::start() else { return };
    let url = cluster.url();
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &url],
        // A long query timeout, so a 503 that comes quickly proves the
        // fail-fast path rather than a timeout.
        // Caching off: a cached read would (rightly) still succeed during
        // the outage, and this test is about what reaches the database.
        env: vec![("DROVER_DATABASE__QUERY_TIMEOUT", "60s"), ("DROVER_CACHE__ENABLED", "false")],
        ..Options::default()
    });
    let addr = drover.addr;
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    assert_eq!(call(addr, "GET", "/v1/users/me", Some(&token), None).await.status, 200);
    let workers = drover.worker_pids();

    cluster.stop();
    for _ in 0..20 {
        let started = Instant::now();
        let response = call(addr, "GET", "/v1/users/me", Some(&token), None).await;
        let took = started.elapsed();
        assert_eq!(response.status, 503, "{}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["error"]["code"], "unavailable");
        assert_eq!(response.header("retry-after"), Some("1"));
        // Far below the 60 s query timeout: nothing waited on a dead server.
        assert!(took < Duration::from_secs(10), "a 503 took {took:?}");
        let ready = call(addr, "GET", "/readyz", None, None).await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.json()["error"]["code"], "not_ready");
    }

    cluster.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = call(addr, "GET", "/v1/users/me", Some(&token), None).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503);
        assert!(
            Instant::now() < deadline,
            "drover did not recover after PostgreSQL came back\n{}",
            drover.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every worker recovers (each has its own connections, reconnecting
    // with its own backoff of up to 2 s, so the second may lag the first),
    // and none was restarted to get there: 50 ready answers in a row, over
    // both workers, within a bound.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 50 {
        match crate::helpers::get(addr, "/readyz").await.unwrap().status {
            200 => in_a_row += 1,
            status => {
                assert_eq!(status, 503);
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(Instant::now() < deadline, "not every worker recovered\n{}", drover.log());
    }
    assert_eq!(drover.worker_pids(), workers);
    assert!(drover.log().contains("reconnected to PostgreSQL"), "{}", drover.log());
}
