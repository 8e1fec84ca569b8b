//! Jobs through the real binaries, on SQLite, PostgreSQL and MariaDB: the
//! API writes events with its changes, a `drover jobs work` process relays
//! and consumes them, and the notifications handler (the same service the
//! API reads) tells each user about their orders and invoices, once per
//! event however often it is delivered. A message that keeps failing is
//! retried, then dead; `drover jobs dead`, `status` and `retry` see it.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::auth::{register, token_for};
use crate::commerce::{admin_token, expect, send};
use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{Drover, Options};

/// Where the test reaches the database directly.
enum Direct {
    Sqlite(PathBuf),
    Postgres(String),
    MySql(String),
}

impl Direct {
    async fn execute(&self, statement: &str) {
        use sqlx::Connection;
        match self {
            Direct::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
            }
            Direct::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.batch_execute(statement).await.unwrap();
            }
            Direct::MySql(url) => {
                let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
                sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// `drover jobs ...` on the server's data directory and database, with
/// `jobs.toml` from the test's directory when there is one.
fn jobs_command(drover: &Drover, url: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    command.arg("jobs").args(args).arg("--data-dir").arg(drover.dir.path().join("data"));
    let config = drover.dir.path().join("jobs.toml");
    if config.exists() {
        command.arg("--config").arg(config);
    }
    if let Some(url) = url {
        command.args(["--database-url", url]);
    }
    command
        .env_remove("RUST_LOG")
        .env("DROVER_JOBS__POLL_INTERVAL", "50ms")
        .env("DROVER_JOBS__MAX_ATTEMPTS", "2")
        .env("DROVER_JOBS__RETRY_BASE", "50ms")
        .env("DROVER_JOBS__RETRY_MAX", "100ms");
    command
}

fn jobs(drover: &Drover, url: Option<&str>, args: &[&str]) -> Output {
    let output = jobs_command(drover, url, args).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "drover jobs {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A `drover jobs work` process, stopped by its pid when dropped.
struct Worker(Child);

impl Worker {
    fn start(drover: &Drover, url: Option<&str>) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(drover.dir.path().join("jobs.log"))
            .unwrap();
        let child = jobs_command(drover, url, &["work"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Worker(child)
    }

    /// SIGTERM: it finishes the message in hand and exits 0.
    fn stop(mut self) {
        crate::helpers::send(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "drover jobs work exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "drover jobs work ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn notifications(drover: &Drover, token: &str, query: &str) -> Value {
    expect(&send(drover.addr, "GET", &format!("/v1/notifications{query}"), token, None, &[]).await, 200)
}

/// Waits until the user has `count` notifications; returns their messages,
/// newest first.
async fn await_notifications(drover: &Drover, token: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = notifications(drover, token, "?limit=100").await;
        let items: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["message"].as_str().unwrap().to_owned())
            .collect();
        if items.len() >= count {
            return items;
        }
        assert!(Instant::now() < deadline, "{} of {count} notifications after 15 s: {items:?}", items.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The inventory summary's units ordered, in EUR.
async fn units_ordered(drover: &Drover, admin: &str) -> i64 {
    let summary = expect(&send(drover.addr, "GET", "/v1/inventory/summary", admin, None, &[]).await, 200);
    summary["currencies"][0]["units_ordered"].as_i64().unwrap()
}

async fn jobs_story(drover: &Drover, url: Option<&str>, direct: Direct) {
    let addr = drover.addr;
    let admin = admin_token(drover, url).await;
    let product =
        json!({"sku": "JOB-1", "name": "Job", "price": {"amount": 1250, "currency": "EUR"}, "stock": 10});
    let product = expect(&send(addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    let plan = json!({"code": "basic", "name": "Basic", "price": {"amount": 3000, "currency": "EUR"}, "interval": "month"});
    expect(&send(addr, "POST", "/v1/plans", &admin, Some(&plan), &[]).await, 201);
    expect(&register(addr, "ada@example.com", "correct horse", "Ada").await, 201);
    let ada = token_for(addr, "ada@example.com", "correct horse").await;
    expect(&register(addr, "bob@example.com", "correct horse", "Bob").await, 201);
    let bob = token_for(addr, "bob@example.com", "correct horse").await;

    // Changes made while no job process runs: their events wait in the outbox.
    let items = json!({"items": [{"product_id": product["id"], "quantity": 2}]});
    let key = |key| [("idempotency-key", key)];
    let first = expect(&send(addr, "POST", "/v1/orders", &ada, Some(&items), &key("first")).await, 201);
    let second = expect(&send(addr, "POST", "/v1/orders", &ada, Some(&items), &key("second")).await, 201);
    let path = |order: &Value, action: &str| format!("/v1/orders/{}/{action}", order["id"]);
    expect(&send(addr, "POST", &path(&first, "pay"), &admin, None, &[]).await, 200);
    expect(&send(addr, "POST", &path(&first, "ship"), &admin, None, &[]).await, 200);
    expect(&send(addr, "POST", &path(&second, "cancel"), &ada, None, &[]).await, 200);
    let subscribed = expect(
        &send(addr, "POST", "/v1/subscriptions", &ada, Some(&json!({"plan": "basic"})), &[]).await,
        201,
    );
    // An order that fails (out of stock) writes no event.
    let too_many = json!({"items": [{"product_id": product["id"], "quantity": 1000}]});
    let refused =
        send(addr, "POST", "/v1/orders", &ada, Some(&too_many), &[("idempotency-key", "third")]).await;
    assert_eq!(refused.status, 409);
    let status = String::from_utf8(jobs(drover, url, &["status"]).stdout).unwrap();
    assert!(status.contains("outbox: 6 events not yet published"), "{status}");
    assert!(notifications(drover, &ada, "").await["items"].as_array().unwrap().is_empty());

    let worker = Worker::start(drover, url);
    let messages = await_notifications(drover, &ada, 5).await;
    let first_id = first["id"].as_i64().unwrap();
    let second_id = second["id"].as_i64().unwrap();
    assert_eq!(messages.len(), 5, "placed twice, shipped, cancelled, invoiced: {messages:?}");
    assert!(
        messages[0].starts_with("Invoice ") && messages[0].ends_with("was issued: 30.00 EUR."),
        "{messages:?}"
    );
    assert_eq!(messages[1], format!("Your order {second_id} was cancelled."));
    assert_eq!(messages[2], format!("Your order {first_id} has shipped."));
    assert_eq!(messages[3], format!("Your order {second_id} was placed: 25.00 EUR."));
    assert_eq!(messages[4], format!("Your order {first_id} was placed: 25.00 EUR."));
    assert!(
        notifications(drover, &bob, "").await["items"].as_array().unwrap().is_empty(),
        "Bob sees none of Ada's"
    );
    // Newest first, a page at a time.
    let page = notifications(drover, &ada, "?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = notifications(drover, &ada, &format!("?limit=10&cursor={next}")).await;
    assert_eq!(rest["items"][0]["message"], messages[2]);
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert_eq!(rest["items"][2]["kind"], "order.placed");
    // The sales handler counted both orders' units for the inventory summary.
    let deadline = Instant::now() + Duration::from_secs(15);
    while units_ordered(drover, &admin).await != 4 {
        assert!(Instant::now() < deadline, "the sales counters did not reach 4 units");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every event published again, as after a crash between publishing and
    // marking: delivered twice, applied once.
    direct.execute("UPDATE outbox SET published_at = NULL").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !String::from_utf8(jobs(drover, url, &["status"]).stdout).unwrap().contains("outbox: 0 events") {
        assert!(Instant::now() < deadline, "the outbox was not relayed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = String::from_utf8(jobs(drover, url, &["status"]).stdout).unwrap();
        let idle = |queue: &str| {
            status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [queue, "0", "0"])
        };
        if idle("notifications") && idle("sales") {
            break;
        }
        assert!(Instant::now() < deadline, "the redelivered messages were not handled: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(await_notifications(drover, &ada, 5).await.len(), 5, "a redelivered event is applied once");
    assert_eq!(units_ordered(drover, &admin).await, 4, "and counted once");

    // A message that cannot be read is dead at once; one whose handler
    // keeps failing (its user does not exist) is retried, then dead.
    direct
        .execute(
            "INSERT INTO job_messages (queue, event_id, kind, payload, available_at, created_at) VALUES \
             ('notifications', 'poison', 'order.placed', 'not json', 0, 0), \
             ('notifications', 'nobody', 'order.shipped', '{\"kind\":\"order.shipped\",\"order_id\":1,\"user_id\":999999}', 0, 0)",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let dead = String::from_utf8(jobs(drover, url, &["dead"]).stdout).unwrap();
        if dead.lines().count() == 2 {
            break dead;
        }
        assert!(Instant::now() < deadline, "not both dead after 15 s: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let poison = dead.lines().find(|l| l.contains("\tpoison\t")).unwrap();
    assert!(poison.contains("attempts=1") && poison.contains("unreadable event"), "{poison}");
    let nobody = dead.lines().find(|l| l.contains("\tnobody\t")).unwrap();
    assert!(nobody.contains("attempts=2"), "retried once, then dead: {nobody}");
    let status = String::from_utf8(jobs(drover, url, &["status"]).stdout).unwrap();
    assert!(
        status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["notifications", "0", "2"]),
        "{status}"
    );
    let only = String::from_utf8(jobs(drover, url, &["dead", "--queue", "other"]).stdout).unwrap();
    assert_eq!(only.trim(), "no dead messages");

    // Revived, it is handled again (and dies again: nothing changed).
    let id = poison.split('\t').next().unwrap();
    let revived = String::from_utf8(jobs(drover, url, &["retry", id]).stdout).unwrap();
    assert_eq!(revived.trim(), "revived 1 dead message(s)");
    let missing = jobs_command(drover, url, &["retry", "999999"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead message with id 999999"));

    renewal_story(drover, url, &direct, &ada, &subscribed["subscription"]).await;
    worker.stop();
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `subscriptions.renew`, run as the schedule runs it (through its lease):
/// a subscription whose period ended 44 days ago, anchored a day before
/// that, is two periods behind (a month after the anchor is 28 to 31 days):
/// it gets both, each with an invoice charging its plan, and its period
/// now holds today. Run again, nothing is due. One cancelled at the end of
/// its period ends instead, without an invoice.
async fn renewal_story(drover: &Drover, url: Option<&str>, direct: &Direct, ada: &str, subscription: &Value) {
    let addr = drover.addr;
    let id = subscription["id"].as_i64().unwrap();
    let day = 86_400_000;
    let now = millis(SystemTime::now());
    let (anchor, end) = (now - 45 * day, now - 44 * day);
    direct
        .execute(&format!(
            "UPDATE subscriptions SET period_anchor = {anchor}, period_start = {anchor}, period_end = {end} WHERE id = {id}"
        ))
        .await;
    let invoices = |page: Value| page["items"].as_array().unwrap().clone();
    let before = invoices(expect(&send(addr, "GET", "/v1/invoices?limit=100", ada, None, &[]).await, 200));
    let run = String::from_utf8(jobs(drover, url, &["run", "subscriptions.renew"]).stdout).unwrap();
    assert_eq!(run.trim(), "subscriptions.renew: ok (2 periods renewed, 0 subscriptions ended)", "{run}");
    let path = format!("/v1/subscriptions/{id}");
    let renewed = expect(&send(addr, "GET", &path, ada, None, &[]).await, 200);
    let period = |s: &Value, key: &str| millis(humantime::parse_rfc3339(s[key].as_str().unwrap()).unwrap());
    let (start, new_end) = (period(&renewed, "current_period_start"), period(&renewed, "current_period_end"));
    assert!(start <= now && new_end > now, "the current period holds today: {renewed}");
    assert!(new_end - start >= 28 * day && new_end - start <= 31 * day, "a month: {renewed}");
    assert_eq!(renewed["status"], "active");
    let after = invoices(expect(&send(addr, "GET", "/v1/invoices?limit=100", ada, None, &[]).await, 200));
    assert_eq!(after.len(), before.len() + 2, "an invoice per period");
    let newest = &after[0];
    assert_eq!(newest["total"], json!({"amount": 3000, "currency": "EUR"}), "{newest}");
    assert_eq!(newest["lines"][0]["kind"], "charge");
    assert_eq!(period(&newest["lines"][0], "period_start"), start, "{newest}");
    assert_eq!(period(&newest["lines"][0], "period_end"), new_end, "{newest}");
    // Both invoices reach the user as notifications, through the queue.
    let told = await_notifications(drover, ada, 7).await;
    assert!(told[0].starts_with("Invoice ") && told[1].starts_with("Invoice "), "{told:?}");
    let again = String::from_utf8(jobs(drover, url, &["run", "subscriptions.renew"]).stdout).unwrap();
    assert_eq!(again.trim(), "subscriptions.renew: ok (0 periods renewed, 0 subscriptions ended)");

    let cancel = json!({"at_period_end": true});
    expect(&send(addr, "POST", &format!("{path}/cancel"), ada, Some(&cancel), &[]).await, 200);
    direct.execute(&format!("UPDATE subscriptions SET period_end = {} WHERE id = {id}", now - day)).await;
    let ended = String::from_utf8(jobs(drover, url, &["run", "subscriptions.renew"]).stdout).unwrap();
    assert_eq!(ended.trim(), "subscriptions.renew: ok (0 periods renewed, 1 subscriptions ended)");
    let cancelled = expect(&send(addr, "GET", &path, ada, None, &[]).await, 200);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(period(&cancelled, "cancelled_at"), now - day);
    let last = invoices(expect(&send(addr, "GET", "/v1/invoices?limit=100", ada, None, &[]).await, 200));
    assert_eq!(last.len(), after.len(), "ending issues no invoice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_sqlite() {
    let drover = Drover::start(1);
    let db = drover.dir.path().join("data").join("drover.db");
    jobs_story(&drover, None, Direct::Sqlite(db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    jobs_story(&drover, Some(&db.url), Direct::Postgres(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    jobs_story(&drover, Some(&db.url), Direct::MySql(db.url.clone())).await;
}

/// Two job processes and a schedule every second: unpaid orders past
/// their time are cancelled (stock back, the customer told), and no tick
/// runs twice. A daily schedule, whose earlier ticks were all missed, runs
/// once, not once per missed tick. A task runs on demand.
async fn schedule_story(drover: &Drover, url: Option<&str>) {
    let addr = drover.addr;
    std::fs::write(
        drover.dir.path().join("jobs.toml"),
        "[jobs.schedule]\n\"orders.expire\" = \"* * * * * *\"\n\"outbox.prune\" = \"0 0 * * *\"\n\
         [orders]\nunpaid_ttl = \"1s\"\n",
    )
    .unwrap();
    let admin = admin_token(drover, url).await;
    let product =
        json!({"sku": "EXP-1", "name": "Expiring", "price": {"amount": 100, "currency": "EUR"}, "stock": 5});
    let product = expect(&send(addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    expect(&register(addr, "cy@example.com", "correct horse", "Cy").await, 201);
    let cy = token_for(addr, "cy@example.com", "correct horse").await;
    let items = json!({"items": [{"product_id": product["id"], "quantity": 5}]});
    let order = expect(
        &send(addr, "POST", "/v1/orders", &cy, Some(&items), &[("idempotency-key", "unpaid")]).await,
        201,
    );
    let order_path = format!("/v1/orders/{}", order["id"]);

    let (one, two) = (Worker::start(drover, url), Worker::start(drover, url));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = expect(&send(addr, "GET", &order_path, &cy, None, &[]).await, 200);
        if current["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "the unpaid order was not cancelled: {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let product_path = format!("/v1/products/{}", product["id"]);
    let stock = expect(&send(addr, "GET", &product_path, &admin, None, &[]).await, 200);
    assert_eq!(stock["stock"]["available"], 5, "its stock is back: {stock}");
    let told = await_notifications(drover, &cy, 2).await;
    assert_eq!(told[0], format!("Your order {} was cancelled.", order["id"]));

    // A few more ticks with both processes running.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = String::from_utf8(jobs(drover, url, &["runs", "--task", "orders.expire"]).stdout).unwrap();
    let ticks: Vec<&str> = runs.lines().map(|l| l.split('\t').nth(2).unwrap()).collect();
    assert!(ticks.len() >= 3, "a run per second: {runs}");
    let distinct: std::collections::HashSet<&&str> = ticks.iter().collect();
    assert_eq!(distinct.len(), ticks.len(), "no tick ran twice across the two processes: {runs}");
    assert!(runs.lines().any(|l| l.contains("1 unpaid orders cancelled")), "{runs}");
    let pruned = String::from_utf8(jobs(drover, url, &["runs", "--task", "outbox.prune"]).stdout).unwrap();
    assert_eq!(pruned.lines().count(), 1, "today's tick ran once, not once per missed tick: {pruned}");
    one.stop();
    two.stop();

    let now = String::from_utf8(jobs(drover, url, &["run", "outbox.prune"]).stdout).unwrap();
    assert!(now.starts_with("outbox.prune: ok ("), "{now}");
    let unknown = jobs_command(drover, url, &["run", "backups"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not a task"));
    let status = String::from_utf8(jobs(drover, url, &["status"]).stdout).unwrap();
    let expire = status.lines().find(|l| l.starts_with("orders.expire")).unwrap();
    assert!(!expire.contains("never"), "a last and a next tick: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_on_sqlite() {
    let drover = Drover::start(1);
    schedule_story(&drover, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    schedule_story(&drover, Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    schedule_story(&drover, Some(&db.url)).await;
}
