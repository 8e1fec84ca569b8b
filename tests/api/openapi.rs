//! The OpenAPI document as the real binary serves and prints it: `GET
//! /openapi.json` without a token, and `drover openapi` without a database
//! or a server.

use std::process::Command;

use crate::helpers::{get, Drover, TempDir};

#[tokio::test]
async fn openapi_json_is_served_without_a_token() {
    let drover = Drover::start(1);
    let response = get(drover.addr, "/openapi.json").await.unwrap();
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["openapi"], "3.1.0");
    let scheme = &document["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    assert!(document["paths"]["/v1/users/me"]["get"]["security"][0]["bearerAuth"].is_array());
    assert!(document["paths"]["/openapi.json"]["get"].is_object());
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.keys().all(|path| !path.starts_with("/bench")), "benchmark routes are not the API");
}

#[test]
fn drover_openapi_prints_the_same_document_without_a_database() {
    let dir = TempDir::new("openapi");
    // A data directory that does not exist and a database URL that cannot
    // be reached: the command must not touch either.
    let printed = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("openapi")
        .env("DROVER_DATABASE__URL", "postgres://nobody@127.0.0.1:1/none")
        .env("DROVER_SERVER__DATA_DIR", dir.path().join("absent"))
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let document: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let file = dir.path().join("openapi.json");
    let written = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("openapi")
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let from_file: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(from_file, document);
    assert!(!dir.path().join("absent").exists());
}
