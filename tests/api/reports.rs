//! The orders report through the real binary, on SQLite, PostgreSQL and
//! MariaDB: CSV (RFC 4180, formulas defused) and NDJSON with the same rows,
//! compressed while streaming, admins only; on PostgreSQL, a client that
//! goes away mid-report stops the query, and a worker streaming a report to
//! a slow client keeps serving others.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{register, token_for};
use crate::commerce::{admin_token, expect, expect_error, send};
use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{get, Drover, Options};

/// Orders from a customer whose email a spreadsheet would run as a
/// formula; returns (admin token, customer token, number of orders).
async fn orders(drover: &Drover, database_url: Option<&str>) -> (String, String, usize) {
    let admin = admin_token(drover, database_url).await;
    let product =
        json!({"sku": "REP-1", "name": "Report", "price": {"amount": 250, "currency": "EUR"}, "stock": 100});
    let product = expect(&send(drover.addr, "POST", "/v1/products", &admin, Some(&product), &[]).await, 201);
    let email = "=cmd@example.com";
    expect(&register(drover.addr, email, "correct horse", "Formula").await, 201);
    let customer = token_for(drover.addr, email, "correct horse").await;
    for n in 0..5 {
        let body = json!({"items": [{"product_id": product["id"], "quantity": n + 1}]});
        let key = format!("report-{n}");
        expect(
            &send(drover.addr, "POST", "/v1/orders", &customer, Some(&body), &[("idempotency-key", &key)])
                .await,
            201,
        );
    }
    (admin, customer, 5)
}

async fn report_story(drover: &Drover, database_url: Option<&str>) {
    let (admin, customer, count) = orders(drover, database_url).await;
    let csv =
        send(drover.addr, "GET", "/v1/reports/orders?from=2000-01-01&format=csv", &admin, None, &[]).await;
    assert_eq!(csv.status, 200, "{}", String::from_utf8_lossy(&csv.body));
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8; header=present"));
    assert_eq!(csv.header("content-disposition"), Some("attachment; filename=\"orders-2000-01-01-now.csv\""));
    assert_eq!(csv.header("transfer-encoding"), Some("chunked"), "streamed, not buffered");
    let text = String::from_utf8(csv.body.clone()).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines[0], "id,user_id,email,status,currency,total_amount,lines,created_at");
    assert_eq!(lines.len(), count + 1, "{text}");
    for (n, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[2], "\"'=cmd@example.com\"", "the formula is defused: {line}");
        assert_eq!((cells[3], cells[4]), ("placed", "EUR"), "{line}");
        assert_eq!(cells[5], (250 * (n + 1)).to_string(), "{line}");
        assert_eq!(cells[6], "1", "{line}");
    }

    let ndjson = send(drover.addr, "GET", "/v1/reports/orders?format=ndjson", &admin, None, &[]).await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let rows: Vec<Value> =
        String::from_utf8(ndjson.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), count);
    assert_eq!(rows[0]["email"], "=cmd@example.com", "NDJSON carries the text as it is");
    assert_eq!(rows[4]["total_amount"], 1250);

    // Compressed piece by piece, and the same bytes once decoded.
    let zipped = send(
        drover.addr,
        "GET",
        "/v1/reports/orders?from=2000-01-01",
        &admin,
        None,
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("accept-encoding"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, csv.body);

    // A range with nothing in it is the header alone; a bad one is a 400.
    let empty = send(drover.addr, "GET", "/v1/reports/orders?to=2000-01-01", &admin, None, &[]).await;
    assert_eq!(String::from_utf8(empty.body).unwrap().split_terminator("\r\n").count(), 1);
    let bad = send(drover.addr, "GET", "/v1/reports/orders?format=xlsx", &admin, None, &[]).await;
    assert_eq!(expect_error(&bad, 400, "invalid_request")["error"]["details"][0]["field"], "format");
    let bad = send(drover.addr, "GET", "/v1/reports/orders?from=yesterday", &admin, None, &[]).await;
    expect_error(&bad, 400, "invalid_request");
    let backwards =
        send(drover.addr, "GET", "/v1/reports/orders?from=2020-01-02&to=2020-01-01", &admin, None, &[]).await;
    expect_error(&backwards, 400, "invalid_request");
    // Customers may not read reports; strangers must sign in.
    expect_error(
        &send(drover.addr, "GET", "/v1/reports/orders", &customer, None, &[]).await,
        403,
        "forbidden",
    );
    expect_error(&get(drover.addr, "/v1/reports/orders").await.unwrap(), 401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_sqlite() {
    let drover = Drover::start(2);
    report_story(&drover, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    report_story(&drover, Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    report_story(&drover, Some(&db.url)).await;
}

/// Report queries of this database that PostgreSQL is still running or
/// holding open.
async fn report_backends(client: &tokio_postgres::Client, database: &str) -> i64 {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%FROM orders o JOIN users u%' \
             AND state <> 'idle' AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_report_and_others_are_served_meanwhile() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 1,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    let (admin, _, _) = orders(&drover, Some(&db.url)).await;
    // 200,000 more orders, straight into the table: a report that takes a
    // while to send.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO orders (user_id, status, currency, total_amount, created_at, updated_at) \
             SELECT user_id, status, currency, total_amount, created_at, updated_at \
             FROM orders, generate_series(1, 40000)",
            &[],
        )
        .await
        .unwrap();
    let database: String = client.query_one("SELECT current_database()", &[]).await.unwrap().get(0);

    // A client that reads the start of the report, then stops reading.
    let mut slow = tokio::net::TcpStream::connect(drover.addr).await.unwrap();
    let request =
        format!("GET /v1/reports/orders HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {admin}\r\n\r\n");
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut start = vec![0u8; 4096];
    let n = slow.read(&mut start).await.unwrap();
    assert!(
        String::from_utf8_lossy(&start[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&start[..n])
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while report_backends(&client, &database).await == 0 {
        assert!(Instant::now() < deadline, "the report query never showed in pg_stat_activity");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The one worker keeps answering while the report waits on its client.
    for _ in 0..20 {
        assert_eq!(get(drover.addr, "/healthz").await.unwrap().status, 200);
    }
    assert!(report_backends(&client, &database).await > 0, "still streaming to the slow client");

    // Two reports stream at once per worker; a third waits for one of them.
    let mut second = tokio::net::TcpStream::connect(drover.addr).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    let n = second.read(&mut start).await.unwrap();
    assert!(String::from_utf8_lossy(&start[..n]).starts_with("HTTP/1.1 200"));
    let third = send(drover.addr, "GET", "/v1/reports/orders", &admin, None, &[]).await;
    expect_error(&third, 503, "busy");
    assert_eq!(third.header("retry-after"), Some("1"));
    drop(second);

    // The client goes away: the query stops.
    drop(slow);
    let gone = Instant::now();
    let deadline = gone + Duration::from_secs(10);
    while report_backends(&client, &database).await > 0 {
        assert!(Instant::now() < deadline, "the report query outlived its client by 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("report query gone {} ms after its client", gone.elapsed().as_millis());
}
