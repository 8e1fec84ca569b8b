//! The id of each request: sent back as `x-request-id` on its response, and
//! readable by the application while it handles the request
//! ([`current`]), so that its log lines name the request the client and any
//! proxy in front can name too.
//!
//! A well-formed incoming `x-request-id` is kept (a proxy or the client
//! chose it). Without one, the trace id of a valid W3C `traceparent` is
//! used, so a trace that enters drover can be followed into its logs.
//! Otherwise the worker makes one: a prefix drawn once per worker from its
//! pid and the clock, then a counter, as 20 hex digits.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Longer incoming ids are ignored and replaced: an id is a log field, not a
/// place to carry data.
const MAX_ID_LEN: usize = 128;
/// A made id: 8 hex digits of the worker's prefix, 12 of the counter.
const MADE_LEN: usize = 20;
/// Ids are made this many at a time into one buffer, which each takes a
/// slice of: one allocation per batch rather than one per request.
const BATCH: usize = 64;

thread_local! {
    /// The id of the request whose code runs now (a worker is one thread).
    static CURRENT: RefCell<Option<HeaderValue>> = const { RefCell::new(None) };
}

/// The id of the request being handled, while the application's code for it
/// runs (its synchronous part and every poll of its future).
pub fn current() -> Option<HeaderValue> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Calls `f` with the current request's id as text (`None` outside a
/// request), for code that logs it without handling HTTP types.
pub fn read_current<T>(f: impl FnOnce(Option<&str>) -> T) -> T {
    CURRENT.with(|current| f(current.borrow().as_ref().and_then(|id| id.to_str().ok())))
}

/// Runs `f` with `id` as the [`current`] request id. The id is moved in
/// and back out rather than copied: this runs on every poll of a request.
pub(crate) fn with_current<T>(id: &mut Option<HeaderValue>, f: impl FnOnce() -> T) -> T {
    let previous = CURRENT.with(|current| current.replace(id.take()));
    let result = f();
    *id = CURRENT.with(|current| current.replace(previous));
    result
}

/// Makes the ids of one worker's requests.
pub(crate) struct RequestIds {
    prefix: u64,
    next: Cell<u64>,
    /// Made ids not handed out yet, back to back.
    made: RefCell<Bytes>,
}

impl RequestIds {
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        // Distinct per worker and per start: pid and clock, mixed
        // (splitmix64's finaliser) so that neighbouring workers' prefixes
        // do not share digits.
        let mut x = nanos ^ (u64::from(std::process::id()) << 32);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self { prefix: (x ^ (x >> 31)) & 0xffff_ffff, next: Cell::new(0), made: RefCell::new(Bytes::new()) }
    }

    /// A new id, for an answer given before any request was parsed.
    pub fn made(&self) -> HeaderValue {
        self.for_request(&HeaderMap::new())
    }

    /// The id of a request with these headers (see the module's comment).
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        // One pass over the few headers a request has, comparing lengths
        // first: two map lookups of these non-standard names hash them
        // every time, which measured a tenth of the feature's cost.
        let (mut given, mut traced) = (None, None);
        for (name, value) in headers {
            match name.as_str().len() {
                12 if *name == X_REQUEST_ID => given = given.or(Some(value)),
                11 if *name == TRACEPARENT => traced = traced.or(Some(value)),
                _ => {}
            }
        }
        if let Some(id) = given.filter(|id| well_formed(id.as_bytes())) {
            return id.clone();
        }
        if let Some(trace_id) = traced.and_then(|tp| trace_id(tp.as_bytes())) {
            if let Ok(id) = HeaderValue::from_bytes(trace_id) {
                return id;
            }
        }
        let mut made = self.made.borrow_mut();
        if made.is_empty() {
            let mut batch = BytesMut::zeroed(MADE_LEN * BATCH);
            for id in batch.chunks_exact_mut(MADE_LEN) {
                let n = self.next.get();
                self.next.set(n.wrapping_add(1));
                hex(&mut id[..8], self.prefix);
                hex(&mut id[8..], n);
            }
            *made = batch.freeze();
        }
        HeaderValue::from_maybe_shared(made.split_to(MADE_LEN)).expect("hex digits are a valid header value")
    }
}

/// Writes the low `4 * out.len()` bits of `value` as lower-case hex.
fn hex(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Letters, digits and `-_.:@/+=`, 1 to 128 of them: what request ids are
/// made of in practice (UUIDs, hex, base64), and nothing that could split a
/// log line or a header.
fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:@/+=".contains(b))
}

/// The trace id of a valid `traceparent` (W3C Trace Context):
/// `VERSION-TRACEID-PARENTID-FLAGS`, 2, 32, 16 and 2 lower-case hex digits;
/// version `ff` and all-zero ids are invalid. Later versions may append
/// fields after another `-`.
fn trace_id(traceparent: &[u8]) -> Option<&[u8]> {
    let lower_hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    if traceparent.len() < 55 || (traceparent.len() > 55 && traceparent[55] != b'-') {
        return None;
    }
    let (version, trace, parent, flags) =
        (&traceparent[0..2], &traceparent[3..35], &traceparent[36..52], &traceparent[53..55]);
    let dashes = [traceparent[2], traceparent[35], traceparent[52]] == [b'-'; 3];
    let valid = dashes
        && [version, trace, parent, flags].iter().all(|part| lower_hex(part))
        && version != b"ff"
        && (version != b"00" || traceparent.len() == 55)
        && nonzero(trace)
        && nonzero(parent);
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn an_incoming_id_is_kept_when_well_formed() {
        let ids = RequestIds::new();
        let id = ids.for_request(&headers(&[("x-request-id", "3f1c-req.42")]));
        assert_eq!(id, "3f1c-req.42");
        for bad in ["", "has space", "semi;colon", "quote\"", &"x".repeat(129)] {
            let id = ids.for_request(&headers(&[("x-request-id", bad)]));
            assert_ne!(id.as_bytes(), bad.as_bytes());
            assert_eq!(id.len(), 20, "replaced by a made one");
        }
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let ids = RequestIds::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(ids.for_request(&headers(&[("traceparent", tp)])), "4bf92f3577b34da6a3ce929d0e0e4736");
        // x-request-id wins.
        assert_eq!(ids.for_request(&headers(&[("traceparent", tp), ("x-request-id", "mine")])), "mine");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(ids.for_request(&headers(&[("traceparent", bad)])).len(), 20, "{bad}");
        }
        // A later version may carry more fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(ids.for_request(&headers(&[("traceparent", future)])), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn made_ids_differ_and_the_current_one_is_scoped() {
        let ids = RequestIds::new();
        let (a, b) = (ids.for_request(&HeaderMap::new()), ids.for_request(&HeaderMap::new()));
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..8], b.as_bytes()[..8], "one prefix per worker");
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(current(), None);
        let (mut outer, mut inner) = (Some(a.clone()), Some(b.clone()));
        let seen = with_current(&mut outer, || (current(), with_current(&mut inner, current), current()));
        assert_eq!(seen, (Some(a.clone()), Some(b.clone()), Some(a.clone())));
        assert_eq!((outer, inner), (Some(a), Some(b)), "both handed back");
        assert_eq!(current(), None);
    }
}
