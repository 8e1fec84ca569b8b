//! Cross-origin requests from browsers (`[http.cors]`, off by default):
//! answers preflights, and marks the responses to allowed origins so their
//! pages may read them. Requests without an `Origin` header (every client
//! that is not a browser page of another origin) pass through untouched.

use bytes::Bytes;
use drover_worker::{Body, Request, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::ApiError;
use crate::config::CorsConfig;

/// `[http.cors]`, with its header values made once.
pub struct Cors {
    /// None: any origin (`"*"`).
    origins: Option<Vec<HeaderValue>>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Lower case, as the preflight's `Access-Control-Request-Headers`
    /// is compared in lower case.
    headers: Vec<String>,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// What to do with a request.
pub enum Verdict {
    /// Not a cross-origin browser request, or CORS is off: serve as usual.
    Pass,
    /// A preflight: here is its whole answer.
    Preflight(Response),
    /// A request from an allowed origin: serve it, then [`Cors::mark`] the
    /// response with this origin.
    Allowed(HeaderValue),
}

impl Cors {
    /// `None` when CORS is off (no allowed origin). The configuration was
    /// validated when loaded, so values that do not make headers are
    /// skipped rather than reported.
    pub fn new(config: &CorsConfig) -> Option<Self> {
        if config.allowed_origins.is_empty() {
            return None;
        }
        let any = config.allowed_origins.iter().any(|origin| origin == "*");
        let origins = (!any).then(|| {
            config.allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect()
        });
        let methods: Vec<Method> =
            config.allowed_methods.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect();
        let headers: Vec<String> = config.allowed_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        let list = |items: Vec<&str>| HeaderValue::from_str(&items.join(", ")).ok();
        Some(Self {
            origins,
            allow_methods: list(methods.iter().map(Method::as_str).collect())
                .unwrap_or(HeaderValue::from_static("GET")),
            methods,
            allow_headers: list(headers.iter().map(String::as_str).collect())
                .unwrap_or(HeaderValue::from_static("")),
            headers,
            expose_headers: (!config.exposed_headers.is_empty())
                .then(|| list(config.exposed_headers.iter().map(String::as_str).collect()))
                .flatten(),
            max_age: HeaderValue::from(config.max_age.as_secs()),
            credentials: config.allow_credentials,
        })
    }

    /// Looks at a request before it is routed.
    pub fn check(&self, request: &Request) -> Verdict {
        let Some(origin) = request.headers().get(header::ORIGIN) else { return Verdict::Pass };
        let allowed = match &self.origins {
            None => true,
            Some(origins) => origins.iter().any(|allowed| allowed == origin),
        };
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            // A disallowed origin is still served (it may be a same-origin
            // request, or not a browser at all); its page just cannot read
            // the answer, as the response carries no permission.
            return if allowed { Verdict::Allowed(self.allow_origin(origin)) } else { Verdict::Pass };
        }
        match self.refusal(request.headers(), allowed) {
            Some(error) => Verdict::Preflight(error.into_response()),
            None => Verdict::Preflight(self.preflight_answer(origin)),
        }
    }

    /// Why a preflight is refused, if it is.
    fn refusal(&self, headers: &HeaderMap, allowed: bool) -> Option<ApiError> {
        if !allowed {
            return Some(ApiError::CorsRefused("this origin may not call the API from a browser".into()));
        }
        let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).map(HeaderValue::as_bytes);
        if !method.is_some_and(|m| self.methods.iter().any(|allowed| allowed.as_str().as_bytes() == m)) {
            return Some(ApiError::CorsRefused(format!(
                "the method may not be used from a browser; allowed: {}",
                self.allow_methods.to_str().unwrap_or_default()
            )));
        }
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok());
        for name in requested.into_iter().flat_map(|list| list.split(',')).map(str::trim) {
            if !name.is_empty() && !self.headers.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
                let name = name.to_ascii_lowercase();
                return Some(ApiError::CorsRefused(format!(
                    "the header {name:?} may not be sent from a browser"
                )));
            }
        }
        None
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        match self.origins {
            None if !self.credentials => HeaderValue::from_static("*"),
            _ => origin.clone(),
        }
    }

    fn preflight_answer(&self, origin: &HeaderValue) -> Response {
        let mut response = Response::new(Body::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if !self.headers.is_empty() {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        self.vary(headers);
        response
    }

    /// Gives a response to an allowed origin's request the permission to be
    /// read by its page.
    pub fn mark(&self, response: &mut Response, origin: HeaderValue) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        if self.credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        self.vary(headers);
    }

    /// The answer depends on the origin unless every origin gets `*`: a
    /// shared cache must not hand one origin's answer to another.
    fn vary(&self, headers: &mut HeaderMap) {
        if self.origins.is_some() || self.credentials {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}
