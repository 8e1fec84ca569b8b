//! JSON bodies are read the way other tools read them: exactly one object,
//! sent as `application/json` in UTF-8, and every refusal says what is wrong
//! in the API's words, never in serde's.

use std::net::SocketAddr;

use crate::auth::register;
use crate::helpers::{Conn, Drover, Response};

/// A login that would succeed when read as JSON the usual way.
const LOGIN: &str = r#"{"email":"ada@example.com","password":"correct horse"}"#;

/// Sends `body` to `path` as `content_type`, byte for byte.
async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Response {
    let mut conn = Conn::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.send(request.as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

async fn login(addr: SocketAddr, content_type: &str, body: &str) -> Response {
    post(addr, "/v1/auth/login", content_type, body).await
}

/// A drover with Ada registered, so a well-formed login succeeds.
async fn with_ada() -> Drover {
    let drover = Drover::start(1);
    assert_eq!(register(drover.addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    drover
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// The one field and issue of a 400, after checking the error shape and
/// that nothing of serde's wording got through.
fn refused(response: &Response) -> (String, String) {
    let body = text(response);
    assert_eq!(response.status, 400, "{body}");
    assert!(!body.contains("access_token"), "{body}");
    for leak in ["struct", "line", "column", "expected", "LoginBody", "RegisterBody"] {
        assert!(!body.contains(leak), "{leak:?} leaked: {body}");
    }
    let json = response.json();
    assert_eq!(json["error"]["code"], "invalid_request", "{body}");
    let details = json["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{body}");
    (details[0]["field"].as_str().unwrap().to_owned(), details[0]["issue"].as_str().unwrap().to_owned())
}

fn assert_415(response: &Response, mentions: &str) {
    let body = text(response);
    assert_eq!(response.status, 415, "{body}");
    let json = response.json();
    assert_eq!(json["error"]["code"], "unsupported_media_type", "{body}");
    assert!(json["error"]["message"].as_str().unwrap().contains(mentions), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_the_object_is_refused() {
    let drover = with_ada().await;
    let addr = drover.addr;
    assert_eq!(login(addr, "application/json", LOGIN).await.status, 200);
    assert_eq!(login(addr, "application/json", &format!(" \r\n{LOGIN}\n ")).await.status, 200);

    let garbage = login(addr, "application/json", &format!("{LOGIN}garbage")).await;
    let (field, issue) = refused(&garbage);
    assert_eq!(field, "body");
    assert!(issue.contains("after the JSON object"), "{issue}");

    let two = login(addr, "application/json", &format!("{LOGIN}{LOGIN}")).await;
    assert_eq!(refused(&two).0, "body");
    let two_lines = login(addr, "application/json", &format!("{LOGIN}\n{LOGIN}\n")).await;
    assert_eq!(refused(&two_lines).0, "body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_object_is_a_body() {
    let drover = with_ada().await;
    let addr = drover.addr;
    // serde would read this array as the struct's fields in order, and log in.
    for body in [r#"["ada@example.com","correct horse"]"#, "5", r#""ada@example.com""#, "null"] {
        let response = login(addr, "application/json", body).await;
        assert_eq!(refused(&response), ("body".to_owned(), "must be a JSON object".to_owned()), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_application_json_is_json() {
    let drover = with_ada().await;
    let addr = drover.addr;
    for content_type in [
        "application/jsonx",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/json garbage",
        "text/json",
    ] {
        assert_415(&login(addr, content_type, LOGIN).await, "application/json");
    }
    for content_type in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
    ] {
        let response = login(addr, content_type, LOGIN).await;
        assert_eq!(response.status, 200, "{content_type}: {}", text(&response));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charset_other_than_utf8_is_refused() {
    let drover = with_ada().await;
    let addr = drover.addr;
    for content_type in [
        "application/json; charset=latin1",
        "application/json; charset=\"ISO-8859-1\"",
        "application/json; charset=utf-16",
        "application/json; charset=utf-8; charset=latin1",
    ] {
        let response = login(addr, content_type, LOGIN).await;
        assert_415(&response, "UTF-8");
        assert_eq!(response.json()["error"]["details"][0]["field"], "content-type");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_in_the_apis_words() {
    let drover = Drover::start(1);
    let addr = drover.addr;
    let check = |path: &'static str, body: &'static str, field: &'static str, issue: &'static str| async move {
        let response = post(addr, path, "application/json", body).await;
        assert_eq!(refused(&response), (field.to_owned(), issue.to_owned()), "{body}");
    };
    check("/v1/auth/login", r#"{"email":"ada@example.com"}"#, "password", "is required").await;
    check("/v1/auth/login", r#"{"email":5,"password":"pw"}"#, "email", "must be a string").await;
    check("/v1/auth/login", r#"{"email":"a@b.io","password":["pw"]}"#, "password", "must be a string").await;
    check(
        "/v1/auth/login",
        r#"{"email":"a@b.io","password":"pw","admin":true}"#,
        "admin",
        "is not a known field",
    )
    .await;
    check(
        "/v1/auth/register",
        r#"{"email":"a@b.io","password":"long enough","name":"A","role":"admin"}"#,
        "role",
        "is not a known field",
    )
    .await;
    check(
        "/v1/auth/register",
        r#"{"email":true,"password":"long enough","name":"A"}"#,
        "email",
        "must be a string",
    )
    .await;
    check("/v1/auth/login", "{nope", "body", "is not valid JSON").await;
    check("/v1/auth/login", "{\"email\":\"a@b.io\",\n\"password\":", "body", "is not valid JSON").await;
    check("/v1/auth/login", "", "body", "is required: send a JSON object").await;
}
