//! Response compression (`[http.compression]`): `Accept-Encoding` negotiated
//! among brotli, zstd and gzip (q-values, `*`, `identity;q=0`), the body
//! encoded by the maintained encoders (`brotli`, `zstd`, `flate2`), and the
//! headers a cache needs: `Vary: Accept-Encoding` on every compressible
//! response, `Content-Encoding`, a length for the encoded body, and an
//! `ETag` of its own for each encoding. Also gzip request bodies, decoded
//! with the size limit applied to what they inflate to.
//!
//! Small bodies (under `min_bytes`) go out as they are: the header costs
//! more than it saves. Bodies larger than [`INLINE_MAX`] are encoded on the
//! worker's blocking pool, so a slow level never stalls the event loop; when
//! the pool is full they go out uncompressed rather than wait.

use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_worker::blocking::{BlockingPool, Busy};
use drover_worker::{Body, Request, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::{ApiError, Reply};
use crate::config::CompressionConfig;

/// Bodies up to this size are encoded on the event loop: at the default
/// levels that takes well under a millisecond.
pub const INLINE_MAX: usize = 64 * 1024;

/// A content coding drover can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    /// Its token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    pub fn from_token(token: &str) -> Option<Self> {
        match token {
            "br" => Some(Coding::Brotli),
            "zstd" => Some(Coding::Zstd),
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }

    /// The levels each accepts, as `[http.compression]` documents them.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Coding::Brotli => 0..=11,
            Coding::Zstd => 1..=22,
            Coding::Gzip => 1..=9,
        }
    }
}

/// What to send, given the client's `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The body as it is.
    Identity,
    /// The body in this coding.
    Encode(Coding),
    /// Nothing the client accepts: it refused `identity` and every coding
    /// offered. 406.
    NotAcceptable,
}

/// The coding to send for an `Accept-Encoding` value, among `offered` (in
/// the server's order of preference, which breaks ties between equal
/// q-values). No header: identity, as most clients that say nothing expect.
pub fn negotiate(accept: Option<&str>, offered: &[Coding]) -> Choice {
    let Some(accept) = accept else { return Choice::Identity };
    let mut star: Option<f32> = None;
    let mut identity: Option<f32> = None;
    let mut listed: Vec<(Coding, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if token.is_empty() {
            continue;
        }
        let mut q = Some(1.0);
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                if name.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q));
                }
            }
        }
        // An item with a malformed q-value is ignored, not trusted.
        let Some(q) = q else { continue };
        match token.as_str() {
            "*" => star = Some(q),
            "identity" => identity = Some(q),
            token => {
                if let Some(coding) = Coding::from_token(token) {
                    listed.push((coding, q));
                }
            }
        }
    }
    let q_of =
        |coding: Coding| listed.iter().find(|(c, _)| *c == coding).map(|(_, q)| *q).or(star).unwrap_or(0.0);
    let mut best: Option<(Coding, f32)> = None;
    for &coding in offered {
        let q = q_of(coding);
        if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    // Identity is acceptable unless refused, by name or through `*`.
    let identity_q = identity.or(star.filter(|_| identity.is_none())).unwrap_or(1.0);
    match best {
        // A client that names identity above every coding prefers it.
        Some((_, q)) if identity.is_some_and(|identity_q| identity_q > q) => Choice::Identity,
        Some((coding, _)) => Choice::Encode(coding),
        None if identity_q > 0.0 => Choice::Identity,
        None => Choice::NotAcceptable,
    }
}

/// Encodes `body` at `level` (in [`Coding::levels`]).
pub fn encode(coding: Coding, level: i32, body: &[u8]) -> std::io::Result<Vec<u8>> {
    // Most JSON shrinks to a fifth or less: start there.
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    match coding {
        Coding::Gzip => {
            let level = flate2::Compression::new(level.clamp(1, 9) as u32);
            let mut encoder = flate2::write::GzEncoder::new(out, level);
            encoder.write_all(body)?;
            out = encoder.finish()?;
        }
        Coding::Brotli => {
            // lgwin 22: brotli's default window (4 MiB).
            let mut encoder =
                brotli::CompressorWriter::new(&mut out, 64 * 1024, level.clamp(0, 11) as u32, 22);
            encoder.write_all(body)?;
            encoder.flush()?;
            drop(encoder);
        }
        Coding::Zstd => {
            out = zstd::bulk::compress(body, level)?;
        }
    }
    Ok(out)
}

/// Decodes a gzip request body, refusing it once it inflates past `limit`
/// bytes: a small bomb that expands to gigabytes costs at most `limit`.
pub fn gunzip(body: &[u8], limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut decoded = Vec::with_capacity(body.len().saturating_mul(4).min(limit as usize));
    let read =
        flate2::read::MultiGzDecoder::new(body).take(limit.saturating_add(1)).read_to_end(&mut decoded);
    match read {
        Ok(n) if n as u64 > limit => Err(ApiError::PayloadTooLarge { limit }),
        Ok(_) => Ok(decoded),
        Err(_) => Err(ApiError::invalid("body", "the gzip body is corrupt")),
    }
}

/// The entity tag of an encoded variant: `"abc"` becomes `"abc-br"`, so a
/// cache never takes one encoding's bytes for another's (RFC 9110 §8.8.3).
fn variant_etag(etag: &HeaderValue, coding: Coding) -> Option<HeaderValue> {
    let text = etag.to_str().ok()?;
    let open = text.strip_suffix('"')?;
    HeaderValue::from_str(&format!("{open}-{}\"", coding.token())).ok()
}

/// `If-None-Match` with our variant suffixes taken off, so a handler that
/// knows only its identity tag recognises what the client cached.
fn strip_variant_tags(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    if !text.contains("-br\"") && !text.contains("-zstd\"") && !text.contains("-gzip\"") {
        return None;
    }
    let stripped = text.replace("-br\"", "\"").replace("-zstd\"", "\"").replace("-gzip\"", "\"");
    HeaderValue::from_str(&stripped).ok()
}

/// `[http.compression]`, ready to use.
pub struct Compression {
    /// In order of preference, with each one's level.
    codings: Vec<(Coding, i32)>,
    offered: Vec<Coding>,
    min_bytes: usize,
    content_types: Vec<String>,
    off_routes: Vec<String>,
    blocking: BlockingPool,
}

/// What a request's negotiation decided, carried to its response.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    choice: Choice,
    head: bool,
}

impl Compression {
    /// `None` when compression is off.
    pub fn new(config: &CompressionConfig, blocking: BlockingPool) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        let codings: Vec<(Coding, i32)> = config
            .algorithms
            .iter()
            .filter_map(|token| Coding::from_token(token))
            .map(|coding| {
                let level = match coding {
                    Coding::Brotli => config.br_level,
                    Coding::Zstd => config.zstd_level,
                    Coding::Gzip => config.gzip_level,
                };
                (coding, level)
            })
            .collect();
        Some(Self {
            offered: codings.iter().map(|(coding, _)| *coding).collect(),
            codings,
            min_bytes: config.min_bytes,
            content_types: config.content_types.iter().map(|t| t.to_ascii_lowercase()).collect(),
            off_routes: config.off_routes.clone(),
            blocking,
        })
    }

    /// Reads the request's `Accept-Encoding` before it is handed on, and
    /// takes our variant suffixes off its `If-None-Match`.
    pub fn negotiate(&self, request: &mut Request) -> Negotiated {
        // One pass over the few headers a request has is cheaper than two
        // hashed lookups, on the path every request takes.
        let (mut accept, mut several, mut if_none_match) = (None, false, false);
        for (name, value) in request.headers() {
            if name == header::ACCEPT_ENCODING {
                several |= accept.is_some();
                accept = Some(value);
            } else if name == header::IF_NONE_MATCH {
                if_none_match = true;
            }
        }
        let choice = match accept {
            None => Choice::Identity,
            Some(_) if several => {
                negotiate(joined(request.headers(), header::ACCEPT_ENCODING).as_deref(), &self.offered)
            }
            Some(one) => negotiate(Some(one.to_str().unwrap_or("")), &self.offered),
        };
        if if_none_match {
            let headers = request.headers_mut();
            if let Some(stripped) = headers.get(header::IF_NONE_MATCH).and_then(strip_variant_tags) {
                headers.insert(header::IF_NONE_MATCH, stripped);
            }
        }
        Negotiated { choice, head: request.method() == Method::HEAD }
    }

    /// Whether `reply` is sure to go out as it is: a ready body too small to
    /// compress (most responses of a hot API). Checked in place, before
    /// anything is moved.
    pub fn leaves_alone(&self, reply: &Reply) -> bool {
        match reply {
            Reply::Ready(Some(response)) => hyper::body::Body::size_hint(response.body())
                .exact()
                .is_some_and(|len| len < self.min_bytes as u64),
            _ => false,
        }
    }

    /// Whether responses of this media type are compressed.
    fn compressible(&self, headers: &HeaderMap) -> bool {
        let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        self.content_types.iter().any(|t| t.eq_ignore_ascii_case(media))
    }

    /// The reply with its response compressed as negotiated.
    pub fn apply(self: &Rc<Self>, route: &'static str, negotiated: Negotiated, reply: Reply) -> Reply {
        if self.off_routes.iter().any(|off| off == route) {
            return reply;
        }
        match reply {
            Reply::Ready(Some(response)) => self.respond(negotiated, response),
            Reply::Pending(future) => {
                let this = self.clone();
                Reply::Pending(Box::pin(async move {
                    let response = future.await;
                    this.respond(negotiated, response).await
                }))
            }
            done @ Reply::Ready(None) => done,
        }
    }

    fn respond(self: &Rc<Self>, negotiated: Negotiated, mut response: Response) -> Reply {
        let status = response.status();
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // Cheapest first: most responses of a hot API are small, and a
        // small body is never compressed, so it does not vary either.
        let stream = response.body().is_stream();
        let len = hyper::body::Body::size_hint(response.body()).exact();
        let small = len.is_some_and(|len| len < self.min_bytes as u64);
        if bodiless || small {
            return Reply::ready(response);
        }
        let headers = response.headers_mut();
        // A response that offers byte ranges (a stored file) goes out as it
        // is: its ranges and its Content-Length count the stored bytes.
        if headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::ACCEPT_RANGES)
            || !self.compressible(headers)
        {
            return Reply::ready(response);
        }
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        let no_transform = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform")));
        let coding = match negotiated.choice {
            Choice::Identity => return Reply::ready(response),
            Choice::NotAcceptable => return Reply::ready(not_acceptable(&self.offered)),
            Choice::Encode(coding) => coding,
        };
        if no_transform || negotiated.head {
            return Reply::ready(response);
        }
        let level = self.codings.iter().find(|(c, _)| *c == coding).map_or(0, |(_, level)| *level);
        if stream {
            // Piece by piece as the stream produces them: never the whole.
            let Some(inner) = response.body_mut().take_stream() else { return Reply::ready(response) };
            return match StreamEncoder::new(coding, level) {
                Ok(encoder) => {
                    let encoder = Some(Arc::new(Mutex::new(encoder)));
                    let blocking = self.blocking.clone();
                    *response.body_mut() = Body::stream(Encoded { inner, encoder, blocking, pending: None });
                    Reply::ready(mark_encoded(response, coding))
                }
                Err(_) => {
                    *response.body_mut() = Body::stream(inner);
                    Reply::ready(response)
                }
            };
        }
        let body = take_bytes(&mut response);
        if body.len() <= INLINE_MAX {
            let encoded = encode(coding, level, &body);
            return Reply::ready(finish(response, coding, body, encoded));
        }
        let this = self.clone();
        Reply::Pending(Box::pin(async move {
            let job = body.clone();
            match this.blocking.run(move || encode(coding, level, &job)).await {
                Ok(encoded) => finish(response, coding, body, encoded),
                // The pool is full: the bytes as they are beat a wait.
                Err(_busy) => {
                    *response.body_mut() = Body::new(body);
                    response
                }
            }
        }))
    }
}

/// An encoder fed a stream's pieces as they come, each flushed so the
/// client gets it without waiting for the next.
enum StreamEncoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl StreamEncoder {
    fn new(coding: Coding, level: i32) -> std::io::Result<Self> {
        Ok(match coding {
            Coding::Gzip => StreamEncoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            Coding::Brotli => StreamEncoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                64 * 1024,
                level.clamp(0, 11) as u32,
                22,
            ))),
            Coding::Zstd => StreamEncoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level)?),
        })
    }

    /// Encodes a piece; what is ready to send.
    fn piece(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let out = match self {
            StreamEncoder::Gzip(encoder) => {
                encoder.write_all(data)?;
                encoder.flush()?;
                encoder.get_mut()
            }
            StreamEncoder::Brotli(encoder) => {
                encoder.write_all(data)?;
                encoder.flush()?;
                encoder.get_mut()
            }
            StreamEncoder::Zstd(encoder) => {
                encoder.write_all(data)?;
                encoder.flush()?;
                encoder.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// The end of the encoded stream.
    fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            StreamEncoder::Gzip(encoder) => encoder.finish()?,
            StreamEncoder::Brotli(encoder) => encoder.into_inner(),
            StreamEncoder::Zstd(encoder) => encoder.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// A streamed body, encoded piece by piece on the blocking pool, one piece
/// at a time: the event loop only hands pieces over, so other requests are
/// not kept waiting behind the encoding of a large report. A piece is
/// encoded on the loop only when the pool is full.
struct Encoded {
    inner: drover_worker::BodyStream,
    /// Shared with the piece being encoded on the pool; `None` once
    /// finished.
    encoder: Option<Arc<Mutex<StreamEncoder>>>,
    blocking: BlockingPool,
    /// The piece on the blocking pool, and the piece itself, to encode here
    /// if the pool turns it down.
    pending: Option<(EncodeJob, Bytes)>,
}

type EncodeJob = std::pin::Pin<Box<dyn std::future::Future<Output = Result<std::io::Result<Bytes>, Busy>>>>;

fn lock(encoder: &Mutex<StreamEncoder>) -> std::sync::MutexGuard<'_, StreamEncoder> {
    // A piece that panicked while encoding leaves a stream that cannot go
    // on anyway; the next piece reports the error.
    encoder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl hyper::body::Body for Encoded {
    type Data = Bytes;
    type Error = drover_worker::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.clone() else { return Poll::Ready(None) };
            if let Some((job, _)) = this.pending.as_mut() {
                let done = std::task::ready!(job.as_mut().poll(cx));
                let (_, piece) = this.pending.take().expect("a pending piece");
                let out = match done {
                    Ok(out) => out?,
                    Err(Busy) => lock(&encoder).piece(&piece)?,
                };
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(out))));
                }
                continue;
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let (pool, piece) = (this.blocking.clone(), data.clone());
                    let job: EncodeJob =
                        Box::pin(async move { pool.run(move || lock(&encoder).piece(&piece)).await });
                    this.pending = Some((job, data));
                }
                Poll::Ready(None) => {
                    // The end is a few bytes: encoded here.
                    this.encoder = None;
                    let out = match Arc::try_unwrap(encoder) {
                        Ok(encoder) => encoder
                            .into_inner()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .finish()?,
                        Err(_) => return Poll::Ready(Some(Err("a piece is still being encoded".into()))),
                    };
                    return Poll::Ready((!out.is_empty()).then(|| Ok(hyper::body::Frame::data(out))));
                }
            }
        }
    }
}

/// The headers of a response whose body is now in `coding`.
fn mark_encoded(mut response: Response, coding: Coding) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    // hyper writes the length of the new body, or chunks a stream.
    headers.remove(header::CONTENT_LENGTH);
    if let Some(etag) = headers.get(header::ETAG).and_then(|etag| variant_etag(etag, coding)) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// The bytes of a full body, taken out of the response.
fn take_bytes(response: &mut Response) -> Bytes {
    std::mem::take(response.body_mut()).bytes().unwrap_or_default()
}

/// The response with `encoded` as its body, or with `original` if encoding
/// failed (it cannot, writing to memory; but a body as it is beats an error).
fn finish(
    mut response: Response,
    coding: Coding,
    original: Bytes,
    encoded: std::io::Result<Vec<u8>>,
) -> Response {
    match encoded {
        Ok(encoded) => {
            *response.body_mut() = Body::new(Bytes::from(encoded));
            mark_encoded(response, coding)
        }
        Err(_) => {
            *response.body_mut() = Body::new(original);
            response
        }
    }
}

fn not_acceptable(offered: &[Coding]) -> Response {
    let tokens: Vec<&str> = offered.iter().map(|c| c.token()).collect();
    ApiError::NotAcceptable { offered: tokens.join(", ") }.into_response()
}

/// Every value of a header, joined as one list (a client may split
/// `Accept-Encoding` over several lines).
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |mut all, v| {
        all.push_str(", ");
        all.push_str(v);
        all
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    #[test]
    fn the_best_q_value_wins_and_our_order_breaks_ties() {
        use Choice::*;
        use Coding::*;
        for (accept, expected) in [
            (None, Identity),
            (Some(""), Identity),
            (Some("gzip"), Encode(Gzip)),
            (Some("gzip, br"), Encode(Brotli)),
            (Some("gzip, deflate, br, zstd"), Encode(Brotli)),
            (Some("GZIP;Q=0.5, zstd;q=0.8"), Encode(Zstd)),
            (Some("br;q=0, gzip"), Encode(Gzip)),
            (Some("*"), Encode(Brotli)),
            (Some("*;q=0.1, gzip;q=0.5"), Encode(Gzip)),
            (Some("deflate"), Identity),
            (Some("gzip;q=0.5, identity"), Identity),
            (Some("gzip;q=0.5, identity;q=0.2"), Encode(Gzip)),
            (Some("identity;q=0"), NotAcceptable),
            (Some("*;q=0"), NotAcceptable),
            (Some("deflate, identity;q=0"), NotAcceptable),
            (Some("*;q=0, identity"), Identity),
            (Some("gzip;q=nonsense"), Identity),
            (Some("gzip;q=2"), Identity),
            (Some("x-gzip"), Encode(Gzip)),
        ] {
            assert_eq!(negotiate(accept, &ALL), expected, "{accept:?}");
        }
        assert_eq!(negotiate(Some("br, gzip"), &[Coding::Gzip]), Choice::Encode(Coding::Gzip));
        assert_eq!(negotiate(Some("br"), &[Coding::Gzip]), Choice::Identity);
    }

    #[test]
    fn every_coding_round_trips() {
        let body = br#"{"items":[{"id":1,"name":"Widget"}]}"#.repeat(200);
        for coding in ALL {
            let level = *coding.levels().end();
            let encoded = encode(coding, level, &body).unwrap();
            assert!(encoded.len() < body.len() / 10, "{coding:?}: {} bytes", encoded.len());
            let decoded = match coding {
                Coding::Gzip => gunzip(&encoded, 1 << 20).unwrap(),
                Coding::Zstd => zstd::decode_all(&encoded[..]).unwrap(),
                Coding::Brotli => {
                    let mut out = Vec::new();
                    brotli::Decompressor::new(&encoded[..], 4096).read_to_end(&mut out).unwrap();
                    out
                }
            };
            assert_eq!(decoded, body, "{coding:?}");
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit() {
        let bomb = encode(Coding::Gzip, 9, &vec![b' '; 10 << 20]).unwrap();
        assert!(bomb.len() < 16 * 1024, "{} bytes", bomb.len());
        assert!(
            matches!(gunzip(&bomb, 1 << 20), Err(ApiError::PayloadTooLarge { limit }) if limit == 1 << 20)
        );
        assert_eq!(gunzip(&bomb, 10 << 20).unwrap().len(), 10 << 20, "exactly the limit is fine");
        assert!(matches!(gunzip(b"not gzip", 100), Err(ApiError::Invalid { .. })));
    }

    fn config() -> CompressionConfig {
        CompressionConfig {
            enabled: true,
            algorithms: vec!["br".into(), "zstd".into(), "gzip".into()],
            br_level: 11,
            zstd_level: 3,
            gzip_level: 6,
            min_bytes: 1024,
            content_types: vec!["application/json".into()],
            off_routes: vec![],
        }
    }

    fn json_response(body: Vec<u8>) -> Response {
        crate::http::reply::with_type(StatusCode::OK, Bytes::from(body), "application/json")
    }

    #[tokio::test]
    async fn a_large_body_is_encoded_on_the_blocking_pool_or_sent_as_it_is_when_the_pool_is_full() {
        let body = br#"{"id":12345,"name":"a fairly long product name"},"#.repeat(4000);
        assert!(body.len() > INLINE_MAX);
        let negotiated = Negotiated { choice: Choice::Encode(Coding::Brotli), head: false };
        let pool = Rc::new(Compression::new(&config(), BlockingPool::new(2)).unwrap());
        let reply = pool.respond(negotiated, json_response(body.clone()));
        assert!(matches!(reply, Reply::Pending(_)), "not encoded on the event loop");
        let response = reply.await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "br");
        let encoded = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&encoded[..], 4096).read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded, body);

        let full = Rc::new(Compression::new(&config(), BlockingPool::new(0)).unwrap());
        let response = full.respond(negotiated, json_response(body.clone())).await;
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        let sent = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        assert_eq!(sent, body);
    }

    #[tokio::test]
    async fn a_streamed_body_is_encoded_piece_by_piece() {
        let pieces: Vec<Bytes> =
            (0..50).map(|i| Bytes::from(format!("{i},row {i},some text\n").repeat(40))).collect();
        let whole: Vec<u8> = pieces.concat();
        // On the blocking pool, and on the loop when the pool is full.
        for (coding, pool) in ALL.into_iter().flat_map(|coding| [(coding, 1), (coding, 0)]) {
            let compression = Rc::new(Compression::new(&config(), BlockingPool::new(pool)).unwrap());
            let frames = pieces
                .clone()
                .into_iter()
                .map(|p| Ok::<_, drover_worker::BoxError>(hyper::body::Frame::data(p)));
            let body = Body::stream(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
            let mut response = json_response(Vec::new());
            *response.body_mut() = body;
            let negotiated = Negotiated { choice: Choice::Encode(coding), head: false };
            let response = compression.respond(negotiated, response).await;
            assert_eq!(response.headers()[header::CONTENT_ENCODING], coding.token());
            assert!(response.body().is_stream(), "{coding:?}: still a stream");
            let encoded = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            let mut decoded = Vec::new();
            match coding {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&encoded[..]).read_to_end(&mut decoded).unwrap();
                }
                Coding::Zstd => decoded = zstd::decode_all(&encoded[..]).unwrap(),
                Coding::Brotli => {
                    brotli::Decompressor::new(&encoded[..], 4096).read_to_end(&mut decoded).unwrap();
                }
            }
            assert_eq!(decoded, whole, "{coding:?}");
        }
    }

    #[tokio::test]
    async fn other_media_types_and_bodiless_statuses_are_left_alone() {
        let compression = Rc::new(Compression::new(&config(), BlockingPool::new(1)).unwrap());
        let negotiated = Negotiated { choice: Choice::Encode(Coding::Gzip), head: false };
        let csv = crate::http::reply::with_type(StatusCode::OK, Bytes::from(vec![b'a'; 4096]), "text/csv");
        let response = compression.respond(negotiated, csv).await;
        assert!(response.headers().get(header::VARY).is_none(), "text/csv is not configured here");
        let mut none = json_response(vec![b' '; 4096]);
        *none.status_mut() = StatusCode::NOT_MODIFIED;
        let response = compression.respond(negotiated, none).await;
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn each_variant_has_its_own_entity_tag() {
        let etag = HeaderValue::from_static("W/\"v1\"");
        assert_eq!(variant_etag(&etag, Coding::Brotli).unwrap(), "W/\"v1-br\"");
        assert_eq!(variant_etag(&HeaderValue::from_static("\"x\""), Coding::Gzip).unwrap(), "\"x-gzip\"");
        let sent = HeaderValue::from_static("\"x-gzip\", W/\"v1-br\", \"y\"");
        assert_eq!(strip_variant_tags(&sent).unwrap(), "\"x\", W/\"v1\", \"y\"");
        assert!(strip_variant_tags(&HeaderValue::from_static("\"plain\"")).is_none());
    }
}
