//! The admin listener (`--admin-listen`, never the public port): Prometheus
//! `/metrics`, aggregated by the supervisor across every worker it has run,
//! encoded with prometheus-client. It runs in the supervisor process, on the
//! supervisor's event loop. With `server.admin_token` it asks for that
//! bearer token; a client slow to send its head, or a connection kept past
//! [`CONNECTION_MAX`], is let go.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_protocol::channel::{LATENCY_BUCKETS, WAIT_BUCKETS};
use drover_supervisor::metrics::{MetricsClient, Snapshot, Totals};
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A request head must arrive within this: a scraper sends it at once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is asked to close after this, idle or not (a scraper that
/// keeps its connection opens another), and dropped 5 s later.
pub const CONNECTION_MAX: Duration = Duration::from_secs(60);

/// Reads the token `server.admin_token` points to: a path, or
/// `credential:NAME` for `$CREDENTIALS_DIRECTORY/NAME`. `None` when unset.
pub fn read_token(source: &str) -> Result<Option<Arc<str>>, String> {
    if source.is_empty() {
        return Ok(None);
    }
    let path = match source.strip_prefix("credential:") {
        Some(name) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => std::path::Path::new(&dir).join(name),
            None => {
                return Err(format!(
                    "{source}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)"
                ))
            }
        },
        None => std::path::PathBuf::from(source),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{}: the token must be at least 16 visible ASCII characters", path.display()));
    }
    Ok(Some(token.into()))
}

/// Serves `/metrics` until the process exits.
pub async fn serve(listener: TcpListener, metrics: MetricsClient, token: Option<Arc<str>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (metrics, token) = (metrics.clone(), token.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, metrics.clone(), token.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = tokio::time::sleep(CONNECTION_MAX) => conn.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        });
    }
}

/// True when the request carries the token, compared in constant time.
fn authorised(request: &http::Request<Incoming>, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

async fn answer(
    request: http::Request<Incoming>,
    metrics: MetricsClient,
    token: Option<Arc<str>>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    if token.as_deref().is_some_and(|token| !authorised(&request, token)) {
        let mut response =
            plain(StatusCode::UNAUTHORIZED, "send the admin token: Authorization: Bearer <token>\n".into());
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "only /metrics is served here\n".into()));
    }
    if request.method() != Method::GET {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into()));
    }
    let Some(snapshot) = metrics.snapshot().await else {
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into()));
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(snapshot)));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n".into()));
    }
    let mut response = plain(StatusCode::OK, text);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

fn plain(status: StatusCode, body: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// One scrape's worth of figures, encoded on demand.
#[derive(Debug)]
struct Exposition(Snapshot);

type Labels = Vec<(&'static str, String)>;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Exposition {
    /// Every slot's totals, and the removed slots' as slot `removed`: sums
    /// over the `slot` label are the server's totals and never go down.
    fn totals(&self) -> impl Iterator<Item = (String, &Totals)> {
        let slots = self.0.slots.iter().map(|s| (s.slot.to_string(), &s.totals));
        slots.chain(std::iter::once(("removed".to_owned(), &self.0.removed)))
    }

    /// Every job slot's totals, labelled `jobs-N`.
    fn job_totals(&self) -> impl Iterator<Item = (String, &Totals)> {
        self.0.jobs.iter().map(|s| (format!("jobs-{}", s.slot), &s.totals))
    }

    /// The job processes: per queue, messages by how they ended and the
    /// time their handling took, summed over job slots; job processes by
    /// state.
    fn encode_jobs(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut queues: std::collections::BTreeMap<&str, drover_worker::QueueCounters> =
            std::collections::BTreeMap::new();
        for (_, totals) in self.job_totals() {
            for (name, counters) in &totals.queues {
                queues.entry(name).or_default().add(counters);
            }
        }
        let mut messages = encoder.encode_descriptor(
            "drover_jobs_messages",
            "Queue messages received by job processes, and how their handling ended (succeeded, retried, dead), by queue",
            None,
            MetricType::Counter,
        )?;
        for (queue, counters) in &queues {
            for (outcome, value) in [
                ("received", counters.received),
                ("succeeded", counters.succeeded),
                ("retried", counters.retried),
                ("dead", counters.dead),
            ] {
                let labels: Labels = vec![("queue", (*queue).to_owned()), ("outcome", outcome.to_owned())];
                ConstCounter::new(value).encode(messages.encode_family(&labels)?)?;
            }
        }
        let mut latency = encoder.encode_descriptor(
            "drover_jobs_handling_duration_seconds",
            "Time from taking a message to settling it (handler and acknowledgement), by queue",
            None,
            MetricType::Histogram,
        )?;
        for (queue, counters) in &queues {
            let labels: Labels = vec![("queue", (*queue).to_owned())];
            let buckets = histogram_buckets(&LATENCY_BUCKETS, &counters.buckets, counters.settled());
            latency.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                counters.sum_us as f64 / 1e6,
                counters.settled(),
                &buckets,
                None,
            )?;
        }
        let mut workers = encoder.encode_descriptor(
            "drover_job_workers",
            "Job processes, by state",
            None,
            MetricType::Gauge,
        )?;
        for state in ["booting", "ready", "draining"] {
            let count = self.0.jobs.iter().flat_map(|s| &s.workers).filter(|w| w.state == state).count();
            ConstGauge::new(count as i64)
                .encode(workers.encode_family(&vec![("state", state.to_owned())])?)?;
        }
        Ok(())
    }
}

/// `(bound, count)` pairs of a histogram whose buckets are not cumulative,
/// with the +Inf bucket holding what no bound took.
fn histogram_buckets(bounds: &[f64], counts: &[u64], total: u64) -> Vec<(f64, u64)> {
    let rest = total.saturating_sub(counts.iter().sum::<u64>());
    bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(
            counts
                .iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(bounds.len())
                .chain(std::iter::once(rest)),
        )
        .collect()
}

impl Exposition {
    /// Admission control: per live worker its limit and queue, per slot
    /// what was admitted and shed and how long admitted requests waited.
    fn encode_admission(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, pick) in [
            (
                "drover_admission_limit",
                "Admission control's current concurrency limit, by worker (0: off)",
                0,
            ),
            ("drover_admission_queued", "Requests waiting for admission, by worker", 1),
        ] {
            let mut gauge = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for slot in &self.0.slots {
                for worker in &slot.workers {
                    let value =
                        if pick == 0 { worker.admission_limit } else { worker.admission_queued as f64 };
                    let labels: Labels =
                        vec![("slot", slot.slot.to_string()), ("pid", worker.pid.to_string())];
                    ConstGauge::new(value).encode(gauge.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, pick) in [
            ("drover_admission_admitted", "Requests admitted by admission control, by worker slot", 0),
            (
                "drover_admission_shed",
                "Requests refused 503 overloaded by admission control, by worker slot",
                1,
            ),
        ] {
            let mut counter = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (slot, totals) in self.totals() {
                let value = if pick == 0 { totals.admission.admitted } else { totals.admission.shed };
                ConstCounter::new(value).encode(counter.encode_family(&vec![("slot", slot)])?)?;
            }
        }
        let mut wait = encoder.encode_descriptor(
            "drover_admission_queue_wait_seconds",
            "Time admitted requests waited for a place, from reading their head, by worker slot",
            None,
            MetricType::Histogram,
        )?;
        for (slot, totals) in self.totals() {
            let admission = &totals.admission;
            let buckets = histogram_buckets(&WAIT_BUCKETS, &admission.wait_buckets, admission.admitted);
            wait.encode_family(&vec![("slot", slot)])?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    admission.wait_sum_us as f64 / 1e6,
                    admission.admitted,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "drover_http_requests",
            "Requests answered, by worker slot, route and status class",
            None,
            MetricType::Counter,
        )?;
        for (slot, totals) in self.totals() {
            for (route, counters) in &totals.routes {
                for (class, count) in CLASSES.iter().zip(counters.by_class) {
                    let labels: Labels = vec![
                        ("slot", slot.clone()),
                        ("route", route.clone()),
                        ("class", (*class).to_owned()),
                    ];
                    ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
                }
            }
        }
        let mut all = encoder.encode_descriptor(
            "drover_requests",
            "Requests answered by every worker this supervisor has run, in all",
            None,
            MetricType::Counter,
        )?;
        let total: u64 = self.totals().map(|(_, t)| t.requests).sum();
        ConstCounter::new(total).encode(all.encode_family(&Labels::new())?)?;
        let mut latency = encoder.encode_descriptor(
            "drover_http_request_duration_seconds",
            "Time from reading a request's head to producing its response, by worker slot and route",
            None,
            MetricType::Histogram,
        )?;
        for (slot, totals) in self.totals() {
            for (route, counters) in &totals.routes {
                let labels: Labels = vec![("slot", slot.clone()), ("route", route.clone())];
                let buckets = histogram_buckets(&LATENCY_BUCKETS, &counters.buckets, counters.count());
                latency.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    counters.sum_us as f64 / 1e6,
                    counters.count(),
                    &buckets,
                    None,
                )?;
            }
        }
        let mut restarts = encoder.encode_descriptor(
            "drover_worker_restarts",
            "Workers of a slot that exited without being asked to",
            None,
            MetricType::Counter,
        )?;
        for (slot, totals) in self.totals().chain(self.job_totals()) {
            ConstCounter::new(totals.restarts).encode(restarts.encode_family(&vec![("slot", slot)])?)?;
        }
        self.encode_admission(&mut encoder)?;
        let mut app = encoder.encode_descriptor(
            "drover_app_events",
            "The application's counters (cache hits, misses, loads, ...), by worker slot (jobs-N: a job process) and name",
            None,
            MetricType::Counter,
        )?;
        for (slot, totals) in self.totals().chain(self.job_totals()) {
            for (name, value) in &totals.app {
                let labels: Labels = vec![("slot", slot.clone()), ("name", name.clone())];
                ConstCounter::new(*value).encode(app.encode_family(&labels)?)?;
            }
        }
        for (name, help, pick) in [
            ("drover_worker_in_flight", "Requests being processed, by worker slot", 0),
            ("drover_worker_connections", "Open client connections, by worker slot", 1),
            (
                "drover_worker_loop_lag_seconds",
                "Event-loop lag at the last heartbeat (worst worker of the slot)",
                2,
            ),
        ] {
            let mut gauge = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for slot in &self.0.slots {
                let value = match pick {
                    0 => slot.workers.iter().map(|w| w.in_flight as f64).sum(),
                    1 => slot.workers.iter().map(|w| w.connections as f64).sum(),
                    _ => slot.workers.iter().map(|w| w.loop_lag_us as f64 / 1e6).fold(0.0, f64::max),
                };
                ConstGauge::new(value)
                    .encode(gauge.encode_family(&vec![("slot", slot.slot.to_string())])?)?;
            }
        }
        let mut app_gauges = encoder.encode_descriptor(
            "drover_app_gauge",
            "The application's gauges (database connections, cache entries, ...), by worker slot and name",
            None,
            MetricType::Gauge,
        )?;
        for slot in &self.0.slots {
            let mut sums: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
            for (name, value) in slot.workers.iter().flat_map(|w| &w.app) {
                *sums.entry(name).or_default() += value;
            }
            for (name, value) in sums {
                let labels: Labels = vec![("slot", slot.slot.to_string()), ("name", name.to_owned())];
                ConstGauge::new(value).encode(app_gauges.encode_family(&labels)?)?;
            }
        }
        let mut workers = encoder.encode_descriptor(
            "drover_workers",
            "Worker processes, by state",
            None,
            MetricType::Gauge,
        )?;
        for state in ["booting", "ready", "draining"] {
            let count = self.0.slots.iter().flat_map(|s| &s.workers).filter(|w| w.state == state).count();
            ConstGauge::new(count as i64)
                .encode(workers.encode_family(&vec![("state", state.to_owned())])?)?;
        }
        let mut generation = encoder.encode_descriptor(
            "drover_generation",
            "Rolling restarts so far, plus one",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.generation as i64).encode(generation.encode_family(&Labels::new())?)?;
        self.encode_jobs(&mut encoder)?;
        Ok(())
    }
}
