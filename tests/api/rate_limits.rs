//! `[rate_limit]` through the real binary: budgets that hold for the whole
//! host whichever worker a connection lands on, the account backoff after
//! wrong passwords, registration per address, trusted proxies, and the 429
//! every refusal is.

use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{call, register};
use crate::cache::connection_per_worker;
use crate::helpers::{get, Conn, Drover, Options, Response};

async fn post(conn: &mut Conn, path: &str, body: Value, extra: &str) -> Response {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    conn.send(request.as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

/// A 429 as the issue describes it: the one error shape, `Retry-After`, and
/// the IETF `RateLimit-Policy` / `RateLimit` headers naming the policy.
fn assert_limited(response: &Response, policy: &str) -> u64 {
    assert_eq!(response.status, 429, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.json()["error"]["code"], "too_many_requests");
    let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    let policy_header = response.header("ratelimit-policy").unwrap();
    assert!(policy_header.starts_with(&format!("\"{policy}\";q=")), "{policy_header}");
    assert_eq!(response.header("ratelimit").unwrap(), format!("\"{policy}\";r=0;t={retry}"));
    assert!(response.header("x-request-id").is_some());
    retry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_budget_per_address_for_the_whole_host_and_it_recovers() {
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![
            ("DROVER_RATE_LIMIT__LOGIN_PER_IP__REQUESTS", "4"),
            ("DROVER_RATE_LIMIT__LOGIN_PER_IP__PERIOD", "4s"),
        ],
        ..Options::default()
    });
    let addr = drover.addr;
    register(addr, "ada@example.com", "correct horse", "Ada").await;
    let mut conns: Vec<Conn> = connection_per_worker(addr, 2).await.into_values().collect();
    // Four attempts, alternating between the two workers, each for another
    // account (so no account backoff plays a part): all answered.
    for i in 0..4 {
        let response = post(
            &mut conns[i % 2],
            "/v1/auth/login",
            login_body(&format!("u{i}@example.com"), "wrong password"),
            "",
        )
        .await;
        assert_eq!(response.status, 401, "attempt {i}");
    }
    // The fifth is refused on either worker, before any hashing, even with
    // the right password.
    for conn in &mut conns {
        let refused = post(conn, "/v1/auth/login", login_body("ada@example.com", "correct horse"), "").await;
        assert_limited(&refused, "login");
    }
    // The budget refills one attempt per second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again =
        post(&mut conns[1], "/v1/auth/login", login_body("ada@example.com", "correct horse"), "").await;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
    // Other routes, the probes above all, are not limited by it.
    assert_eq!(get(addr, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_make_an_account_wait_longer_each_time_and_a_right_one_clears_it() {
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![
            ("DROVER_RATE_LIMIT__LOGIN_FREE_FAILURES", "2"),
            ("DROVER_RATE_LIMIT__LOGIN_DELAY", "1s"),
            ("DROVER_RATE_LIMIT__LOGIN_MAX_DELAY", "2s"),
        ],
        ..Options::default()
    });
    let addr = drover.addr;
    register(addr, "ada@example.com", "correct horse", "Ada").await;
    let mut conns: Vec<Conn> = connection_per_worker(addr, 2).await.into_values().collect();
    for i in 0..3 {
        let wrong =
            post(&mut conns[i % 2], "/v1/auth/login", login_body("Ada@Example.com", "wrong horse"), "").await;
        assert_eq!(wrong.status, 401, "failure {i} is answered");
    }
    // The third failure started a 1 s wait for the account, on every worker,
    // the right password included.
    for conn in &mut conns {
        let waiting = post(conn, "/v1/auth/login", login_body("ada@example.com", "correct horse"), "").await;
        assert_limited(&waiting, "login-account");
    }
    // Another account is not affected.
    register(addr, "bob@example.com", "correct horse", "Bob").await;
    let bob = post(&mut conns[0], "/v1/auth/login", login_body("bob@example.com", "correct horse"), "").await;
    assert_eq!(bob.status, 200);
    // Once the wait is over, one more failure doubles it (2 s, the cap).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let wrong = post(&mut conns[0], "/v1/auth/login", login_body("ada@example.com", "wrong horse"), "").await;
    assert_eq!(wrong.status, 401);
    let waiting =
        post(&mut conns[1], "/v1/auth/login", login_body("ada@example.com", "correct horse"), "").await;
    assert_eq!(assert_limited(&waiting, "login-account"), 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let right =
        post(&mut conns[1], "/v1/auth/login", login_body("ada@example.com", "correct horse"), "").await;
    assert_eq!(right.status, 200, "{}", String::from_utf8_lossy(&right.body));
    // The success cleared the count: two failures are free again.
    for _ in 0..2 {
        let wrong =
            post(&mut conns[0], "/v1/auth/login", login_body("ada@example.com", "wrong horse"), "").await;
        assert_eq!(wrong.status, 401);
    }
    let log = drover.log();
    assert!(log.contains("login_locked_out"), "the lockout is audited: {log}");

    // Guessing the current password with a stolen token backs off the same
    // way, per user.
    let token = crate::auth::token_for(addr, "bob@example.com", "correct horse").await;
    let change = |current: &'static str| {
        let token = token.clone();
        async move {
            let body = json!({"password": "new password", "current_password": current});
            call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&body)).await
        }
    };
    for _ in 0..3 {
        assert_eq!(change("a wrong guess").await.status, 400);
    }
    assert_limited(&change("correct horse").await, "current-password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address_and_trusted_proxies_name_the_client() {
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![
            ("DROVER_RATE_LIMIT__REGISTER_PER_IP__REQUESTS", "2"),
            ("DROVER_SERVER__TRUSTED_PROXIES", "127.0.0.0/8"),
        ],
        ..Options::default()
    });
    let addr = drover.addr;
    let mut conns: Vec<Conn> = connection_per_worker(addr, 2).await.into_values().collect();
    let body =
        |n: usize| json!({"email": format!("u{n}@example.com"), "password": "long enough", "name": "U"});
    let from = "x-forwarded-for: 203.0.113.7\r\n";
    for n in 0..2 {
        assert_eq!(post(&mut conns[n % 2], "/v1/auth/register", body(n), from).await.status, 201);
    }
    assert_limited(&post(&mut conns[0], "/v1/auth/register", body(2), from).await, "register");
    // Behind the trusted proxy, another client has its own budget; what a
    // client writes left of the proxy's entry does not pick one.
    let other = "x-forwarded-for: 203.0.113.7, 198.51.100.9\r\n";
    assert_eq!(post(&mut conns[1], "/v1/auth/register", body(3), other).await.status, 201);
    assert_limited(&post(&mut conns[1], "/v1/auth/register", body(4), from).await, "register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_limits_per_address_and_per_user_spare_the_probes() {
    let drover = Drover::start_with(Options {
        workers: 2,
        env: vec![
            ("DROVER_RATE_LIMIT__PER_USER__REQUESTS", "3"),
            ("DROVER_RATE_LIMIT__PER_USER__PERIOD", "1h"),
            ("DROVER_RATE_LIMIT__PER_IP__REQUESTS", "8"),
            ("DROVER_RATE_LIMIT__PER_IP__PERIOD", "1h"),
        ],
        ..Options::default()
    });
    let addr = drover.addr;
    // Registration and login count against the address: 2 of its 8.
    register(addr, "ada@example.com", "correct horse", "Ada").await;
    let token = crate::auth::token_for(addr, "ada@example.com", "correct horse").await;
    for _ in 0..3 {
        assert_eq!(call(addr, "GET", "/v1/users/me", Some(&token), None).await.status, 200);
    }
    assert_limited(&call(addr, "GET", "/v1/users/me", Some(&token), None).await, "user");
    // 6 of the address's 8 are spent (the refused request above counted
    // against the address, not the user); two more, then the address is out.
    for _ in 0..2 {
        assert_eq!(call(addr, "GET", "/v1/plans", None, None).await.status, 401);
    }
    assert_limited(&call(addr, "GET", "/v1/plans", None, None).await, "ip");
    for _ in 0..20 {
        assert_eq!(get(addr, "/healthz").await.unwrap().status, 200);
        assert_eq!(get(addr, "/readyz").await.unwrap().status, 200);
    }
}
