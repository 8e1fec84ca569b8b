//! Compressed responses and gzip request bodies through the real binary:
//! negotiation (q-values, `*`, identity refused), each coding decoded back
//! to the identity body, `Vary`, small bodies left alone, a route switched
//! off, and a gzip bomb refused at the body limit.

use std::io::{Read, Write};
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::commerce::{admin_token, expect, expect_error};
use crate::helpers::{Conn, Drover, Options, Response};

/// One request with raw body bytes and extra headers.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let mut conn = Conn::connect(addr).await.unwrap();
    conn.send(&bytes).await.unwrap();
    conn.read_response().await.unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The body decoded as its `Content-Encoding` says.
fn decoded(response: &Response) -> Vec<u8> {
    let body = &response.body[..];
    let mut out = Vec::new();
    match response.header("content-encoding") {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap();
        }
        Some("zstd") => out = zstd::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
    out
}

/// A catalog large enough that its listing is worth compressing.
async fn catalog(drover: &Drover) -> String {
    let admin = admin_token(drover, None).await;
    for n in 0..30 {
        let body = json!({
            "sku": format!("SKU-{n:03}"),
            "name": format!("Product number {n} with a long enough name to fill the listing"),
            "price": {"amount": 1000 + n, "currency": "EUR"},
            "stock": 5,
        });
        let sent = request(
            drover.addr,
            "POST",
            "/v1/products",
            &admin,
            body.to_string().as_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
        expect(&sent, 201);
    }
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_negotiated_and_decode_to_the_same_body() {
    let drover = Drover::start(1);
    let admin = catalog(&drover).await;
    let addr = drover.addr;
    let list = |accept: Option<&'static str>| {
        let admin = admin.clone();
        async move {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
            request(addr, "GET", "/v1/products?limit=100", &admin, b"", &headers).await
        }
    };
    let plain = list(None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    assert!(plain.body.len() > 2048, "{} bytes", plain.body.len());
    let items = serde_json::from_slice::<Value>(&plain.body).unwrap()["items"].as_array().unwrap().len();
    assert_eq!(items, 30);

    for (accept, coding) in [
        ("gzip", Some("gzip")),
        ("gzip, deflate, br, zstd", Some("br")),
        ("zstd", Some("zstd")),
        ("br;q=0.2, gzip;q=0.9", Some("gzip")),
        ("*", Some("br")),
        ("deflate", None),
        ("gzip;q=0.5, identity", None),
        ("br;q=0", None),
    ] {
        let response = list(Some(accept)).await;
        assert_eq!(response.status, 200, "{accept}");
        assert_eq!(response.header("content-encoding"), coding, "{accept}");
        assert_eq!(response.header("vary"), Some("accept-encoding"), "{accept}");
        let length: usize = response.header("content-length").unwrap().parse().unwrap();
        assert_eq!(length, response.body.len(), "{accept}: the length is the encoded body's");
        if coding.is_some() {
            assert!(response.body.len() < plain.body.len() / 3, "{accept}: {} bytes", response.body.len());
        }
        assert_eq!(decoded(&response), plain.body, "{accept}");
    }

    // Accept-Encoding split over two lines is one list.
    let split = request(
        addr,
        "GET",
        "/v1/products?limit=100",
        &admin,
        b"",
        &[("accept-encoding", "deflate"), ("accept-encoding", "zstd;q=0.5, identity;q=0.1")],
    )
    .await;
    assert_eq!(split.header("content-encoding"), Some("zstd"));
    assert_eq!(decoded(&split), plain.body);

    // Identity refused and nothing else acceptable: 406 in the one error shape.
    let refused = list(Some("identity;q=0, deflate")).await;
    let body = expect_error(&refused, 406, "not_acceptable");
    assert_eq!(body["error"]["details"][0]["field"], "accept-encoding", "{body}");

    // A small body goes out as it is, whatever the client accepts: it is
    // never compressed, so it does not vary either.
    for accept in ["gzip", "gzip, identity;q=0"] {
        let one =
            request(drover.addr, "GET", "/v1/products?limit=1", &admin, b"", &[("accept-encoding", accept)])
                .await;
        assert_eq!(one.status, 200);
        assert!(one.body.len() < 1024, "{} bytes", one.body.len());
        assert_eq!((one.header("content-encoding"), one.header("vary")), (None, None), "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_request_bodies_are_decoded_within_the_body_limit() {
    let drover = Drover::start(1);
    let admin = admin_token(&drover, None).await;
    let product =
        json!({"sku": "GZ-1", "name": "Zipped", "price": {"amount": 500, "currency": "EUR"}, "stock": 3});
    let zipped = gzip(product.to_string().as_bytes());
    let created = request(
        drover.addr,
        "POST",
        "/v1/products",
        &admin,
        &zipped,
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(expect(&created, 201)["sku"], "GZ-1");

    // 1 MiB + 1 of spaces inside a JSON string: well under 2 KiB zipped,
    // past http.max_body_bytes (1 MiB) once inflated.
    let mut bomb = b"{\"sku\":\"".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 1 << 20));
    bomb.extend_from_slice(b"\"}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < 2048, "{} bytes", bomb.len());
    let refused = request(
        drover.addr,
        "POST",
        "/v1/products",
        &admin,
        &bomb,
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await;
    expect_error(&refused, 413, "body_too_large");

    let brotli = request(
        drover.addr,
        "POST",
        "/v1/products",
        &admin,
        b"{}",
        &[("content-type", "application/json"), ("content-encoding", "br")],
    )
    .await;
    expect_error(&brotli, 415, "unsupported_media_type");
    assert_eq!(brotli.header("accept-encoding"), Some("gzip"));

    let corrupt = request(
        drover.addr,
        "POST",
        "/v1/products",
        &admin,
        b"not gzip at all",
        &[("content-type", "application/json"), ("content-encoding", "gzip")],
    )
    .await;
    expect_error(&corrupt, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_can_be_switched_off_per_route_or_entirely() {
    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__COMPRESSION__OFF_ROUTES", "[\"/v1/products\"]")],
        ..Options::default()
    });
    let admin = catalog(&drover).await;
    let list =
        request(drover.addr, "GET", "/v1/products?limit=100", &admin, b"", &[("accept-encoding", "gzip")])
            .await;
    assert_eq!(list.status, 200);
    assert!(list.body.len() > 2048);
    assert_eq!((list.header("content-encoding"), list.header("vary")), (None, None));
    drop(drover);

    let drover = Drover::start_with(Options {
        workers: 1,
        env: vec![("DROVER_HTTP__COMPRESSION__ENABLED", "false")],
        ..Options::default()
    });
    let admin = catalog(&drover).await;
    let list =
        request(drover.addr, "GET", "/v1/products?limit=100", &admin, b"", &[("accept-encoding", "br")])
            .await;
    assert_eq!((list.header("content-encoding"), list.header("vary")), (None, None));
}
