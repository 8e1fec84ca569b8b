//! Job processes run by the supervisor (`jobs.workers`), through the real
//! binary: they boot with the HTTP workers, show in `drover ctl status`
//! and `/metrics`, are restarted after `kill -9` with the message they held
//! handed out again, and are rolled by SIGHUP while events flow, with no
//! event lost and none applied twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{register, token_for};
use crate::commerce::{admin_token, expect, send};
use crate::db::PgDatabase;
use crate::helpers::{Drover, Options};
use crate::metrics::{scrape, sum};

pub(crate) fn ctl_status(drover: &Drover) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["ctl", "status", "--json", "--control-socket"])
        .arg(drover.dir.path().join("drover.sock"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The job process rows of `drover ctl status`.
pub(crate) fn job_rows(drover: &Drover) -> Vec<Value> {
    let status = ctl_status(drover);
    status["workers"].as_array().unwrap().iter().filter(|w| w["kind"] == "jobs").cloned().collect()
}

/// Waits until one job process is ready and `accept` likes it; its pid.
pub(crate) fn await_job_process(drover: &Drover, accept: impl Fn(&Value) -> bool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = job_rows(drover);
        if let [row] = rows.as_slice() {
            if row["state"] == "ready" && accept(row) {
                return row["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(Instant::now() < deadline, "no ready job process: {rows:?}\n{}", drover.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every notification of the user (paging through them), as
/// `(event id, message)`.
pub(crate) async fn all_notifications(drover: &Drover, token: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut query = "?limit=100".to_owned();
    loop {
        let page = expect(
            &send(drover.addr, "GET", &format!("/v1/notifications{query}"), token, None, &[]).await,
            200,
        );
        for item in page["items"].as_array().unwrap() {
            all.push((item["id"].to_string(), item["message"].as_str().unwrap().to_owned()));
        }
        match page["next"].as_str() {
            Some(next) => query = format!("?limit=100&cursor={next}"),
            None => return all,
        }
    }
}

/// Waits until the user has `count` notifications, then checks that no
/// order was told twice.
pub(crate) async fn await_exactly(drover: &Drover, token: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = all_notifications(drover, token).await;
        if all.len() >= count {
            let messages: HashSet<&String> = all.iter().map(|(_, message)| message).collect();
            assert_eq!(messages.len(), all.len(), "an event was applied twice");
            // Settle: a late duplicate would show now.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(all_notifications(drover, token).await.len(), count, "more than once");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} notifications after 60 s\n{}",
            all.len(),
            drover.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Places `count` orders, `concurrency` at a time; every one must succeed.
pub(crate) async fn place_orders(
    drover: &Drover,
    token: &str,
    product: i64,
    label: &str,
    count: usize,
    concurrency: usize,
) {
    let addr = drover.addr;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (next, token, label) = (next.clone(), token.to_owned(), label.to_owned());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let items = json!({"items": [{"product_id": product, "quantity": 1}]});
                let key = format!("{label}-{n}");
                let response =
                    send(addr, "POST", "/v1/orders", &token, Some(&items), &[("idempotency-key", &key)])
                        .await;
                assert_eq!(response.status, 201, "order {key}: {}", String::from_utf8_lossy(&response.body));
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

async fn supervised_story(drover: &Drover, url: Option<&str>, flood: usize) {
    let addr = drover.addr;
    let first = await_job_process(drover, |_| true);
    let text = String::from_utf8(
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["ctl", "status", "--control-socket"])
            .arg(drover.dir.path().join("drover.sock"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains("1 slots, 1 job process") && text.contains("JOBS") && text.contains("HANDLED"),
        "{text}"
    );

    let admin = admin_token(drover, url).await;
    let product = json!({"sku": "SUP-1", "name": "Supervised", "price": {"amount": 100, "currency": "EUR"}, "stock": 100000});
    let product = expect(&send(addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    let product = product["id"].as_i64().unwrap();
    expect(&register(addr, "jo@example.com", "correct horse", "Jo").await, 201);
    let jo = token_for(addr, "jo@example.com", "correct horse").await;

    // One order over HTTP: exactly one notification, from the supervised
    // job process alone.
    place_orders(drover, &jo, product, "one", 1, 1).await;
    await_exactly(drover, &jo, 1).await;
    await_job_process(drover, |row| row["requests"].as_u64() >= Some(2) && row["pid"] == first);

    // kill -9 while orders flow: the supervisor starts another job process;
    // what the dead one held is handed out again once its lease runs out,
    // and applied once.
    let placing = place_orders(drover, &jo, product, "kill", 100, 4);
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while all_notifications(drover, &jo).await.len() < 10 {
            assert!(Instant::now() < deadline, "no notification while placing orders");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crate::helpers::send(first, libc::SIGKILL);
    };
    tokio::join!(placing, killer);
    let second = await_job_process(drover, |row| row["pid"] != first);
    drover.worker_pids();
    await_exactly(drover, &jo, 101).await;
    let log = drover.log();
    let crash =
        log.lines().find(|l| l.contains("worker exited unexpectedly")).unwrap_or_else(|| panic!("{log}"));
    assert!(crash.contains("jobs-0") && crash.contains("SIGKILL"), "{crash}");

    // SIGHUP twice while `flood` orders flow: the job process is replaced
    // (new before old) with the HTTP worker, each event applied once.
    let placing = place_orders(drover, &jo, product, "hup", flood, 8);
    let reloader = async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            crate::helpers::send(drover.pid, libc::SIGHUP);
        }
    };
    tokio::join!(placing, reloader);
    let third = await_job_process(drover, |row| row["generation"].as_u64() >= Some(2));
    assert_ne!(third, second);
    drover.worker_pids();
    await_exactly(drover, &jo, 101 + flood).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = expect(&send(addr, "GET", "/v1/inventory/summary", &admin, None, &[]).await, 200);
        if summary["currencies"][0]["units_ordered"].as_u64() == Some(101 + flood as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "sales not counted once each: {summary}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The metrics count what every job process, past and present, did (a
    // process killed with -9 loses what it did after its last heartbeat;
    // the ones rolled by SIGHUP report their last counts as they exit).
    tokio::time::sleep(Duration::from_millis(1500)).await; // a heartbeat carries the counts
    let text = scrape(drover.admin.unwrap()).await;
    let handled =
        sum(&text, "drover_jobs_messages_total", &[r#"queue="notifications""#, r#"outcome="succeeded""#]);
    assert!(handled >= flood as f64, "{handled}: {text}");
    let settled = sum(&text, "drover_jobs_handling_duration_seconds_count", &[r#"queue="sales""#]);
    assert!(settled >= flood as f64, "{text}");
    assert_eq!(sum(&text, "drover_job_workers", &[r#"state="ready""#]), 1.0, "{text}");
    assert!(sum(&text, "drover_worker_restarts_total", &[r#"slot="jobs-0""#]) >= 1.0, "{text}");
    assert_eq!(sum(&text, "drover_workers", &[r#"state="ready""#]), 1.0, "HTTP workers apart: {text}");
}

fn start(url: Option<&str>) -> Drover {
    let mut args = Vec::new();
    if let Some(url) = url {
        args = vec!["--database-url", url];
    }
    Drover::start_with(Options {
        workers: 1,
        args,
        env: vec![
            ("DROVER_JOBS__WORKERS", "1"),
            ("DROVER_JOBS__POLL_INTERVAL", "50ms"),
            // A killed process's message is handed out again this soon.
            ("DROVER_JOBS__LEASE", "2s"),
        ],
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_job_processes_on_sqlite() {
    let drover = start(None);
    supervised_story(&drover, None, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_job_processes_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = start(Some(&db.url));
    supervised_story(&drover, Some(&db.url), 1000).await;
}

/// Two drover instances on one PostgreSQL database, two job processes each,
/// and a schedule every second for 10 s: each tick ran exactly once, and
/// none was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_each_scheduled_tick_once() {
    let Some(db) = PgDatabase::create().await else { return };
    let config = crate::helpers::TempDir::new("schedule");
    let file = config.path().join("drover.toml");
    std::fs::write(
        &file,
        "[jobs]\nworkers = 2\npoll_interval = \"100ms\"\n[jobs.schedule]\n\"orders.expire\" = \"* * * * * *\"\n\
         \"outbox.prune\" = \"\"\n\"subscriptions.renew\" = \"\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let start = || {
        Drover::start_with(Options {
            workers: 1,
            args: vec!["--database-url", &db.url, "--config", file],
            // The harness turns job processes off; the file's count rules.
            env: vec![("DROVER_JOBS__WORKERS", "2")],
            ..Options::default()
        })
    };
    let (one, two) = (start(), start());
    for drover in [&one, &two] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while job_rows(drover).iter().filter(|r| r["state"] == "ready").count() < 2 {
            assert!(Instant::now() < deadline, "job processes not ready\n{}", drover.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["jobs", "runs", "--task", "orders.expire", "--database-url", &db.url])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let runs = String::from_utf8(output.stdout).unwrap();
    let mut ticks: Vec<std::time::SystemTime> = runs
        .lines()
        .map(|l| humantime::parse_rfc3339(l.split('\t').nth(2).unwrap().trim_start_matches("tick=")).unwrap())
        .collect();
    ticks.sort();
    let distinct: HashSet<_> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice: {runs}");
    assert!(ticks.len() >= 9, "a run per second over 10 s: {runs}");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).unwrap(),
            Duration::from_secs(1),
            "a tick was skipped: {runs}"
        );
    }
    let runners: HashSet<&str> = runs.lines().filter_map(|l| l.split('\t').nth(6)).collect();
    eprintln!("ticks: {}, runners: {runners:?}", ticks.len());
}

/// The stall watchdog covers job processes too: one whose event loop stops
/// (SIGSTOP) sends no heartbeat, is killed and replaced, and the new one
/// consumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_job_process_is_killed_and_replaced() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![
            ("DROVER_JOBS__WORKERS", "1"),
            ("DROVER_JOBS__POLL_INTERVAL", "50ms"),
            ("DROVER_WORKER__HEARTBEAT_INTERVAL", "200ms"),
            ("DROVER_WORKER__STALL_TIMEOUT", "1s"),
        ],
        ..Options::default()
    });
    let victim = await_job_process(&drover, |_| true);
    crate::helpers::send(victim, libc::SIGSTOP);
    let replacement = await_job_process(&drover, |row| row["pid"] != victim);
    drover.worker_pids();
    let log = drover.log();
    let stalled =
        log.lines().find(|l| l.contains("worker event loop stalled")).unwrap_or_else(|| panic!("{log}"));
    assert!(stalled.contains("jobs-0"), "{stalled}");

    let admin = admin_token(&drover, None).await;
    let product =
        json!({"sku": "STALL-1", "name": "Stall", "price": {"amount": 100, "currency": "EUR"}, "stock": 10});
    let product = expect(&send(drover.addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    expect(&register(drover.addr, "st@example.com", "correct horse", "St").await, 201);
    let st = token_for(drover.addr, "st@example.com", "correct horse").await;
    place_orders(&drover, &st, product["id"].as_i64().unwrap(), "after", 1, 1).await;
    await_exactly(&drover, &st, 1).await;
    assert!(job_rows(&drover).iter().any(|r| r["pid"] == replacement && r["requests"].as_u64() >= Some(1)));
}

/// On PostgreSQL an idle job process does not wait for its next poll: the
/// transaction that writes an event notifies it (LISTEN/NOTIFY) as it
/// commits. With a poll of a minute, the notification still arrives at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_wake_an_idle_job_process_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        env: vec![("DROVER_JOBS__WORKERS", "1"), ("DROVER_JOBS__POLL_INTERVAL", "60s")],
        ..Options::default()
    });
    await_job_process(&drover, |_| true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !drover.log().contains("listening for outbox events") {
        assert!(Instant::now() < deadline, "not listening\n{}", drover.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = admin_token(&drover, Some(&db.url)).await;
    let product =
        json!({"sku": "WAKE-1", "name": "Wake", "price": {"amount": 100, "currency": "EUR"}, "stock": 10});
    let product = expect(&send(drover.addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    expect(&register(drover.addr, "wa@example.com", "correct horse", "Wa").await, 201);
    let wa = token_for(drover.addr, "wa@example.com", "correct horse").await;
    let placed = Instant::now();
    place_orders(&drover, &wa, product["id"].as_i64().unwrap(), "wake", 1, 1).await;
    while all_notifications(&drover, &wa).await.is_empty() {
        assert!(placed.elapsed() < Duration::from_secs(10), "the job process slept through the commit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
