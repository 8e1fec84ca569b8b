//! The OpenAPI 3.1 document of the public API, generated from the code with
//! utoipa: each resource file annotates its handlers (`#[utoipa::path]`) and
//! body types (`ToSchema`) and collects them in its own `Api`; this file
//! merges those, adds what every operation shares (the error responses, the
//! bearer scheme), and serves the result at `GET /openapi.json`.
//! `drover openapi` prints the same document.
//!
//! The benchmark routes (`/bench/*` and the TechEmpower ones, routed only
//! with `bench.enabled`) are not the public API and are deliberately absent.
//! `/openapi.json` itself is documented like any other route, so the test
//! below compares the router and the document without exceptions.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::OnceLock;

use bytes::Bytes;
use drover_worker::Request;
use http::{Method, StatusCode};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{IntoResponses, OpenApi};

use super::{reply, ErrorBody, Params, Reply, RouteTable, State};

/// The name of the security scheme of every operation that needs a token.
pub const BEARER: &str = "bearerAuth";

pub fn routes(table: &mut RouteTable) {
    // Built here, while the worker starts, rather than on the first request.
    document_bytes();
    table.add("/openapi.json", Method::GET, openapi_json);
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drover",
        description = "The drover HTTP API. Every 4xx and 5xx answer has one JSON shape, the `Error` \
                       schema. Routes marked with `bearerAuth` need `Authorization: Bearer <access_token>` \
                       from `POST /v1/auth/login`."
    ),
    paths(openapi_json),
    components(schemas(ErrorBody))
)]
struct Document;

/// The whole document: this file's part and every resource's.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = Document::openapi();
    let parts = [
        super::health::Api::openapi(),
        super::ready::Api::openapi(),
        super::auth::Api::openapi(),
        super::users::Api::openapi(),
        crate::resources::products::http::Api::openapi(),
        crate::resources::orders::http::Api::openapi(),
        crate::resources::plans::http::Api::openapi(),
        crate::resources::subscriptions::http::Api::openapi(),
        crate::resources::invoices::http::Api::openapi(),
        crate::resources::reports::http::Api::openapi(),
        crate::resources::files::http::Api::openapi(),
        crate::resources::notifications::http::Api::openapi(),
    ];
    for part in parts {
        document.merge(part);
    }
    shared_parts(&mut document);
    document
}

/// The document as JSON, serialised once per process (each worker is one).
pub fn document_bytes() -> Bytes {
    static BYTES: OnceLock<Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            // A document of strings and maps always serialises.
            Bytes::from(document().to_pretty_json().expect("the OpenAPI document serialises"))
        })
        .clone()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document.", body = Object, content_type = "application/json"))
)]
fn openapi_json(_state: &Rc<State>, _request: Request, _params: Params) -> Reply {
    Reply::ready(reply::with_type(StatusCode::OK, document_bytes(), "application/json"))
}

/// The shared error responses: (component name, status, description).
/// Operations refer to them through the [`errors`] groups.
const ERROR_RESPONSES: &[(&str, u16, &str)] = &[
    (
        "BadRequest",
        400,
        "`invalid_request`: a parameter or the body is invalid; `details` names each field and its issue.",
    ),
    (
        "Unauthorized",
        401,
        "`unauthenticated` (no bearer token) or `invalid_token` (malformed, forged, expired, revoked, \
         or its user deleted). `WWW-Authenticate: Bearer` says which.",
    ),
    ("Forbidden", 403, "`forbidden`: signed in, but this needs an administrator."),
    ("NotFound", 404, "`not_found`: no such resource, or not one the caller may see."),
    ("RequestTimeout", 408, "`request_timeout`: the body was not received in time; the connection closes."),
    ("Conflict", 409, "A conflict with the current state; `code` says which."),
    ("PayloadTooLarge", 413, "`body_too_large`: the body (or what it inflates to) is over the limit."),
    (
        "UnsupportedMediaType",
        415,
        "`unsupported_media_type`: the body is not `application/json` in UTF-8, or is in a content \
         coding other than gzip.",
    ),
    (
        "RangeNotSatisfiable",
        416,
        "`range_not_satisfiable`: the `Range` lies outside the file; `Content-Range` gives its size.",
    ),
    ("Unprocessable", 422, "The request is well formed but cannot be carried out; `code` says why."),
    (
        "TooManyRequests",
        429,
        "`too_many_requests`: over a `[rate_limit]`; `Retry-After`, `RateLimit-Policy` and `RateLimit` \
         say when to retry.",
    ),
    ("Internal", 500, "`internal`: an unexpected failure, logged under the id the message quotes."),
    (
        "Unavailable",
        503,
        "`unavailable`, `not_ready`, `busy` or `overloaded`: the database, the password-hashing pool or \
         the worker is out of reach or full; `Retry-After` says when to retry.",
    ),
];

/// Groups of the shared error responses, for `responses(...)` in
/// `#[utoipa::path]`: `responses((status = 200, ...), errors::JsonBody, errors::SignedIn)`.
pub mod errors {
    use super::*;

    macro_rules! groups {
        ($($(#[$doc:meta])* $name:ident => [$($component:literal),+];)+) => {$(
            $(#[$doc])*
            pub struct $name;
            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    [$($component),+].into_iter().map(shared_response).collect()
                }
            }
        )+};
    }

    groups! {
        /// A JSON request body: invalid, too slow, too large, or not JSON.
        JsonBody => ["BadRequest", "RequestTimeout", "PayloadTooLarge", "UnsupportedMediaType"];
        /// A path or query parameter that can be invalid.
        Invalid => ["BadRequest"];
        /// Needs a bearer token.
        SignedIn => ["Unauthorized"];
        /// Needs an administrator's bearer token.
        AdminOnly => ["Unauthorized", "Forbidden"];
        /// Names a resource that may not exist.
        Missing => ["NotFound"];
        /// Can conflict with the current state.
        Conflict => ["Conflict"];
        /// Takes a `Range` that may lie outside the resource.
        Range => ["RangeNotSatisfiable"];
        /// Can be refused as unprocessable.
        Unprocessable => ["Unprocessable"];
        /// Can find the database out of reach (the probes, which the
        /// shared 503 is not added to).
        Unavailable => ["Unavailable"];
    }
}

/// `(status, $ref)` of the shared response `component`.
fn shared_response(component: &str) -> (String, RefOr<Response>) {
    let status = ERROR_RESPONSES
        .iter()
        .find(|(name, ..)| *name == component)
        .map(|(_, status, _)| status.to_string())
        .expect("every group names a shared response");
    (status, RefOr::Ref(Ref::from_response_name(component)))
}

/// Change bodies (PATCH) that must name at least one field. Set here rather
/// than with `#[schema(min_properties = 1)]`, which utoipa-gen 5.5 writes as
/// `maxProperties`.
const AT_LEAST_ONE_FIELD: &[&str] = &["ProductPatch", "UserPatch"];

/// Routes the general rate limits and the worker's overload answer never
/// touch (see `rate_limit::exempt` and the worker's admission control).
const PROBES: &[&str] = &["/healthz", "/readyz"];

/// What every operation shares: the shared error responses as components,
/// 429/500/503 on every operation but the probes (any request may meet a
/// `[rate_limit]`, a bug, or a full worker), and the bearer scheme.
fn shared_parts(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    for (name, _, description) in ERROR_RESPONSES {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
        let response = ResponseBuilder::new().description(*description).content("application/json", content);
        components.responses.insert((*name).to_owned(), RefOr::T(response.build()));
    }
    for name in AT_LEAST_ONE_FIELD {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*name) {
            object.min_properties = Some(1);
        }
    }
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("The `access_token` of `POST /v1/auth/login` or `/v1/auth/refresh`."))
                .build(),
        ),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        let probe = PROBES.contains(&path.as_str());
        // One handler may serve GET and HEAD (`method(get, head)`): the
        // HEAD operation gets an id of its own.
        if let Some(head) = &mut item.head {
            head.operation_id = head.operation_id.take().map(|id| format!("{id}_head"));
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ];
        for operation in operations.into_iter().flatten() {
            // utoipa names an operation after its handler, and every
            // resource has a `get`: the tag (the resource) makes it unique.
            if let (Some(tag), Some(id)) =
                (operation.tags.as_ref().and_then(|t| t.first()), &operation.operation_id)
            {
                operation.operation_id = Some(format!("{tag}_{id}"));
            }
            if probe {
                continue;
            }
            for name in ["TooManyRequests", "Internal", "Unavailable"] {
                let (status, reference) = shared_response(name);
                operation.responses.responses.entry(status).or_insert(reference);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (path, method) of the document, methods upper-case.
    fn documented() -> BTreeSet<(String, String)> {
        let json: serde_json::Value = serde_json::from_slice(&document_bytes()).unwrap();
        let mut found = BTreeSet::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                    .contains(&method.as_str())
                {
                    found.insert((path.clone(), method.to_uppercase()));
                }
            }
        }
        found
    }

    #[test]
    fn every_public_route_is_documented_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = super::super::registered_routes(false)
            .into_iter()
            .map(|(path, method)| (path.to_owned(), method.as_str().to_owned()))
            .collect();
        let documented = documented();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty(), "routes without a documented operation: {undocumented:?}");
        assert!(unrouted.is_empty(), "documented operations that are not routed: {unrouted:?}");
    }

    #[test]
    fn operation_ids_are_unique() {
        let json: serde_json::Value = serde_json::from_slice(&document_bytes()).unwrap();
        let mut seen = BTreeSet::new();
        for item in json["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(seen.insert(id.to_owned()), "{id} twice");
            }
        }
    }

    #[test]
    fn the_benchmark_routes_are_left_out() {
        let documented = documented();
        let bench: Vec<_> = super::super::registered_routes(true)
            .into_iter()
            .filter(|(path, method)| !documented.contains(&(path.to_string(), method.as_str().to_owned())))
            .collect();
        assert!(!bench.is_empty());
        assert!(bench.iter().all(|(path, _)| !path.starts_with("/v1/")), "{bench:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_one_error_shape() {
        let json: serde_json::Value = serde_json::from_slice(&document_bytes()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let scheme = &json["components"]["securitySchemes"][BEARER];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        // Every error answer of every operation is one of the shared
        // responses, whose schema is `Error`.
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let target = response["$ref"].as_str().unwrap_or_default();
                        assert!(
                            target.starts_with("#/components/responses/"),
                            "{method} {path} {status} is not a shared error response"
                        );
                    }
                }
            }
        }
        for name in AT_LEAST_ONE_FIELD {
            assert_eq!(json["components"]["schemas"][name]["minProperties"], 1, "{name}");
        }
        for (name, response) in json["components"]["responses"].as_object().unwrap() {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/Error", "{name}");
        }
    }

    #[test]
    fn operations_with_the_bearer_scheme_answer_401() {
        let json: serde_json::Value = serde_json::from_slice(&document_bytes()).unwrap();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|list| list.iter().any(|req| req.get(BEARER).is_some()));
                if secured {
                    assert!(operation["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
    }
}
