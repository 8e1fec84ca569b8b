//! The TechEmpower database tests through the real binary, on SQLite,
//! PostgreSQL and MariaDB: 503 until `drover bench setup` has run, then the
//! shapes the benchmark's rules ask for, and updates that persist.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;
use sqlx::Connection;

use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{get, Drover, Options, Response};

/// Where the test reads the world table itself.
enum Direct {
    Sqlite(String),
    Postgres(String),
    MySql(String),
}

impl Direct {
    /// `randomnumber` of each of `ids`.
    async fn numbers(&self, ids: &[i64]) -> HashMap<i64, i64> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT id, randomnumber FROM world WHERE id IN ({list})");
        match self {
            Direct::Sqlite(url) => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                let rows: Vec<(i64, i64)> = sqlx::query_as(&sql).fetch_all(&mut conn).await.unwrap();
                rows.into_iter().collect()
            }
            Direct::MySql(url) => {
                let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
                let rows: Vec<(i32, i32)> = sqlx::query_as(&sql).fetch_all(&mut conn).await.unwrap();
                rows.into_iter().map(|(a, b)| (i64::from(a), i64::from(b))).collect()
            }
            Direct::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let rows = client.query(&sql, &[]).await.unwrap();
                rows.iter().map(|r| (i64::from(r.get::<_, i32>(0)), i64::from(r.get::<_, i32>(1)))).collect()
            }
        }
    }
}

fn array(response: &Response, len: usize) -> Vec<Value> {
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let items = response.json().as_array().unwrap().clone();
    assert_eq!(items.len(), len);
    for item in &items {
        let (id, n) = (item["id"].as_i64().unwrap(), item["randomNumber"].as_i64().unwrap());
        assert!((1..=10_000).contains(&id) && (1..=10_000).contains(&n), "{item}");
        assert_eq!(item.as_object().unwrap().len(), 2, "{item}");
    }
    items
}

async fn bench_story(drover: &Drover, database_url: Option<&str>, direct: Direct) {
    let addr = drover.addr;
    // Not set up yet: 503 naming the command.
    let missing = get(addr, "/bench/db").await.unwrap();
    assert_eq!(missing.status, 503);
    let body = missing.json();
    assert_eq!(body["error"]["code"], "not_set_up");
    assert!(body["error"]["message"].as_str().unwrap().contains("drover bench setup"), "{body}");

    // Set up, twice (the second run keeps the complete tables).
    for _ in 0..2 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
        command.args(["bench", "setup", "--data-dir"]).arg(drover.dir.path().join("data"));
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let output = command.env_remove("RUST_LOG").output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    let one = get(addr, "/bench/db").await.unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.header("content-type"), Some("application/json"));
    let world = one.json();
    assert!(world["id"].as_i64().is_some() && world["randomNumber"].as_i64().is_some(), "{world}");

    array(&get(addr, "/bench/queries?queries=20").await.unwrap(), 20);
    for (query, n) in
        [("", 1), ("?queries=foo", 1), ("?queries=0", 1), ("?queries=-3", 1), ("?queries=501", 500)]
    {
        array(&get(addr, &format!("/bench/queries{query}")).await.unwrap(), n);
    }
    array(&get(addr, "/bench/cached-queries?count=10").await.unwrap(), 10);
    array(&get(addr, "/bench/cached-queries?count=600").await.unwrap(), 500);

    // Fortunes: every row plus one, sorted, escaped, as UTF-8 HTML.
    let page = get(addr, "/bench/fortunes").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert_eq!(html.matches("<tr>").count(), 14, "a header row and 13 fortunes: {html}");
    assert!(html.contains("Additional fortune added at request time."));
    assert!(html.contains("フレームワークのベンチマーク"));
    assert!(!html.contains("<script>") && html.contains("script&#62;"), "{html}");
    let first = html.find("<td>11</td>").unwrap();
    let last = html.find("<td>12</td>").unwrap();
    assert!(first < last, "sorted by message: '<script>' before the Japanese line");

    // Updates: answered with the new numbers, and those are in the table.
    let updated = array(&get(addr, "/bench/updates?queries=20").await.unwrap(), 20);
    let mut expected = HashMap::new();
    for item in &updated {
        expected.insert(item["id"].as_i64().unwrap(), item["randomNumber"].as_i64().unwrap());
    }
    let ids: Vec<i64> = expected.keys().copied().collect();
    assert_eq!(direct.numbers(&ids).await, expected);
    array(&get(addr, "/bench/updates?queries=foo").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn techempower_database_tests_on_sqlite() {
    let drover = Drover::start(2);
    let file = format!("sqlite://{}", drover.dir.path().join("data").join("drover.db").display());
    bench_story(&drover, None, Direct::Sqlite(file)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn techempower_database_tests_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    bench_story(&drover, Some(&db.url), Direct::Postgres(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn techempower_database_tests_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    bench_story(&drover, Some(&db.url), Direct::MySql(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_tests_are_not_routed_when_bench_is_off() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_BENCH__ENABLED", "false")],
        ..Options::default()
    });
    assert_eq!(get(drover.addr, "/bench/db").await.unwrap().status, 404);
}
