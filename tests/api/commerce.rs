//! Catalog, inventory and orders through the real binary, on SQLite,
//! PostgreSQL and MariaDB: every route, status and error, and the no-oversell
//! guarantee under concurrent orders from many users over both workers.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::auth::{call, register, token_for};
use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{Conn, Drover, Options, Response};

/// Sends one request with a bearer token, a JSON body and extra headers.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(head.as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

async fn order(addr: SocketAddr, token: &str, key: &str, items: Value) -> Response {
    send(addr, "POST", "/v1/orders", token, Some(&json!({ "items": items })), &[("idempotency-key", key)])
        .await
}

pub fn expect(response: &Response, status: u16) -> Value {
    let body = if response.body.is_empty() { Value::Null } else { response.json() };
    assert_eq!(response.status, status, "{body}");
    body
}

pub fn expect_error(response: &Response, status: u16, code: &str) -> Value {
    let body = expect(response, status);
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// Makes the first administrator through the CLI (the documented way) and
/// returns a token for them.
pub async fn admin_token(drover: &Drover, database_url: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    command
        .args([
            "user",
            "create",
            "--email",
            "root@example.com",
            "--name",
            "Root",
            "--admin",
            "--password-stdin",
        ])
        .arg("--data-dir")
        .arg(drover.dir.path().join("data"));
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let mut child = command
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"root password\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    token_for(drover.addr, "root@example.com", "root password").await
}

pub async fn customer(addr: SocketAddr, n: usize) -> String {
    let email = format!("customer{n}@example.com");
    expect(&register(addr, &email, "correct horse", &format!("Customer {n}")).await, 201);
    token_for(addr, &email, "correct horse").await
}

async fn create_product(
    addr: SocketAddr,
    admin: &str,
    sku: &str,
    amount: i64,
    currency: &str,
    stock: i64,
) -> i64 {
    let body = json!({"sku": sku, "name": format!("Product {sku}"), "price": {"amount": amount, "currency": currency}, "stock": stock});
    let created = expect(&send(addr, "POST", "/v1/products", admin, Some(&body), &[]).await, 201);
    created["id"].as_i64().unwrap()
}

async fn stock(addr: SocketAddr, token: &str, id: i64) -> Value {
    expect(&send(addr, "GET", &format!("/v1/products/{id}"), token, None, &[]).await, 200)["stock"].clone()
}

/// Every route and error of the catalog and of orders, on one backend.
async fn commerce_story(drover: &Drover, database_url: Option<&str>) {
    let addr = drover.addr;
    let admin = admin_token(drover, database_url).await;
    let ada = customer(addr, 1).await;
    let bob = customer(addr, 2).await;

    // --- Catalog: admin-only writes, validation naming fields, SKU unique.
    let body =
        json!({"sku": "MUG-1", "name": "Mug", "price": {"amount": 1999, "currency": "EUR"}, "stock": 10});
    expect_error(&send(addr, "POST", "/v1/products", &ada, Some(&body), &[]).await, 403, "forbidden");
    let created = expect(&send(addr, "POST", "/v1/products", &admin, Some(&body), &[]).await, 201);
    let mug = created["id"].as_i64().unwrap();
    assert_eq!(created["price"], json!({"amount": 1999, "currency": "EUR"}));
    assert_eq!(created["stock"], json!({"on_hand": 10, "reserved": 0, "available": 10}));
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'), "{created}");
    let taken =
        expect_error(&send(addr, "POST", "/v1/products", &admin, Some(&body), &[]).await, 409, "conflict");
    assert_eq!(taken["error"]["details"][0]["field"], "sku");
    for (bad, field) in [
        (json!({"sku": "X-1", "name": "X", "price": {"amount": 1, "currency": "EURO"}}), "price.currency"),
        (json!({"sku": "X-1", "name": "X", "price": {"amount": -1, "currency": "EUR"}}), "price.amount"),
        (json!({"sku": "bad sku", "name": "X", "price": {"amount": 1, "currency": "EUR"}}), "sku"),
        (json!({"sku": "X-1", "name": " ", "price": {"amount": 1, "currency": "EUR"}}), "name"),
        (json!({"sku": "X-1", "name": "X", "price": {"amount": 1, "currency": "EUR"}, "stock": -1}), "stock"),
    ] {
        let refused = expect_error(
            &send(addr, "POST", "/v1/products", &admin, Some(&bad), &[]).await,
            400,
            "invalid_request",
        );
        assert_eq!(refused["error"]["details"][0]["field"], field, "{bad}");
    }
    let cup = create_product(addr, &admin, "CUP-1", 500, "EUR", 3).await;
    let hat = create_product(addr, &admin, "HAT-1", 2500, "USD", 5).await;

    // PATCH (admin): name and price.
    let patch = json!({"name": "Big mug", "price": {"amount": 2499, "currency": "EUR"}});
    expect_error(
        &send(addr, "PATCH", &format!("/v1/products/{mug}"), &ada, Some(&patch), &[]).await,
        403,
        "forbidden",
    );
    let patched =
        expect(&send(addr, "PATCH", &format!("/v1/products/{mug}"), &admin, Some(&patch), &[]).await, 200);
    assert_eq!(
        (patched["name"].clone(), patched["price"]["amount"].clone()),
        (json!("Big mug"), json!(2499))
    );
    expect_error(
        &send(addr, "PATCH", "/v1/products/999999", &admin, Some(&patch), &[]).await,
        404,
        "not_found",
    );
    let clash =
        send(addr, "PATCH", &format!("/v1/products/{mug}"), &admin, Some(&json!({"sku": "CUP-1"})), &[])
            .await;
    assert_eq!(expect_error(&clash, 409, "conflict")["error"]["details"][0]["field"], "sku");
    let empty = send(addr, "PATCH", &format!("/v1/products/{mug}"), &admin, Some(&json!({})), &[]).await;
    expect_error(&empty, 400, "invalid_request");
    expect_error(&send(addr, "GET", "/v1/products/999999", &ada, None, &[]).await, 404, "not_found");
    expect_error(&send(addr, "GET", "/v1/products/abc", &ada, None, &[]).await, 400, "invalid_request");

    // Listing: keyset pages, sparse fields pushed down, SKU filter.
    let first = expect(&send(addr, "GET", "/v1/products?limit=2", &ada, None, &[]).await, 200);
    let ids: Vec<i64> =
        first["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![mug, cup]);
    let next = first["next"].as_str().unwrap().to_owned();
    let second = expect(
        &send(addr, "GET", &format!("/v1/products?limit=2&cursor={next}"), &ada, None, &[]).await,
        200,
    );
    assert_eq!(second["items"][0]["id"], hat);
    assert_eq!(second["next"], Value::Null);
    let sparse =
        expect(&send(addr, "GET", "/v1/products?fields=sku,stock&sku=CUP-1", &ada, None, &[]).await, 200);
    assert_eq!(
        sparse["items"],
        json!([{"sku": "CUP-1", "stock": {"on_hand": 3, "reserved": 0, "available": 3}}])
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nope", "cursor"),
        ("fields=price,bogus", "fields"),
    ] {
        let refused = expect_error(
            &send(addr, "GET", &format!("/v1/products?{query}"), &ada, None, &[]).await,
            400,
            "invalid_request",
        );
        assert_eq!(refused["error"]["details"][0]["field"], field, "{query}");
    }
    expect_error(&call(addr, "GET", "/v1/products", None, None).await, 401, "unauthenticated");
    let one =
        expect(&send(addr, "GET", &format!("/v1/products/{cup}?fields=name"), &bob, None, &[]).await, 200);
    assert_eq!(one, json!({"name": "Product CUP-1"}));

    // --- Orders: the Idempotency-Key is required and replays.
    let items = json!([{"product_id": mug, "quantity": 2}, {"product_id": cup, "quantity": 1}]);
    let no_key = send(addr, "POST", "/v1/orders", &ada, Some(&json!({ "items": items })), &[]).await;
    assert_eq!(
        expect_error(&no_key, 400, "invalid_request")["error"]["details"][0]["field"],
        "idempotency-key"
    );
    let placed = order(addr, &ada, "ada-1", items.clone()).await;
    let placed_body = expect(&placed, 201);
    let ada_order = placed_body["id"].as_i64().unwrap();
    assert_eq!(placed_body["status"], "placed");
    assert_eq!(placed_body["total"], json!({"amount": 2 * 2499 + 500, "currency": "EUR"}));
    assert_eq!(placed_body["lines"][0]["unit_price"], json!({"amount": 2499, "currency": "EUR"}));
    // The same key and request: the same answer, byte for byte, no second order.
    let again = order(addr, &ada, "ada-1", items.clone()).await;
    assert_eq!((again.status, again.body.clone()), (201, placed.body.clone()));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The same items in another order and spacing are the same request.
    let reordered = json!([{"quantity": 1, "product_id": cup}, {"product_id": mug, "quantity": 2}]);
    assert_eq!(order(addr, &ada, "ada-1", reordered).await.body, placed.body);
    assert_eq!(stock(addr, &ada, mug).await, json!({"on_hand": 10, "reserved": 2, "available": 8}));
    // The same key for another request; the same key for another user is theirs.
    let reused = order(addr, &ada, "ada-1", json!([{"product_id": mug, "quantity": 1}])).await;
    expect_error(&reused, 422, "idempotency_key_reused");
    expect(&order(addr, &bob, "ada-1", json!([{"product_id": cup, "quantity": 1}])).await, 201);
    // Mixed currencies, unknown products, bad lines.
    let mixed = order(
        addr,
        &ada,
        "ada-2",
        json!([{"product_id": mug, "quantity": 1}, {"product_id": hat, "quantity": 1}]),
    )
    .await;
    expect_error(&mixed, 422, "mixed_currencies");
    for (items, why) in [
        (json!([{"product_id": 999999, "quantity": 1}]), "unknown product"),
        (json!([]), "no lines"),
        (json!([{"product_id": mug, "quantity": 0}]), "zero quantity"),
        (json!([{"product_id": mug, "quantity": 1}, {"product_id": mug, "quantity": 1}]), "a product twice"),
    ] {
        let refused = expect_error(
            &order(addr, &ada, &format!("bad-{}", why.replace(' ', "-")), items).await,
            400,
            "invalid_request",
        );
        assert!(
            refused["error"]["details"][0]["field"].as_str().unwrap().starts_with("items"),
            "{why}: {refused}"
        );
    }
    // Not enough stock: nothing reserved, every short product named, and
    // the refusal is what the key replays.
    let short = order(
        addr,
        &ada,
        "ada-3",
        json!([{"product_id": mug, "quantity": 1}, {"product_id": cup, "quantity": 5}]),
    )
    .await;
    let short_body = expect_error(&short, 409, "out_of_stock");
    assert!(short_body["error"]["message"].as_str().unwrap().contains(&cup.to_string()), "{short_body}");
    assert_eq!(stock(addr, &ada, mug).await["reserved"], 2);
    let short_again = order(
        addr,
        &ada,
        "ada-3",
        json!([{"product_id": mug, "quantity": 1}, {"product_id": cup, "quantity": 5}]),
    )
    .await;
    assert_eq!((short_again.status, short_again.body.clone()), (409, short.body.clone()));

    // --- Lifecycle and visibility.
    let path = |id: i64, action: &str| format!("/v1/orders/{id}/{action}");
    expect_error(
        &send(addr, "GET", &format!("/v1/orders/{ada_order}"), &bob, None, &[]).await,
        404,
        "not_found",
    );
    expect_error(&send(addr, "GET", "/v1/orders/999999", &admin, None, &[]).await, 404, "not_found");
    expect_error(&call(addr, "GET", "/v1/orders", None, None).await, 401, "unauthenticated");
    expect(&send(addr, "GET", &format!("/v1/orders/{ada_order}"), &admin, None, &[]).await, 200);
    expect_error(&send(addr, "POST", &path(ada_order, "cancel"), &bob, None, &[]).await, 404, "not_found");
    expect_error(&send(addr, "POST", &path(ada_order, "pay"), &ada, None, &[]).await, 403, "forbidden");
    let paid = expect(&send(addr, "POST", &path(ada_order, "pay"), &admin, None, &[]).await, 200);
    assert_eq!(paid["status"], "paid");
    let refused = send(addr, "POST", &path(ada_order, "cancel"), &ada, None, &[]).await;
    let refused = expect_error(&refused, 409, "invalid_transition");
    assert!(refused["error"]["message"].as_str().unwrap().contains("paid"), "{refused}");
    let shipped = expect(&send(addr, "POST", &path(ada_order, "ship"), &admin, None, &[]).await, 200);
    assert_eq!(shipped["status"], "shipped");
    // Shipping turned the reservation into a sale.
    assert_eq!(stock(addr, &ada, mug).await, json!({"on_hand": 8, "reserved": 0, "available": 8}));
    expect_error(
        &send(addr, "POST", &path(ada_order, "ship"), &admin, None, &[]).await,
        409,
        "invalid_transition",
    );
    // A customer cancels their own placed order: the stock comes back.
    // (cup: 3 on hand, 1 shipped to Ada, 1 reserved by Bob: 1 available.)
    let second = expect(&order(addr, &ada, "ada-4", json!([{"product_id": cup, "quantity": 1}])).await, 201);
    let second = second["id"].as_i64().unwrap();
    assert_eq!(stock(addr, &ada, cup).await["available"], 0);
    expect_error(
        &order(addr, &ada, "ada-5", json!([{"product_id": cup, "quantity": 1}])).await,
        409,
        "out_of_stock",
    );
    let cancelled = expect(&send(addr, "POST", &path(second, "cancel"), &ada, None, &[]).await, 200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(stock(addr, &ada, cup).await, json!({"on_hand": 2, "reserved": 1, "available": 1}));
    expect_error(
        &send(addr, "POST", &path(second, "pay"), &admin, None, &[]).await,
        409,
        "invalid_transition",
    );

    // Lists: your own, newest first, in pages; an admin sees everyone's.
    let own = expect(&send(addr, "GET", "/v1/orders?limit=1", &ada, None, &[]).await, 200);
    assert_eq!(own["items"][0]["id"], second);
    let cursor = own["next"].as_str().unwrap();
    let older = expect(
        &send(addr, "GET", &format!("/v1/orders?limit=1&cursor={cursor}"), &ada, None, &[]).await,
        200,
    );
    assert_eq!(older["items"][0]["id"], ada_order);
    assert_eq!(older["next"], Value::Null);
    let bobs = expect(&send(addr, "GET", "/v1/orders", &bob, None, &[]).await, 200);
    assert_eq!(bobs["items"].as_array().unwrap().len(), 1);
    let all = expect(&send(addr, "GET", "/v1/orders", &admin, None, &[]).await, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let bob_id = bobs["items"][0]["user_id"].as_i64().unwrap();
    let filtered =
        expect(&send(addr, "GET", &format!("/v1/orders?user_id={bob_id}"), &admin, None, &[]).await, 200);
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    // A customer's user_id filter cannot widen their view.
    let widened =
        expect(&send(addr, "GET", &format!("/v1/orders?user_id={bob_id}"), &ada, None, &[]).await, 200);
    assert!(widened["items"].as_array().unwrap().iter().all(|o| o["user_id"] != bob_id));

    // --- Stock adjustments, in the ledger; never below the reserved units.
    let adjust = |delta: i64| json!({"delta": delta, "reason": "stocktake"});
    expect_error(
        &send(addr, "POST", &format!("/v1/products/{cup}/stock"), &ada, Some(&adjust(5)), &[]).await,
        403,
        "forbidden",
    );
    let more = expect(
        &send(addr, "POST", &format!("/v1/products/{cup}/stock"), &admin, Some(&adjust(5)), &[]).await,
        200,
    );
    assert_eq!(more["stock"], json!({"on_hand": 7, "reserved": 1, "available": 6}));
    let below =
        send(addr, "POST", &format!("/v1/products/{cup}/stock"), &admin, Some(&adjust(-8)), &[]).await;
    expect_error(&below, 409, "stock_reserved");
    let zero = send(addr, "POST", &format!("/v1/products/{cup}/stock"), &admin, Some(&adjust(0)), &[]).await;
    assert_eq!(expect_error(&zero, 400, "invalid_request")["error"]["details"][0]["field"], "delta");
    expect_error(
        &send(addr, "POST", "/v1/products/999999/stock", &admin, Some(&adjust(1)), &[]).await,
        404,
        "not_found",
    );

    // --- The inventory summary: admin only, per currency, fresh after
    // every change (the cache is invalidated).
    expect_error(&send(addr, "GET", "/v1/inventory/summary", &ada, None, &[]).await, 403, "forbidden");
    let summary = expect(&send(addr, "GET", "/v1/inventory/summary", &admin, None, &[]).await, 200);
    let eur = json!({"currency": "EUR", "products": 2, "on_hand": 15, "reserved": 1, "available": 14,
                     "stock_value": {"amount": 8 * 2499 + 7 * 500, "currency": "EUR"},
                     // No job process runs here: nothing counted yet.
                     "units_ordered": 0});
    let usd = json!({"currency": "USD", "products": 1, "on_hand": 5, "reserved": 0, "available": 5,
                     "stock_value": {"amount": 5 * 2500, "currency": "USD"}, "units_ordered": 0});
    assert_eq!(summary["currencies"], json!([eur, usd]));
    expect(
        &send(addr, "POST", &format!("/v1/products/{hat}/stock"), &admin, Some(&adjust(1)), &[]).await,
        200,
    );
    let summary = expect(&send(addr, "GET", "/v1/inventory/summary", &admin, None, &[]).await, 200);
    assert_eq!(summary["currencies"][1]["on_hand"], 6, "{summary}");

    // One key sent eight times at once: one order; the others wait their
    // turn (409 request_in_progress) or get its answer.
    let mut racing = Vec::new();
    for _ in 0..8 {
        let ada = ada.clone();
        racing.push(tokio::spawn(async move {
            order(addr, &ada, "ada-race", json!([{"product_id": hat, "quantity": 1}])).await
        }));
    }
    let mut answers = std::collections::HashSet::new();
    for task in racing {
        let response = task.await.unwrap();
        match response.status {
            201 => {
                answers.insert(response.body.clone());
            }
            _ => {
                expect_error(&response, 409, "request_in_progress");
                assert_eq!(response.header("retry-after"), Some("1"));
            }
        }
    }
    assert_eq!(answers.len(), 1, "every success is the one order");
    assert_eq!(stock(addr, &admin, hat).await["reserved"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commerce_on_sqlite() {
    let drover = Drover::start(2);
    commerce_story(&drover, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commerce_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    commerce_story(&drover, Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commerce_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    commerce_story(&drover, Some(&db.url)).await;
}

/// 200 concurrent orders for one unit each of a product with 50 in stock,
/// from 20 users, over both workers: exactly 50 succeed.
async fn no_oversell(drover: &Drover, database_url: Option<&str>) {
    let addr = drover.addr;
    let admin = admin_token(drover, database_url).await;
    let product = create_product(addr, &admin, "SCARCE-1", 1000, "EUR", 50).await;
    let mut customers = Vec::new();
    for n in 0..20 {
        customers.push(customer(addr, n).await);
    }
    let mut orders = Vec::new();
    for i in 0..200 {
        let token = customers[i % 20].clone();
        orders.push(tokio::spawn(async move {
            order(addr, &token, &format!("k-{i}"), json!([{"product_id": product, "quantity": 1}])).await
        }));
    }
    let (mut placed, mut refused, mut ids) = (0, 0, Vec::new());
    for task in orders {
        let response = task.await.unwrap();
        match response.status {
            201 => {
                placed += 1;
                ids.push(response.json()["id"].as_i64().unwrap());
            }
            409 => {
                expect_error(&response, 409, "out_of_stock");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&response.body)),
        }
    }
    assert_eq!((placed, refused), (50, 150));
    assert_eq!(stock(addr, &admin, product).await, json!({"on_hand": 50, "reserved": 50, "available": 0}));

    // Paying, then shipping, all 50 at once: every one succeeds (shipments of
    // one product take its row lock before their ledger rows, so they cannot
    // deadlock), and the stock ends sold.
    for action in ["pay", "ship"] {
        let mut changes = Vec::new();
        for id in &ids {
            let (admin, path) = (admin.clone(), format!("/v1/orders/{id}/{action}"));
            changes.push(tokio::spawn(async move { send(addr, "POST", &path, &admin, None, &[]).await }));
        }
        for task in changes {
            expect(&task.await.unwrap(), 200);
        }
    }
    assert_eq!(stock(addr, &admin, product).await, json!({"on_hand": 0, "reserved": 0, "available": 0}));
}

/// 21 users register and log in from one address, past the default
/// per-address budgets (tests/api/rate_limits.rs tests those).
const MANY_USERS: [(&str, &str); 2] = [
    ("DROVER_RATE_LIMIT__REGISTER_PER_IP__REQUESTS", "100"),
    ("DROVER_RATE_LIMIT__LOGIN_PER_IP__REQUESTS", "100"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell_on_sqlite() {
    let drover = Drover::start_with(Options { workers: 2, env: MANY_USERS.to_vec(), ..Options::default() });
    no_oversell(&drover, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        env: MANY_USERS.to_vec(),
        ..Options::default()
    });
    no_oversell(&drover, Some(&db.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        env: MANY_USERS.to_vec(),
        ..Options::default()
    });
    no_oversell(&drover, Some(&db.url)).await;
}
