//! Plans, subscriptions with proration, and invoices through the real
//! binary, on SQLite, PostgreSQL and MariaDB.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::commerce::{admin_token, customer, expect, expect_error, send};
use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{Drover, Options};

fn time(value: &Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().unwrap()).unwrap()
}

fn show(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn amounts(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap().to_owned(), l["amount"]["amount"].as_i64().unwrap()))
        .collect()
}

async fn plan(addr: SocketAddr, admin: &str, code: &str, amount: i64, currency: &str, interval: &str) {
    let body = json!({"code": code, "name": code.to_uppercase(), "price": {"amount": amount, "currency": currency}, "interval": interval});
    expect(&send(addr, "POST", "/v1/plans", admin, Some(&body), &[]).await, 201);
}

async fn billing_story(drover: &Drover, database_url: Option<&str>) {
    let addr = drover.addr;
    let admin = admin_token(drover, database_url).await;
    let ada = customer(addr, 1).await;
    let bob = customer(addr, 2).await;

    // --- Plans: admin-only, validated, unique codes.
    let basic = json!({"code": "basic", "name": "Basic", "price": {"amount": 3000, "currency": "EUR"}, "interval": "month"});
    expect_error(&send(addr, "POST", "/v1/plans", &ada, Some(&basic), &[]).await, 403, "forbidden");
    let created = expect(&send(addr, "POST", "/v1/plans", &admin, Some(&basic), &[]).await, 201);
    assert_eq!(created["interval"], "month");
    let taken =
        expect_error(&send(addr, "POST", "/v1/plans", &admin, Some(&basic), &[]).await, 409, "conflict");
    assert_eq!(taken["error"]["details"][0]["field"], "code");
    let weekly =
        json!({"code": "w", "name": "W", "price": {"amount": 1, "currency": "EUR"}, "interval": "week"});
    let refused = expect_error(
        &send(addr, "POST", "/v1/plans", &admin, Some(&weekly), &[]).await,
        400,
        "invalid_request",
    );
    assert_eq!(refused["error"]["details"][0]["field"], "interval");
    plan(addr, &admin, "pro", 6000, "EUR", "month").await;
    plan(addr, &admin, "pro-year", 60000, "EUR", "year").await;
    plan(addr, &admin, "dollar", 1000, "USD", "month").await;
    let plans = expect(&send(addr, "GET", "/v1/plans", &bob, None, &[]).await, 200);
    assert_eq!(plans["items"].as_array().unwrap().len(), 4);

    // --- Subscribing: a calendar month from now, invoiced in full.
    let unknown = send(addr, "POST", "/v1/subscriptions", &ada, Some(&json!({"plan": "gold"})), &[]).await;
    assert_eq!(expect_error(&unknown, 400, "invalid_request")["error"]["details"][0]["field"], "plan");
    let subscribed = expect(
        &send(addr, "POST", "/v1/subscriptions", &ada, Some(&json!({"plan": "basic"})), &[]).await,
        201,
    );
    let sub = &subscribed["subscription"];
    let id = sub["id"].as_i64().unwrap();
    assert_eq!((sub["status"].clone(), sub["plan"]["code"].clone()), (json!("active"), json!("basic")));
    let (start, end) = (time(&sub["current_period_start"]), time(&sub["current_period_end"]));
    let days = end.duration_since(start).unwrap().as_secs() / 86_400;
    assert!((28..=31).contains(&days), "a calendar month: {days} days");
    let first = &subscribed["invoice"];
    let year = first["number"].as_str().unwrap()[..4].to_owned();
    assert_eq!(first["number"], format!("{year}-000001"));
    assert_eq!(amounts(first), vec![("charge".to_owned(), 3000)]);
    assert_eq!(first["total"], json!({"amount": 3000, "currency": "EUR"}));

    // --- The worked example: half-way through, 3000 → 6000: credit −1500,
    // charge 3000, total 1500, the period unchanged.
    let half = start + end.duration_since(start).unwrap() / 2;
    let path = format!("/v1/subscriptions/{id}/change-preview?plan=pro&at={}", show(half));
    let preview = expect(&send(addr, "GET", &path, &ada, None, &[]).await, 200);
    assert_eq!(amounts(&preview), vec![("credit".to_owned(), -1500), ("charge".to_owned(), 3000)]);
    assert_eq!(preview["total"], json!({"amount": 1500, "currency": "EUR"}));
    assert_eq!((time(&preview["current_period_start"]), time(&preview["current_period_end"])), (start, end));
    // A change of interval starts a new period at that instant, charged in full.
    let path = format!("/v1/subscriptions/{id}/change-preview?plan=pro-year&at={}", show(half));
    let yearly = expect(&send(addr, "GET", &path, &ada, None, &[]).await, 200);
    assert_eq!(amounts(&yearly), vec![("credit".to_owned(), -1500), ("charge".to_owned(), 60000)]);
    assert_eq!(time(&yearly["current_period_start"]), half);
    // Refusals, each naming what is wrong.
    let outside =
        format!("/v1/subscriptions/{id}/change-preview?plan=pro&at={}", show(end + Duration::from_secs(1)));
    assert_eq!(
        expect_error(&send(addr, "GET", &outside, &ada, None, &[]).await, 400, "invalid_request")["error"]
            ["details"][0]["field"],
        "at"
    );
    let same = format!("/v1/subscriptions/{id}/change-preview?plan=basic");
    assert_eq!(
        expect_error(&send(addr, "GET", &same, &ada, None, &[]).await, 400, "invalid_request")["error"]
            ["details"][0]["field"],
        "plan"
    );
    let bad_at = format!("/v1/subscriptions/{id}/change-preview?plan=pro&at=yesterday");
    assert_eq!(
        expect_error(&send(addr, "GET", &bad_at, &ada, None, &[]).await, 400, "invalid_request")["error"]
            ["details"][0]["field"],
        "at"
    );
    let dollars = format!("/v1/subscriptions/{id}/change-preview?plan=dollar");
    expect_error(&send(addr, "GET", &dollars, &ada, None, &[]).await, 422, "mixed_currencies");
    expect_error(
        &send(addr, "GET", &format!("/v1/subscriptions/{id}/change-preview?plan=pro"), &bob, None, &[]).await,
        404,
        "not_found",
    );
    expect_error(
        &send(addr, "GET", &format!("/v1/subscriptions/{id}"), &bob, None, &[]).await,
        404,
        "not_found",
    );

    // --- Changing now: credit and charge on the next invoice; the period stays.
    let changed = expect(
        &send(
            addr,
            "POST",
            &format!("/v1/subscriptions/{id}/change"),
            &ada,
            Some(&json!({"plan": "pro"})),
            &[],
        )
        .await,
        200,
    );
    assert_eq!(changed["subscription"]["plan"]["code"], "pro");
    assert_eq!(time(&changed["subscription"]["current_period_end"]), end);
    let invoice = &changed["invoice"];
    assert_eq!(invoice["number"], format!("{year}-000002"));
    let lines = amounts(invoice);
    assert_eq!((lines[0].0.as_str(), lines[1].0.as_str()), ("credit", "charge"));
    assert!(lines[0].1 < 0 && -lines[0].1 <= 3000 && lines[1].1 > 0 && lines[1].1 <= 6000, "{lines:?}");
    assert_eq!(invoice["total"]["amount"].as_i64().unwrap(), lines[0].1 + lines[1].1);

    // --- Cancelling: at the period's end (nothing invoiced), then now
    // (a credit for the unused time); then no more changes.
    let later = expect(
        &send(
            addr,
            "POST",
            &format!("/v1/subscriptions/{id}/cancel"),
            &ada,
            Some(&json!({"at_period_end": true})),
            &[],
        )
        .await,
        200,
    );
    assert_eq!(
        (later["subscription"]["cancel_at_period_end"].clone(), later["invoice"].clone()),
        (json!(true), Value::Null)
    );
    let now = expect(
        &send(
            addr,
            "POST",
            &format!("/v1/subscriptions/{id}/cancel"),
            &ada,
            Some(&json!({"at_period_end": false})),
            &[],
        )
        .await,
        200,
    );
    assert_eq!(now["subscription"]["status"], "cancelled");
    assert!(now["subscription"]["cancelled_at"].is_string());
    let credit = amounts(&now["invoice"]);
    assert!(
        credit.len() == 1 && credit[0].0 == "credit" && credit[0].1 < 0 && -credit[0].1 <= 6000,
        "{credit:?}"
    );
    expect_error(
        &send(
            addr,
            "POST",
            &format!("/v1/subscriptions/{id}/cancel"),
            &ada,
            Some(&json!({"at_period_end": false})),
            &[],
        )
        .await,
        409,
        "invalid_transition",
    );
    expect_error(
        &send(
            addr,
            "POST",
            &format!("/v1/subscriptions/{id}/change"),
            &ada,
            Some(&json!({"plan": "basic"})),
            &[],
        )
        .await,
        409,
        "invalid_transition",
    );

    // --- Invoice numbers stay gap-free when many are issued at once.
    let mut racing = Vec::new();
    for n in 0..8 {
        let token = if n % 2 == 0 { ada.clone() } else { bob.clone() };
        racing.push(tokio::spawn(async move {
            send(addr, "POST", "/v1/subscriptions", &token, Some(&json!({"plan": "basic"})), &[]).await
        }));
    }
    let mut numbers = vec![1, 2, 3];
    for task in racing {
        let body = expect(&task.await.unwrap(), 201);
        let number = body["invoice"]["number"].as_str().unwrap();
        numbers.push(number[5..].parse::<u32>().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=11).collect::<Vec<_>>(), "sequential, without gaps or repeats");

    // --- Invoices: your own, newest first; others' are not found.
    let own = expect(&send(addr, "GET", "/v1/invoices?limit=3", &ada, None, &[]).await, 200);
    assert_eq!(own["items"].as_array().unwrap().len(), 3);
    let first_id = first["id"].as_i64().unwrap();
    let read = expect(&send(addr, "GET", &format!("/v1/invoices/{first_id}"), &ada, None, &[]).await, 200);
    assert_eq!(read["number"], first["number"]);
    assert_eq!(read["lines"], first["lines"]);
    expect_error(
        &send(addr, "GET", &format!("/v1/invoices/{first_id}"), &bob, None, &[]).await,
        404,
        "not_found",
    );
    expect(&send(addr, "GET", &format!("/v1/invoices/{first_id}"), &admin, None, &[]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_on_sqlite() {
    let drover = Drover::start(2);
    billing_story(&drover, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    billing_story(&drover, Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    billing_story(&drover, Some(&db.url)).await;
}
