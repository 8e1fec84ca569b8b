//! Cross-origin requests from browsers: off by default, and with
//! `[http.cors]` set, preflights answered and allowed origins' responses
//! marked readable.

use crate::helpers::{Conn, Drover, Options, Response};

async fn ask(addr: std::net::SocketAddr, head: &str) -> Response {
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(format!("{head}host: test\r\n\r\n").as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

const PREFLIGHT: &str = "OPTIONS /v1/auth/login HTTP/1.1\r\norigin: https://app.example.com\r\n\
                         access-control-request-method: POST\r\naccess-control-request-headers: Content-Type\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_configured() {
    let drover = Drover::start(1);
    let preflight = ask(drover.addr, PREFLIGHT).await;
    assert_eq!(preflight.status, 405);
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    let get = ask(drover.addr, "GET /healthz HTTP/1.1\r\norigin: https://app.example.com\r\n").await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_preflights_answered_and_responses_marked() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__CORS__ALLOWED_ORIGINS", r#"["https://app.example.com"]"#)],
        ..Options::default()
    });
    let addr = drover.addr;
    let preflight = ask(addr, PREFLIGHT).await;
    assert_eq!(preflight.status, 204, "{}", String::from_utf8_lossy(&preflight.body));
    assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(preflight.header("access-control-allow-headers").unwrap().contains("content-type"));
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert_eq!(preflight.header("vary"), Some("origin"));
    assert_eq!(preflight.header("access-control-allow-credentials"), None);

    // The request itself, answered now and later (a handler that awaits).
    for path in ["/healthz", "/v1/users/me"] {
        let response =
            ask(addr, &format!("GET {path} HTTP/1.1\r\norigin: https://app.example.com\r\n")).await;
        assert_eq!(response.header("access-control-allow-origin"), Some("https://app.example.com"), "{path}");
        assert!(response.header("access-control-expose-headers").unwrap().contains("x-request-id"), "{path}");
        assert_eq!(response.header("vary"), Some("origin"), "{path}");
    }

    // Another origin: its preflight is refused with a reason, and its
    // requests are served without the permission to read them.
    let other = PREFLIGHT.replace("app.example.com", "evil.example");
    let refused = ask(addr, &other).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"]["code"], "cors_refused");
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let served = ask(addr, "GET /healthz HTTP/1.1\r\norigin: https://evil.example\r\n").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("access-control-allow-origin"), None);

    // A method or a header the configuration does not list.
    let method = PREFLIGHT.replace("request-method: POST", "request-method: TRACE");
    assert_eq!(ask(addr, &method).await.json()["error"]["code"], "cors_refused");
    let header = PREFLIGHT.replace("Content-Type", "Content-Type, X-Secret");
    let refused = ask(addr, &header).await;
    assert_eq!(refused.status, 403);
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("x-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_origin_gets_a_star_and_never_credentials() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__CORS__ALLOWED_ORIGINS", r#"["*"]"#)],
        ..Options::default()
    });
    let response = ask(drover.addr, "GET /healthz HTTP/1.1\r\norigin: https://anyone.example\r\n").await;
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("vary"), None, "the same answer for every origin");

    // Credentials with "*" is a configuration error naming the key.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["config", "check"])
        .env("DROVER_HTTP__CORS__ALLOWED_ORIGINS", r#"["*"]"#)
        .env("DROVER_HTTP__CORS__ALLOW_CREDENTIALS", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http.cors.allow_credentials"), "{stderr}");
}
