//! Users and authentication through the real binary: registration, login,
//! every token check, visibility of other users, sparse fieldsets and the
//! validation errors.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::{Conn, Drover, Options, Response};

/// Sends one request with optional bearer token and JSON body.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
    if let Some(token) = token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(head.as_bytes()).await.unwrap();
    conn.read_response().await.unwrap()
}

pub async fn register(addr: SocketAddr, email: &str, password: &str, name: &str) -> Response {
    call(
        addr,
        "POST",
        "/v1/auth/register",
        None,
        Some(&json!({"email": email, "password": password, "name": name})),
    )
    .await
}

pub async fn login(addr: SocketAddr, email: &str, password: &str) -> Response {
    call(addr, "POST", "/v1/auth/login", None, Some(&json!({"email": email, "password": password}))).await
}

pub async fn token_for(addr: SocketAddr, email: &str, password: &str) -> String {
    let response = login(addr, email, password).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    response.json()["access_token"].as_str().unwrap().to_owned()
}

fn assert_error(response: &Response, status: u16, code: &str) -> Value {
    let body = response.json();
    assert_eq!(response.status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// The fields a 400 names.
fn fields_named(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 400, "{}", String::from_utf8_lossy(&response.body));
    response.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect()
}

/// Registration, login, reading and updating yourself: the same story on
/// either backend.
async fn user_story(addr: SocketAddr) {
    let created = register(addr, "  Ada@Example.COM ", "correct horse", "Ada").await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let user = created.json();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["role"], "user");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none(), "{user}");
    let id = user["id"].as_i64().unwrap();
    assert_eq!(created.header("location"), Some(format!("/v1/users/{id}").as_str()));

    let duplicate = register(addr, "ADA@example.com", "another horse", "Ada 2").await;
    let body = assert_error(&duplicate, 409, "conflict");
    assert_eq!(body["error"]["details"][0]["field"], "email");

    let token_response = login(addr, "ada@example.com", "correct horse").await;
    assert_eq!(token_response.status, 200);
    let token = token_response.json();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 900);
    let token = token["access_token"].as_str().unwrap().to_owned();

    let me = call(addr, "GET", "/v1/users/me", Some(&token), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["id"], id);

    let sparse = call(addr, "GET", &format!("/v1/users/{id}?fields=id,name"), Some(&token), None).await;
    assert_eq!(sparse.json(), json!({"id": id, "name": "Ada"}));

    let patched =
        call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&json!({"name": "Ada Lovelace"}))).await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json()["name"], "Ada Lovelace");
    session_story(addr, &token).await;

    let ready = call(addr, "GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
}

/// The session of Ada (password "correct horse", `token` from a login):
/// refresh tokens rotate, a replayed one ends its session, logout ends it,
/// and a password change needs the current one and ends every session
/// begun before it.
async fn session_story(addr: SocketAddr, token: &str) {
    let refresh = |refresh_token: String| async move {
        call(addr, "POST", "/v1/auth/refresh", None, Some(&json!({"refresh_token": refresh_token}))).await
    };
    let session = login(addr, "ada@example.com", "correct horse").await.json();
    assert_eq!(session["refresh_expires_in"], 30 * 86_400, "{session}");
    let first = session["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 64);
    let rotated = refresh(first.clone()).await;
    assert_eq!(rotated.status, 200, "{}", String::from_utf8_lossy(&rotated.body));
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let rotated = rotated.json();
    let (second, access) =
        (rotated["refresh_token"].as_str().unwrap(), rotated["access_token"].as_str().unwrap());
    assert_ne!(second, first);
    assert_eq!(call(addr, "GET", "/v1/users/me", Some(access), None).await.status, 200);
    // The first token, presented again, was copied: the whole family ends,
    // the token it was exchanged for included.
    assert_error(&refresh(first).await, 401, "invalid_token");
    assert_error(&refresh(second.to_owned()).await, 401, "invalid_token");
    assert_error(&refresh("f".repeat(64)).await, 401, "invalid_token");

    // Logout ends a session; it answers the same for any token.
    let other = login(addr, "ada@example.com", "correct horse").await.json()["refresh_token"].clone();
    let logout = call(addr, "POST", "/v1/auth/logout", None, Some(&json!({"refresh_token": other}))).await;
    assert_eq!(logout.status, 204);
    let logout = call(addr, "POST", "/v1/auth/logout", None, Some(&json!({"refresh_token": "nope"}))).await;
    assert_eq!(logout.status, 204);
    assert_error(&refresh(other.as_str().unwrap().to_owned()).await, 401, "invalid_token");

    // A password change needs the current password...
    let kept = login(addr, "ada@example.com", "correct horse").await.json()["refresh_token"].clone();
    let change =
        |body: Value| async move { call(addr, "PATCH", "/v1/users/me", Some(token), Some(&body)).await };
    assert_eq!(fields_named(&change(json!({"password": "battery staple"})).await), ["current_password"]);
    let wrong = change(json!({"password": "battery staple", "current_password": "wrong horse"})).await;
    assert_eq!(fields_named(&wrong), ["current_password"]);
    assert_eq!(fields_named(&change(json!({"email": "ada2@example.com"})).await), ["current_password"]);
    let changed = change(json!({"password": "battery staple", "current_password": "correct horse"})).await;
    assert_eq!(changed.status, 200, "{}", String::from_utf8_lossy(&changed.body));
    // ...and ends every token and session issued before it.
    assert_error(&call(addr, "GET", "/v1/users/me", Some(token), None).await, 401, "invalid_token");
    assert_error(&call(addr, "GET", "/v1/users/me", Some(access), None).await, 401, "invalid_token");
    assert_error(&refresh(kept.as_str().unwrap().to_owned()).await, 401, "invalid_token");
    assert_error(&login(addr, "ada@example.com", "correct horse").await, 401, "invalid_credentials");
    let fresh = token_for(addr, "ada@example.com", "battery staple").await;
    assert_eq!(call(addr, "GET", "/v1/users/me", Some(&fresh), None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_story_on_sqlite() {
    let drover = Drover::start(2);
    user_story(drover.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_story_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    user_story(drover.addr).await;
    let migrated = drover.log();
    assert!(migrated.contains("migration applied"), "the supervisor migrated the fresh database: {migrated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_story_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    // Spelled the MariaDB way; mysql:// works the same.
    let url = db.url.replacen("mysql://", "mariadb://", 1);
    let drover =
        Drover::start_with(Options { workers: 2, args: vec!["--database-url", &url], ..Options::default() });
    user_story(drover.addr).await;
    let migrated = drover.log();
    assert!(migrated.contains("migration applied"), "the supervisor migrated the fresh database: {migrated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let drover = Drover::start(1);
    assert_eq!(register(drover.addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let wrong = login(drover.addr, "ada@example.com", "wrong horse").await;
    let unknown = login(drover.addr, "nobody@example.com", "correct horse").await;
    let malformed = login(drover.addr, "not an email", "x").await;
    assert_error(&wrong, 401, "invalid_credentials");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, malformed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_error_names_its_field() {
    let drover = Drover::start(1);
    let addr = drover.addr;
    let post = |body: Value| async move { call(addr, "POST", "/v1/auth/register", None, Some(&body)).await };

    let all_bad = post(json!({"email": "not-an-email", "password": "short", "name": ""})).await;
    let mut fields = fields_named(&all_bad);
    fields.sort();
    assert_eq!(fields, ["email", "name", "password"]);
    assert_eq!(
        fields_named(&post(json!({"email": "a@b.io", "password": "x".repeat(129), "name": "A"})).await),
        ["password"]
    );
    assert_eq!(
        fields_named(
            &post(json!({"email": "a@b.io", "password": "long enough", "name": "A".repeat(101)})).await
        ),
        ["name"]
    );
    assert_eq!(fields_named(&post(json!({"email": "a@b.io", "password": "long enough"})).await), ["name"]);
    assert_eq!(
        fields_named(
            &post(json!({"email": "a@b.io", "password": "long enough", "name": "A", "role": "admin"})).await
        ),
        ["role"],
        "unknown fields (such as a self-granted role) are refused"
    );
    assert_eq!(
        fields_named(&post(json!({"email": 5, "password": "long enough", "name": "A"})).await),
        ["email"]
    );

    // Not JSON at all, or not declared as JSON.
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(b"POST /v1/auth/register HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{nope")
        .await
        .unwrap();
    assert_eq!(fields_named(&conn.read_response().await.unwrap()), ["body"]);
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(b"POST /v1/auth/register HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert_error(&conn.read_response().await.unwrap(), 415, "unsupported_media_type");

    // A chunked body past max_body_bytes (1 MiB) is cut off with 413.
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(b"POST /v1/auth/register HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
    for _ in 0..20 {
        if conn.send(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    assert_error(&conn.read_response().await.unwrap(), 413, "body_too_large");

    // Query and path parameters.
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    let unknown_field = call(addr, "GET", "/v1/users/me?fields=id,password_hash", Some(&token), None).await;
    assert_eq!(fields_named(&unknown_field), ["fields"]);
    assert!(unknown_field.json()["error"]["details"][0]["issue"].as_str().unwrap().contains("password_hash"));
    assert_eq!(fields_named(&call(addr, "GET", "/v1/users/abc", Some(&token), None).await), ["id"]);
    assert_eq!(
        fields_named(&call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&json!({}))).await),
        ["body"]
    );
    assert_eq!(
        fields_named(
            &call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&json!({"email": "nope"}))).await
        ),
        ["email"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_themselves_and_admins_see_everyone() {
    let drover = Drover::start(2);
    let addr = drover.addr;
    let ada = register(addr, "ada@example.com", "correct horse", "Ada").await.json()["id"].as_i64().unwrap();
    let bob = register(addr, "bob@example.com", "correct horse", "Bob").await.json()["id"].as_i64().unwrap();
    let ada_token = token_for(addr, "ada@example.com", "correct horse").await;
    assert_eq!(call(addr, "GET", &format!("/v1/users/{ada}"), Some(&ada_token), None).await.status, 200);
    assert_error(
        &call(addr, "GET", &format!("/v1/users/{bob}"), Some(&ada_token), None).await,
        404,
        "not_found",
    );
    assert_error(&call(addr, "GET", "/v1/users/999999", Some(&ada_token), None).await, 404, "not_found");

    // The first admin comes from the CLI, through the same service.
    let mut create = Command::new(env!("CARGO_BIN_EXE_drover"))
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
        .arg(drover.dir.path().join("data"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"root password\n").unwrap();
    let output = create.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["role"], "admin");

    let root_token = token_for(addr, "root@example.com", "root password").await;
    let seen = call(addr, "GET", &format!("/v1/users/{bob}?fields=email"), Some(&root_token), None).await;
    assert_eq!(seen.json(), json!({"email": "bob@example.com"}));
    let root = created["id"].as_i64().unwrap();

    // Role changes and deletions: administrators only, never their own,
    // and they end the user's tokens at the next request.
    let set_role = |id: i64, token: String, role: &'static str| async move {
        call(addr, "PATCH", &format!("/v1/users/{id}"), Some(&token), Some(&json!({"role": role}))).await
    };
    assert_error(&set_role(bob, ada_token.clone(), "admin").await, 403, "forbidden");
    assert_eq!(fields_named(&set_role(root, root_token.clone(), "user").await), ["id"]);
    assert_eq!(fields_named(&set_role(bob, root_token.clone(), "owner").await), ["role"]);
    let promoted = set_role(bob, root_token.clone(), "admin").await;
    assert_eq!(promoted.status, 200, "{}", String::from_utf8_lossy(&promoted.body));
    assert_eq!(promoted.json()["role"], "admin");
    let bob_token = token_for(addr, "bob@example.com", "correct horse").await;
    let as_admin = call(addr, "GET", &format!("/v1/users/{ada}"), Some(&bob_token), None).await;
    assert_eq!(as_admin.status, 200, "an admin sees anyone");
    assert_eq!(set_role(bob, root_token.clone(), "user").await.status, 200);
    // The demoted admin's token, signed while an admin, no longer works.
    assert_error(
        &call(addr, "GET", &format!("/v1/users/{ada}"), Some(&bob_token), None).await,
        401,
        "invalid_token",
    );

    let delete = |id: i64, token: String| async move {
        call(addr, "DELETE", &format!("/v1/users/{id}"), Some(&token), None).await
    };
    let ada_refresh = login(addr, "ada@example.com", "correct horse").await.json()["refresh_token"].clone();
    assert_error(&delete(ada, ada_token.clone()).await, 403, "forbidden");
    assert_eq!(fields_named(&delete(root, root_token.clone()).await), ["id"]);
    assert_eq!(delete(ada, root_token.clone()).await.status, 204);
    assert_error(&delete(ada, root_token.clone()).await, 404, "not_found");
    assert_error(&call(addr, "GET", "/v1/users/me", Some(&ada_token), None).await, 401, "invalid_token");
    assert_error(&login(addr, "ada@example.com", "correct horse").await, 401, "invalid_credentials");
    let refreshed =
        call(addr, "POST", "/v1/auth/refresh", None, Some(&json!({"refresh_token": ada_refresh}))).await;
    assert_error(&refreshed, 401, "invalid_token");
    assert_error(
        &call(addr, "GET", &format!("/v1/users/{ada}"), Some(&root_token), None).await,
        404,
        "not_found",
    );
    // The address is free again.
    assert_eq!(register(addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    // Every one of these left an audit line, with who did it.
    let log = drover.log();
    for event in ["role_changed", "user_deleted", "by_user_id"] {
        assert!(log.contains(event), "{event} in {log}");
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str) -> Claims<'_> {
    Claims { sub, role: "user", iss: "drover", aud: "drover", iat: now(), nbf: now(), exp: now() + 600 }
}

fn hs256(kid: Option<&str>, secret: &[u8], claims: &Claims<'_>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_strictly_and_keys_rotate() {
    let old_secret = b"an old secret that is long enough to sign with";
    let new_secret = b"a new secret that is long enough to sign with!!";
    let keys = crate::helpers::TempDir::new("keys");
    let (old, new) = (keys.path().join("k1.secret"), keys.path().join("k2.secret"));
    std::fs::write(&old, old_secret).unwrap();
    std::fs::write(&new, new_secret).unwrap();
    // The old key comes through systemd's credentials directory.
    let key_files =
        format!("[\"{}\", \"credential:{}\"]", new.display(), old.file_name().unwrap().to_str().unwrap());
    let credentials = keys.path().to_str().unwrap().to_owned();
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![
            ("DROVER_AUTH__ALGORITHM", "HS256"),
            ("DROVER_AUTH__KEY_FILES", &key_files),
            ("CREDENTIALS_DIRECTORY", &credentials),
        ],
        ..Options::default()
    });
    let addr = drover.addr;
    let id = register(addr, "ada@example.com", "correct horse", "Ada").await.json()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let me = |token: String| async move { call(addr, "GET", "/v1/users/me", Some(&token), None).await };

    // The server's own token names the newest key.
    let issued = token_for(addr, "ada@example.com", "correct horse").await;
    let header = jsonwebtoken::decode_header(&issued).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k2"));
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(me(issued).await.status, 200);

    // Signed with a key we hold, but issued in the future, or living longer
    // than auth.token_ttl (15 minutes): refused.
    let future = Claims { iat: now() + 600, nbf: now(), exp: now() + 900, ..claims(&id) };
    assert_error(&me(hs256(Some("k2"), new_secret, &future)).await, 401, "invalid_token");
    let forever = Claims { exp: now() + 10 * 365 * 86_400, ..claims(&id) };
    assert_error(&me(hs256(Some("k2"), new_secret, &forever)).await, 401, "invalid_token");

    // A token signed by the previous key still works after rotation.
    assert_eq!(me(hs256(Some("k1"), old_secret, &claims(&id))).await.status, 200);

    let refused = |response: Response| {
        assert_error(&response, 401, "invalid_token");
        assert!(response.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    };
    // Wrong signature: the right kid, another secret.
    refused(me(hs256(Some("k2"), b"some other secret that is long enough....", &claims(&id))).await);
    // Unknown or missing kid.
    refused(me(hs256(Some("k9"), new_secret, &claims(&id))).await);
    refused(me(hs256(None, new_secret, &claims(&id))).await);
    // Expired, and not yet valid (beyond the few seconds of leeway).
    let expired = Claims { exp: now() - 3600, iat: now() - 7200, nbf: now() - 7200, ..claims(&id) };
    let response = me(hs256(Some("k2"), new_secret, &expired)).await;
    refused(response.clone());
    assert!(response.json()["error"]["message"].as_str().unwrap().contains("expired"));
    refused(me(hs256(Some("k2"), new_secret, &Claims { nbf: now() + 3600, ..claims(&id) })).await);
    // Wrong audience, wrong issuer.
    refused(me(hs256(Some("k2"), new_secret, &Claims { aud: "someone-else", ..claims(&id) })).await);
    refused(me(hs256(Some("k2"), new_secret, &Claims { iss: "someone-else", ..claims(&id) })).await);
    // alg: none, unsigned.
    let none_header = base64url(br#"{"alg":"none","typ":"JWT","kid":"k2"}"#);
    let payload = base64url(serde_json::to_string(&claims(&id)).unwrap().as_bytes());
    refused(me(format!("{none_header}.{payload}.")).await);
    // Wrong algorithm: HS512 with the right secret is still refused (pinned).
    let mut header = Header::new(Algorithm::HS512);
    header.kid = Some("k2".into());
    refused(
        me(jsonwebtoken::encode(&header, &claims(&id), &EncodingKey::from_secret(new_secret)).unwrap()).await,
    );
    // Garbage, and no token at all.
    refused(me("not.a.token".into()).await);
    let missing = call(addr, "GET", "/v1/users/me", None, None).await;
    assert_error(&missing, 401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_refuse_algorithm_confusion() {
    // The default: EdDSA with a development key generated into the data dir.
    let drover = Drover::start(1);
    let addr = drover.addr;
    let id = register(addr, "ada@example.com", "correct horse", "Ada").await.json()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let token = token_for(addr, "ada@example.com", "correct horse").await;
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::EdDSA);
    assert_eq!(call(addr, "GET", "/v1/users/me", Some(&token), None).await.status, 200);
    let key_file = drover.dir.path().join("data").join("jwt-dev-eddsa.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the development key is private");
    assert!(drover.log().contains("development key"), "a warning says it is for development");

    // HS256 "signed" with the key file's bytes as the HMAC secret: the
    // classic confusion attack, refused because the algorithm is pinned.
    let secret = std::fs::read(&key_file).unwrap();
    let forged = hs256(Some("dev"), &secret, &claims(&id));
    assert_error(&call(addr, "GET", "/v1/users/me", Some(&forged), None).await, 401, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_the_environment_signs_tokens() {
    let secret = "a secret given in the environment, long enough";
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![
            ("DROVER_AUTH__ALGORITHM", "HS256"),
            ("DROVER_AUTH__KEY", secret),
            ("DROVER_AUTH__KEY_ID", "env-1"),
        ],
        ..Options::default()
    });
    assert_eq!(register(drover.addr, "ada@example.com", "correct horse", "Ada").await.status, 201);
    let token = token_for(drover.addr, "ada@example.com", "correct horse").await;
    assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some("env-1"));
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["drover"]);
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let claims =
        jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("signed with the given key").claims;
    assert_eq!(claims["iss"], "drover");
    assert!(!drover.log().contains(secret), "the key never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_passwords_invisible_names_and_dotless_domains_are_refused() {
    let drover = Drover::start(1);
    let addr = drover.addr;
    let post = |body: Value| async move { call(addr, "POST", "/v1/auth/register", None, Some(&body)).await };

    let blank = post(json!({"email": "ws@example.com", "password": " \t".repeat(6), "name": "A"})).await;
    assert_eq!(fields_named(&blank), ["password"]);
    for name in ["\u{200B}\u{200B}", "\u{202E}\u{202D}", "\u{3164}\u{3164}", "\u{2800}"] {
        let invisible =
            post(json!({"email": "inv@example.com", "password": "long enough", "name": name})).await;
        assert_eq!(fields_named(&invisible), ["name"], "{name:?}");
    }
    let dotless = post(json!({"email": "ada@localhost", "password": "long enough", "name": "Ada"})).await;
    assert_eq!(fields_named(&dotless), ["email"]);

    // A joiner among visible characters is someone's name.
    let created =
        post(json!({"email": "zoe@example.com", "password": "long enough", "name": "Zoe\u{200D}"})).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let token = token_for(addr, "zoe@example.com", "long enough").await;
    // Changing to a dotless domain is refused as registering with one is.
    let change =
        call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&json!({"email": "zoe@intranet"}))).await;
    assert_eq!(fields_named(&change), ["email"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_answers_are_not_stored_and_auth_bodies_are_small() {
    let drover = Drover::start(1);
    let addr = drover.addr;
    let created = register(addr, "cc@example.com", "long enough", "Cee").await;
    let logged_in = login(addr, "cc@example.com", "long enough").await;
    let token = logged_in.json()["access_token"].as_str().unwrap().to_owned();
    let me = call(addr, "GET", "/v1/users/me", Some(&token), None).await;
    let changed = call(addr, "PATCH", "/v1/users/me", Some(&token), Some(&json!({"name": "Cee Cee"}))).await;
    for (what, response) in [("register", &created), ("login", &logged_in), ("me", &me), ("patch", &changed)]
    {
        assert!(response.status < 300, "{what}: {}", response.status);
        assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
    }
    // Every response says its type is to be believed, errors and the
    // worker's own refusals included.
    let health = crate::helpers::get(addr, "/healthz").await.unwrap();
    let missing = crate::helpers::get(addr, "/no/such/route").await.unwrap();
    for response in [&created, &logged_in, &me, &health, &missing] {
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(health.header("cache-control"), None);

    // 8 KiB is plenty for a login: a 10 KB one is refused unread.
    let big = json!({"email": "cc@example.com", "password": "x".repeat(10_000)});
    assert_error(&call(addr, "POST", "/v1/auth/login", None, Some(&big)).await, 413, "body_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotless_email_domains_can_be_allowed() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_AUTH__ALLOW_DOTLESS_EMAIL_DOMAINS", "true")],
        ..Options::default()
    });
    let created = register(drover.addr, "ada@intranet", "long enough", "Ada").await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_audited_with_the_request_id_and_never_a_secret() {
    let drover = Drover::start(1);
    let addr = drover.addr;
    let registered = register(addr, "audit@example.com", "first password", "Audrey").await;
    let user_id = registered.json()["id"].as_i64().unwrap();
    let failed = login(addr, "Audit@Example.com", "not the password").await;
    assert_eq!(failed.status, 401);
    let token = token_for(addr, "audit@example.com", "first password").await;
    let changed = call(
        addr,
        "PATCH",
        "/v1/users/me",
        Some(&token),
        Some(&json!({
            "password": "second password",
            "email": "audit2@example.com",
            "current_password": "first password"
        })),
    )
    .await;
    assert_eq!(changed.status, 200);
    let refresh_token = login(addr, "audit2@example.com", "second password").await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        call(addr, "POST", "/v1/auth/refresh", None, Some(&json!({"refresh_token": refresh_token}))).await;
    }

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let audit: Vec<Value> = loop {
        let lines: Vec<Value> = drover
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["target"] == "drover::audit")
            .collect();
        if lines.len() >= 7 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let events: Vec<&str> = audit.iter().map(|line| line["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        events,
        [
            "registered",
            "login_failed",
            "login_succeeded",
            "password_changed",
            "email_changed",
            "login_succeeded",
            "refresh_token_reused"
        ]
    );
    let failed_line = &audit[1];
    assert_eq!(failed_line["email"], "audit@example.com");
    assert_eq!(failed_line["user_id"], user_id);
    assert_eq!(failed_line["request_id"], failed.header("x-request-id").unwrap());
    assert!(audit.iter().all(|line| line["request_id"].as_str().is_some_and(|id| !id.is_empty())));
    let log = drover.log();
    for secret in ["first password", "second password", "not the password", &token, &refresh_token] {
        assert!(!log.contains(secret), "the log shows {secret:?}");
    }
}
