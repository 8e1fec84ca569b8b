//! Jobs through RabbitMQ (`jobs.broker_url`), with the real binary, the
//! machine's RabbitMQ (a vhost of the test's own, deleted after) and
//! PostgreSQL. drover reaches the broker through an in-test TCP proxy, so
//! the test can cut it off and restore it without touching the server.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{register, token_for};
use crate::commerce::{admin_token, expect, send};
use crate::db::PgDatabase;
use crate::helpers::{Drover, Options};
use crate::job_workers::{all_notifications, await_exactly, await_job_process, place_orders};
use crate::proxy::Proxy;

/// A vhost of the test's own on the machine's RabbitMQ, deleted on drop.
struct Vhost(String);

impl Vhost {
    /// `None` (skip) without RabbitMQ; required in CI.
    fn create() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("drover-test-{}-{n}", std::process::id());
        let ctl = |args: &[&str]| Command::new("rabbitmqctl").args(args).output();
        match ctl(&["add_vhost", &name]) {
            Ok(output) if output.status.success() => {}
            other => {
                assert!(std::env::var_os("CI").is_none(), "RabbitMQ is required in CI: {other:?}");
                eprintln!("SKIPPED: rabbitmqctl add_vhost failed: {other:?}");
                return None;
            }
        }
        let granted = ctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]).unwrap();
        assert!(granted.status.success(), "{granted:?}");
        Some(Self(name))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.0]).output();
    }
}

fn broker_url(proxy: &Proxy, vhost: &Vhost) -> String {
    format!("amqp://guest:guest@{}/{}", proxy.addr, vhost.0)
}

const JOB_ENV: [(&str, &str); 5] = [
    ("DROVER_JOBS__POLL_INTERVAL", "50ms"),
    ("DROVER_JOBS__MAX_ATTEMPTS", "2"),
    ("DROVER_JOBS__RETRY_BASE", "50ms"),
    ("DROVER_JOBS__RETRY_MAX", "100ms"),
    ("DROVER_JOBS__WORKERS", "1"),
];

/// `drover jobs ...` against the same database and broker.
fn jobs(db: &str, broker: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("jobs")
        .args(args)
        .args(["--database-url", db])
        .env("DROVER_JOBS__BROKER_URL", broker)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "drover jobs {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: std::process::Output) -> String {
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_through_rabbitmq_survive_an_outage_a_kill_and_reloads() {
    let Some(db) = PgDatabase::create().await else { return };
    let Some(vhost) = Vhost::create() else { return };
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let broker = broker_url(&proxy, &vhost);
    let mut env: Vec<(&str, &str)> = JOB_ENV.to_vec();
    env.push(("DROVER_JOBS__BROKER_URL", &broker));
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        env,
        ..Options::default()
    });
    let addr = drover.addr;
    let first = await_job_process(&drover, |_| true);

    let admin = admin_token(&drover, Some(&db.url)).await;
    let product = json!({"sku": "MQ-1", "name": "Queued", "price": {"amount": 100, "currency": "EUR"}, "stock": 100000});
    let product = expect(&send(addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    let product = product["id"].as_i64().unwrap();
    expect(&register(addr, "mo@example.com", "correct horse", "Mo").await, 201);
    let mo = token_for(addr, "mo@example.com", "correct horse").await;

    // One order: one notification, through RabbitMQ.
    place_orders(&drover, &mo, product, "one", 1, 1).await;
    await_exactly(&drover, &mo, 1).await;
    let status = stdout(jobs(&db.url, &broker, &["status"]));
    assert!(status.contains("transport: rabbitmq"), "{status}");
    let log = drover.log();
    assert!(log.contains("connected to the message broker"), "{log}");

    // The broker cut off: orders still succeed; their events wait in the
    // outbox and are delivered, once each, when it is back.
    proxy.cut();
    place_orders(&drover, &mo, product, "outage", 200, 4).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(all_notifications(&drover, &mo).await.len(), 1, "nothing gets through the cut");
    proxy.restore();
    await_exactly(&drover, &mo, 201).await;

    // kill -9 of the job process while orders flow: what it held
    // unacknowledged goes back to the queue and is applied once.
    let placing = place_orders(&drover, &mo, product, "kill", 100, 4);
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while all_notifications(&drover, &mo).await.len() < 211 {
            assert!(Instant::now() < deadline, "no notification while placing orders");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        crate::helpers::send(first, libc::SIGKILL);
    };
    tokio::join!(placing, killer);
    let second = await_job_process(&drover, |row| row["pid"] != first);
    drover.worker_pids();
    await_exactly(&drover, &mo, 301).await;

    // SIGHUP twice while 1,000 orders flow.
    let placing = place_orders(&drover, &mo, product, "hup", 1000, 8);
    let reloader = async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            crate::helpers::send(drover.pid, libc::SIGHUP);
        }
    };
    tokio::join!(placing, reloader);
    let third = await_job_process(&drover, |row| row["generation"].as_u64() >= Some(2));
    assert_ne!(third, second);
    drover.worker_pids();
    await_exactly(&drover, &mo, 1301).await;
    let status = stdout(jobs(&db.url, &broker, &["status"]));
    assert!(status.contains("outbox: 0 events"), "{status}");

    // A message whose handler keeps failing (its user does not exist yet)
    // is retried, then dead with its error; an unreadable one is dead at
    // once. Once the user exists, `drover jobs retry` replays it, once.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO outbox (event_id, kind, payload, created_at) VALUES \
             ('mq-nobody', 'order.shipped', '{\"kind\":\"order.shipped\",\"order_id\":7,\"user_id\":999999}', 0), \
             ('mq-poison', 'order.placed', 'not json', 0)",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = stdout(jobs(&db.url, &broker, &["dead"]));
        if dead.lines().filter(|l| l.contains("mq-")).count() == 3 {
            break dead;
        }
        assert!(Instant::now() < deadline, "not dead after 20 s: {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The poison event goes to both of order.placed's queues.
    let nobody = dead.lines().find(|l| l.contains("mq-nobody")).unwrap();
    assert!(nobody.starts_with("mq-nobody\tnotifications\t"), "{nobody}");
    assert!(nobody.contains("attempts=2"), "retried once, then dead: {nobody}");
    let poison = dead.lines().find(|l| l.starts_with("mq-poison\tnotifications")).unwrap();
    assert!(poison.contains("attempts=1") && poison.contains("unreadable event"), "{poison}");
    let listed_again = stdout(jobs(&db.url, &broker, &["dead", "--queue", "notifications"]));
    assert_eq!(listed_again.lines().count(), 2, "listing takes nothing away: {listed_again}");
    let depths = stdout(jobs(&db.url, &broker, &["status"]));
    assert!(
        depths.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["notifications", "0", "2"]),
        "{depths}"
    );

    client
        .batch_execute(
            "INSERT INTO users (id, email, name, password_hash) OVERRIDING SYSTEM VALUE \
             VALUES (999999, 'late@example.com', 'Late', 'x')",
        )
        .await
        .unwrap();
    let revived = stdout(jobs(&db.url, &broker, &["retry", "mq-nobody"]));
    assert_eq!(revived.trim(), "revived 1 dead message(s)");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row =
            client.query_one("SELECT count(*) FROM notifications WHERE user_id = 999999", &[]).await.unwrap();
        let count: i64 = row.get(0);
        if count == 1 {
            break;
        }
        assert!(count == 0 && Instant::now() < deadline, "{count} notifications for the revived message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = stdout(jobs(&db.url, &broker, &["dead"]));
    assert!(!dead.contains("mq-nobody"), "{dead}");
    let missing = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["jobs", "retry", "no-such-event", "--database-url", &db.url])
        .env("DROVER_JOBS__BROKER_URL", &broker)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead message with id no-such-event"));
}
