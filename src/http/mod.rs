//! The HTTP layer: routes requests to handlers, one file per resource, and
//! turns their results into responses. The worker crate serves it as its
//! [`drover_worker::App`].

mod auth;
mod bench;
pub(crate) mod compress;
mod cors;
mod error;
pub(crate) mod extract;
mod health;
pub mod openapi;
pub(crate) mod rate_limit;
mod ready;
pub(crate) mod reply;
mod users;

use std::rc::Rc;

use drover_worker::{App, Request};
use http::Method;

pub use error::{ApiError, ErrorBody};
pub use reply::Reply;

/// What handlers share: everything a request may need, built once per
/// worker by [`crate::app::build`].
pub struct State {
    pub worker: drover_worker::WorkerInfo,
    /// Every service (users, products, orders, ...): `state.orders` reads
    /// through to them.
    pub services: crate::app::Services,
    /// `http.max_body_bytes`, for handlers that read bodies.
    pub max_body_bytes: u64,
    /// `bench.enabled`: whether `/bench/*` is routed.
    pub bench: bool,
    /// `auth.allow_dotless_email_domains`: whether a new address may have a
    /// domain without a dot.
    pub allow_dotless_email_domains: bool,
    /// `[http.cors]`; `None` while it is off.
    pub cors: Option<Rc<cors::Cors>>,
    /// `[http.compression]`; `None` while it is off.
    pub compression: Option<Rc<compress::Compression>>,
    /// `[rate_limit]`.
    pub rate_limits: rate_limit::RateLimits,
}

pub use cors::Cors;

/// Bodies of the auth and profile routes are a few short fields: they get
/// this much, not `http.max_body_bytes`. 8 KiB holds the longest valid body
/// with every character escaped.
pub const SMALL_BODY_BYTES: u64 = 8 * 1024;

impl State {
    /// The body limit of a route that takes a few short fields.
    pub fn small_body_limit(&self) -> u64 {
        self.max_body_bytes.min(SMALL_BODY_BYTES)
    }
}

impl std::ops::Deref for State {
    type Target = crate::app::Services;
    fn deref(&self) -> &crate::app::Services {
        &self.services
    }
}

/// Path parameters of the matched route, in order.
pub type Params = Vec<(String, String)>;

/// A handler: synchronous ones answer with [`Reply::ready`] at no allocation
/// cost; those that wait on I/O return a boxed future.
pub type Handler = fn(&Rc<State>, Request, Params) -> Reply;

/// One path and the handlers of its methods.
struct Resource {
    /// The pattern, which labels the metrics of requests to it.
    path: &'static str,
    methods: Vec<(Method, Handler)>,
}

/// The router: built once per worker, then read-only.
pub struct Routes {
    router: matchit::Router<Resource>,
    state: Rc<State>,
}

/// Collects routes: each resource file adds its own with [`RouteTable::add`].
pub struct RouteTable {
    resources: Vec<(&'static str, Resource)>,
}

impl RouteTable {
    pub fn add(&mut self, path: &'static str, method: Method, handler: Handler) {
        match self.resources.iter_mut().find(|(p, _)| *p == path) {
            Some((_, resource)) => resource.methods.push((method, handler)),
            None => self.resources.push((path, Resource { path, methods: vec![(method, handler)] })),
        }
    }
}

impl RouteTable {
    /// Every route: each resource adds its own, one line each. `bench`
    /// (`bench.enabled`) adds `/bench/*` and the TechEmpower routes, which
    /// are benchmark endpoints and not the public API: the OpenAPI document
    /// leaves them out (src/http/openapi.rs).
    fn build(bench: bool) -> Self {
        let mut table = RouteTable { resources: Vec::new() };
        health::routes(&mut table);
        ready::routes(&mut table);
        openapi::routes(&mut table);
        if bench {
            bench::routes(&mut table);
            crate::resources::tfb::http::routes(&mut table);
        }
        auth::routes(&mut table);
        users::routes(&mut table);
        crate::resources::products::http::routes(&mut table);
        crate::resources::orders::http::routes(&mut table);
        crate::resources::plans::http::routes(&mut table);
        crate::resources::subscriptions::http::routes(&mut table);
        crate::resources::invoices::http::routes(&mut table);
        crate::resources::reports::http::routes(&mut table);
        crate::resources::files::http::routes(&mut table);
        crate::resources::notifications::http::routes(&mut table);
        table
    }
}

/// Every (path pattern, method) the router serves, without building a
/// [`State`]: what the OpenAPI document is checked against.
pub fn registered_routes(bench: bool) -> Vec<(&'static str, Method)> {
    RouteTable::build(bench)
        .resources
        .into_iter()
        .flat_map(|(path, resource)| resource.methods.into_iter().map(move |(method, _)| (path, method)))
        .collect()
}

impl Routes {
    /// The routes of every resource over `state`.
    pub fn new(state: State) -> Self {
        let table = RouteTable::build(state.bench);
        let mut router = matchit::Router::new();
        for (path, resource) in table.resources {
            // Paths are literals in this crate; a conflict is a programming
            // error caught by every test run.
            router.insert(path, resource).expect("route paths do not conflict");
        }
        Self { router, state: Rc::new(state) }
    }
}

impl Routes {
    /// Finds the handler of a request and calls it.
    fn route(&self, request: Request) -> (&'static str, Reply) {
        let matched = match self.router.at(request.uri().path()) {
            Ok(matched) => matched,
            // One label for every unknown path, so scanners cannot blow up
            // the metrics' cardinality.
            Err(_) => return ("unmatched", ApiError::NoRoute.into()),
        };
        let resource = matched.value;
        let Some(&(_, handler)) = resource.methods.iter().find(|(m, _)| m == request.method()) else {
            let allow: Vec<&str> = resource.methods.iter().map(|(m, _)| m.as_str()).collect();
            return (resource.path, ApiError::MethodNotAllowed { allow: allow.join(", ") }.into());
        };
        let params: Params = matched.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        // A bearer token is checked against its user's record before the
        // handler runs, which reads the outcome synchronously
        // (`extract::principal`). A malformed header is the handler's to
        // refuse, on routes that need a principal at all. The general rate
        // limits, when configured, come first: a refusal costs no lookup.
        let limits = &self.state.rate_limits;
        let per_ip = limits.per_ip_key(resource.path, &request);
        let per_user = limits.per_user_applies(resource.path);
        let token = extract::bearer(&request).ok().flatten().map(str::to_owned);
        if per_ip.is_some() || token.is_some() {
            let state = self.state.clone();
            let mut request = request;
            return (
                resource.path,
                Reply::Pending(Box::pin(async move {
                    if let Some(ip) = per_ip {
                        if let Err(error) = state.rate_limits.check_per_ip(ip).await {
                            return error.into_response();
                        }
                    }
                    if let Some(token) = token {
                        let authenticated = extract::Authenticated::resolve(&state, &token).await;
                        if let (true, Some(principal)) = (per_user, authenticated.principal()) {
                            if let Err(error) = state.rate_limits.check_per_user(principal.user.0).await {
                                return error.into_response();
                            }
                        }
                        request.extensions_mut().insert(authenticated);
                    }
                    handler(&state, request, params).await
                })),
            );
        }
        (resource.path, handler(&self.state, request, params))
    }
}

impl App for Routes {
    type Future = Reply;

    fn call(&self, mut request: Request) -> (&'static str, Reply) {
        let Some(compression) = &self.state.compression else { return self.call_cors(request) };
        let negotiated = compression.negotiate(&mut request);
        let (route, reply) = self.call_cors(request);
        if compression.leaves_alone(&reply) {
            return (route, reply);
        }
        (route, compression.apply(route, negotiated, reply))
    }

    fn body_limit(&self, method: &Method, path: &str) -> Option<u64> {
        (method == Method::PUT && path.starts_with(crate::resources::files::http::UPLOAD_PREFIX))
            .then(|| self.state.files.max_bytes())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.state.services.counters()
    }

    fn gauges(&self) -> Vec<(String, f64)> {
        self.state.services.gauges()
    }
}

impl Routes {
    /// Routes the request, with CORS answered and marked when configured.
    fn call_cors(&self, request: Request) -> (&'static str, Reply) {
        let Some(cors) = &self.state.cors else { return self.route(request) };
        let origin = match cors.check(&request) {
            cors::Verdict::Pass => return self.route(request),
            cors::Verdict::Preflight(response) => return ("preflight", Reply::ready(response)),
            cors::Verdict::Allowed(origin) => origin,
        };
        let (route, reply) = self.route(request);
        let reply = match reply {
            Reply::Ready(Some(mut response)) => {
                cors.mark(&mut response, origin);
                Reply::ready(response)
            }
            Reply::Pending(future) => {
                let cors = cors.clone();
                Reply::Pending(Box::pin(async move {
                    let mut response = future.await;
                    cors.mark(&mut response, origin);
                    response
                }))
            }
            done @ Reply::Ready(None) => done,
        };
        (route, reply)
    }
}
