//! Files through the real binary: uploads streamed to the local store (on
//! SQLite, PostgreSQL and MariaDB) and to S3 (moto's server, started here),
//! read back whole, by range and conditionally; owners only; the size limit
//! enforced while the body arrives; nothing left in the store by an upload
//! that fails, is cut off, or is replaced.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{register, token_for};
use crate::commerce::{expect, expect_error, send};
use crate::db::{in_ci, MyDatabase, PgDatabase};
use crate::helpers::{Conn, Drover, Options, Response};

/// `len` bytes that differ from one upload to the next (`seed`).
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `method path` with `body`, with the given headers.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let framed = headers.iter().any(|(n, _)| *n == "transfer-encoding" || *n == "content-length");
    if method == "PUT" && !framed {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(head.as_bytes()).await.unwrap();
    // A refusal may come before the whole body is sent.
    let _ = conn.send(body).await;
    conn.read_response().await.unwrap()
}

async fn upload(addr: SocketAddr, token: &str, name: &str, kind: &str, body: &[u8]) -> Response {
    call(addr, "PUT", &format!("/v1/files/{name}"), token, &[("content-type", kind)], body).await
}

async fn download(addr: SocketAddr, token: &str, name: &str, headers: &[(&str, &str)]) -> Response {
    call(addr, "GET", &format!("/v1/files/{name}"), token, headers, b"").await
}

/// The head of a `HEAD` response, and what follows it on the connection
/// (a pipelined `/healthz`): a body would show up there.
async fn head(addr: SocketAddr, token: &str, name: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "HEAD /v1/files/{name} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    let end = text.find("\r\n\r\n").unwrap() + 4;
    (text[..end].to_ascii_lowercase(), text[end..].to_owned())
}

/// Every file under `dir`, staging files included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Waits until `check` holds, for up to five seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the store holds: objects (and, on S3, unfinished multipart uploads).
trait Inspect {
    async fn objects(&self) -> usize;
}

struct LocalStore(PathBuf);

impl Inspect for LocalStore {
    async fn objects(&self) -> usize {
        files_under(&self.0).len()
    }
}

/// Signs up two users; their tokens.
async fn users(drover: &Drover) -> (String, String) {
    expect(&register(drover.addr, "owner@example.com", "correct horse", "Owner").await, 201);
    expect(&register(drover.addr, "other@example.com", "correct horse", "Other").await, 201);
    (
        token_for(drover.addr, "owner@example.com", "correct horse").await,
        token_for(drover.addr, "other@example.com", "correct horse").await,
    )
}

/// Everything a client does with files, on any store; `size` is the first
/// upload's (over S3's part size there, so that it goes in several parts).
async fn files_story(drover: &Drover, store: &impl Inspect, size: usize) {
    let addr = drover.addr;
    let (owner, other) = users(drover).await;
    let first = content(size, 1);

    // Larger than http.max_body_bytes (1 MiB): uploads have their own limit.
    let created = upload(addr, &owner, "hello%20world.txt", "text/plain", &first).await;
    let body = expect(&created, 201);
    let tag = format!("\"{}\"", sha256(&first));
    assert_eq!(created.header("etag"), Some(tag.as_str()));
    assert_eq!(created.header("location"), Some("/v1/files/hello%20world.txt"));
    assert_eq!(body["name"], "hello world.txt");
    assert_eq!(body["size"], size);
    assert_eq!(body["sha256"], sha256(&first));
    assert_eq!(body["content_type"], "text/plain");
    assert_eq!(store.objects().await, 1);

    // Whole, not compressed even when the client would accept it.
    let got = download(addr, &owner, "hello%20world.txt", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == first, "the same bytes come back");
    assert_eq!(got.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(got.header("content-encoding"), None);
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert_eq!(got.header("etag"), Some(tag.as_str()));
    assert_eq!(got.header("cache-control"), Some("private, no-cache"));
    assert_eq!(got.header("content-disposition"), Some("attachment; filename*=UTF-8''hello%20world.txt"));
    let modified = got.header("last-modified").unwrap().to_owned();

    // HEAD: the same head, no body.
    let (head_text, after) = head(addr, &owner, "hello%20world.txt").await;
    assert!(head_text.starts_with("http/1.1 200"), "{head_text}");
    assert!(head_text.contains(&format!("content-length: {size}\r\n")), "{head_text}");
    assert!(after.starts_with("HTTP/1.1 200"), "no body after a HEAD response: {after:.80}");

    // Conditional requests.
    let current = download(addr, &owner, "hello%20world.txt", &[("if-none-match", &tag)]).await;
    assert_eq!(current.status, 304);
    assert!(current.body.is_empty());
    assert_eq!(current.header("etag"), Some(tag.as_str()));
    let weak = format!("\"nope\", W/{tag}");
    assert_eq!(download(addr, &owner, "hello%20world.txt", &[("if-none-match", &weak)]).await.status, 304);
    assert_eq!(
        download(addr, &owner, "hello%20world.txt", &[("if-none-match", "\"old\"")]).await.status,
        200
    );
    assert_eq!(
        download(addr, &owner, "hello%20world.txt", &[("if-modified-since", &modified)]).await.status,
        304
    );
    let long_ago = "Sat, 01 Jan 2000 00:00:00 GMT";
    assert_eq!(
        download(addr, &owner, "hello%20world.txt", &[("if-modified-since", long_ago)]).await.status,
        200
    );

    // Ranges.
    let part = download(addr, &owner, "hello%20world.txt", &[("range", "bytes=100-199")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some(format!("bytes 100-199/{size}").as_str()));
    assert!(part.body == first[100..200]);
    let tail = download(addr, &owner, "hello%20world.txt", &[("range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert!(tail.body == first[size - 10..]);
    let open =
        download(addr, &owner, "hello%20world.txt", &[("range", &format!("bytes={}-", size - 5))]).await;
    assert!(open.status == 206 && open.body == first[size - 5..]);
    let outside = download(addr, &owner, "hello%20world.txt", &[("range", &format!("bytes={size}-"))]).await;
    expect_error(&outside, 416, "range_not_satisfiable");
    assert_eq!(outside.header("content-range"), Some(format!("bytes */{size}").as_str()));
    let several = download(addr, &owner, "hello%20world.txt", &[("range", "bytes=0-1,5-6")]).await;
    assert!(several.status == 200 && several.body.len() == size, "several ranges: the whole file");
    let garbage = download(addr, &owner, "hello%20world.txt", &[("range", "lines=1-2")]).await;
    assert_eq!(garbage.status, 200, "a Range that does not parse is ignored");
    let still =
        download(addr, &owner, "hello%20world.txt", &[("range", "bytes=0-9"), ("if-range", &tag)]).await;
    assert_eq!(still.status, 206);
    let changed =
        download(addr, &owner, "hello%20world.txt", &[("range", "bytes=0-9"), ("if-range", "\"other\"")])
            .await;
    assert_eq!(changed.status, 200, "If-Range that no longer holds: the whole file");

    // Owners only: another user has a namespace of their own.
    expect_error(&download(addr, &other, "hello%20world.txt", &[]).await, 404, "not_found");
    let theirs = content(10, 9);
    expect(&upload(addr, &other, "hello%20world.txt", "text/plain", &theirs).await, 201);
    assert!(download(addr, &owner, "hello%20world.txt", &[]).await.body == first);
    assert!(download(addr, &other, "hello%20world.txt", &[]).await.body == theirs);
    expect_error(&download(addr, "not-a-token", "hello%20world.txt", &[]).await, 401, "invalid_token");
    let stranger = crate::helpers::get(addr, "/v1/files").await.unwrap();
    expect_error(&stranger, 401, "unauthenticated");

    // Replacing: the new bytes, and the old object is gone from the store.
    let second = content(5000, 2);
    let replaced = upload(addr, &owner, "hello%20world.txt", "application/octet-stream", &second).await;
    expect(&replaced, 200);
    assert!(download(addr, &owner, "hello%20world.txt", &[]).await.body == second);
    assert_eq!(store.objects().await, 2, "one object per file: the owner's and the other user's");

    // A body cut off halfway leaves the previous version, and nothing else.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "PUT /v1/files/hello%20world.txt HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {owner}\r\n\
         content-length: {}\r\n\r\n",
        size
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&first[..size / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    eventually("an upload cut off leaves nothing in the store", async || store.objects().await == 2).await;
    assert!(download(addr, &owner, "hello%20world.txt", &[]).await.body == second);

    // Listing, newest first, a page at a time.
    for name in ["a.bin", "b.bin", "c.bin"] {
        expect(&upload(addr, &owner, name, "application/octet-stream", b"abc").await, 201);
    }
    let page = expect(&send(addr, "GET", "/v1/files?limit=2", &owner, None, &[]).await, 200);
    let names: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c.bin", "b.bin"]);
    let next = page["next"].as_str().unwrap();
    let rest =
        expect(&send(addr, "GET", &format!("/v1/files?limit=2&cursor={next}"), &owner, None, &[]).await, 200);
    let names: Vec<&str> =
        rest["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.bin", "hello world.txt"]);
    assert!(rest["next"].is_null());
    let theirs = expect(&send(addr, "GET", "/v1/files", &other, None, &[]).await, 200);
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);

    // Deleting.
    assert_eq!(call(addr, "DELETE", "/v1/files/a.bin", &owner, &[], b"").await.status, 204);
    expect_error(&download(addr, &owner, "a.bin", &[]).await, 404, "not_found");
    expect_error(&call(addr, "DELETE", "/v1/files/a.bin", &owner, &[], b"").await, 404, "not_found");
    assert_eq!(store.objects().await, 4);

    // Bad requests.
    let bad = upload(addr, &owner, "..%2Fetc", "text/plain", b"x").await;
    assert_eq!(expect_error(&bad, 400, "invalid_request")["error"]["details"][0]["field"], "name");
    let bidi = upload(addr, &owner, "gpj%E2%80%AEexe", "text/plain", b"x").await;
    expect_error(&bidi, 400, "invalid_request");
    let coded =
        call(addr, "PUT", "/v1/files/z.gz", &owner, &[("content-encoding", "gzip")], b"\x1f\x8b\x08").await;
    expect_error(&coded, 415, "unsupported_media_type");
    assert_eq!(store.objects().await, 4, "refused uploads store nothing");
}

/// Past `files.max_bytes`: refused from the declared length before the body
/// is read, and while a chunked body streams; nothing kept either way.
async fn limit_story(drover: &Drover, store: &impl Inspect) {
    let addr = drover.addr;
    let (owner, _) = users(drover).await;
    expect(&upload(addr, &owner, "keep.bin", "application/octet-stream", &content(1000, 3)).await, 201);
    let declared = call(addr, "PUT", "/v1/files/big.bin", &owner, &[("content-length", "300001")], b"").await;
    expect_error(&declared, 413, "body_too_large");

    let body = content(300_001, 4);
    let mut chunked = Vec::new();
    for piece in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed =
        call(addr, "PUT", "/v1/files/keep.bin", &owner, &[("transfer-encoding", "chunked")], &chunked).await;
    expect_error(&streamed, 413, "body_too_large");
    eventually("a refused upload leaves nothing in the store", async || store.objects().await == 1).await;
    assert!(
        download(addr, &owner, "keep.bin", &[]).await.body == content(1000, 3),
        "the previous version stays"
    );
    // Exactly the limit is fine.
    expect(&upload(addr, &owner, "edge.bin", "application/octet-stream", &content(300_000, 5)).await, 201);
}

fn local(drover: &Drover) -> LocalStore {
    LocalStore(drover.dir.path().join("data").join("files"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_sqlite_and_the_local_store() {
    let drover = Drover::start(2);
    files_story(&drover, &local(&drover), 3 * 1024 * 1024 + 17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    files_story(&drover, &local(&drover), 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    let drover = Drover::start_with(Options {
        workers: 2,
        args: vec!["--database-url", &db.url],
        ..Options::default()
    });
    files_story(&drover, &local(&drover), 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_holds_while_the_body_streams() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_FILES__MAX_BYTES", "300000")],
        ..Options::default()
    });
    limit_story(&drover, &local(&drover)).await;
}

/// moto's S3 server on a free loopback port, with one bucket; stopped by
/// its pid when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
    bucket: String,
}

impl Moto {
    async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                assert!(!in_ci(), "moto_server is required in CI (.ci/run installs it): {error}");
                eprintln!("SKIPPED: moto_server not found ({error}); python3 -m pip install 'moto[server]'");
                return None;
            }
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let moto = Moto { child, addr, bucket: format!("drover-test-{}", std::process::id()) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start listening");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = moto.request("PUT", &format!("/{}", moto.bucket)).await;
        assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
        Some(moto)
    }

    async fn request(&self, method: &str, path: &str) -> Response {
        let mut conn = Conn::connect(self.addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\n\r\n", self.addr);
        conn.send(request.as_bytes()).await.unwrap();
        conn.read_response().await.unwrap()
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("DROVER_FILES__STORE", format!("s3://{}/uploads", self.bucket)),
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Inspect for Moto {
    /// Objects under the prefix, plus multipart uploads not completed nor
    /// aborted: both must be gone when an upload fails.
    async fn objects(&self) -> usize {
        let listed = self.request("GET", &format!("/{}?list-type=2&prefix=uploads/", self.bucket)).await;
        let uploads = self.request("GET", &format!("/{}?uploads", self.bucket)).await;
        let count = |r: &Response, tag: &str| String::from_utf8_lossy(&r.body).matches(tag).count();
        count(&listed, "<Key>") + count(&uploads, "<UploadId>")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_s3_in_several_parts() {
    let Some(moto) = Moto::start().await else { return };
    let env = moto.env();
    let drover = Drover::start_with(Options {
        workers: 2,
        env: env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        ..Options::default()
    });
    // 12 MiB: three parts of S3's 5 MiB minimum.
    files_story(&drover, &moto, 12 * 1024 * 1024 + 5).await;
    assert!(files_under(&drover.dir.path().join("data").join("files")).is_empty(), "nothing stored locally");
}
