//! `POST /v1/auth/register`, and the session: `login`, `refresh`, `logout`.

use std::rc::Rc;

use drover_worker::Request;
use garde::Validate;
use http::{header, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::openapi::errors;
use super::users::UserBody;
use super::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::domain::{Password, Role, UserName};
use crate::service::{audit, ServiceError};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/auth/register", Method::POST, register);
    table.add("/v1/auth/login", Method::POST, login);
    table.add("/v1/auth/refresh", Method::POST, refresh);
    table.add("/v1/auth/logout", Method::POST, logout);
}

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(register, login, refresh, logout))]
pub struct Api;

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = Registration)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// Trimmed and lower-cased; the domain needs a dot (`example.com`).
    #[serde(deserialize_with = "extract::normalized_email")]
    #[garde(email, length(max = 254))]
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    email: String,
    /// Not only whitespace.
    #[garde(length(chars, min = 8, max = 128))]
    #[schema(min_length = 8, max_length = 128, pattern = r"[^\s\u0085]")]
    password: String,
    /// Trimmed; at least one visible character, no control characters.
    #[garde(length(chars, min = 1, max = 100))]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

/// Creates an account with the role `user`.
#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new user.", body = UserBody,
         headers(("location" = String, description = "The user's URL: `/v1/users/{id}`."))),
        errors::JsonBody,
        errors::Conflict,
    )
)]
fn register(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let client = state.rate_limits.client_ip(&request);
    let state = state.clone();
    Reply::later(async move {
        state.rate_limits.before_register(client).await?;
        let body: RegisterBody = extract::json(request, state.small_body_limit()).await?;
        // garde checked the syntax; parsing normalises (trim, lower-case).
        let email = extract::new_email(&state, &body.email)?;
        let name = UserName::parse(&body.name).map_err(invalid)?;
        let password = Password::parse(&body.password).map_err(invalid)?;
        let user = state.users.register(email, name, &password, Role::User).await?;
        let location = format!("/v1/users/{}", user.id);
        let mut response = reply::private(reply::json(
            StatusCode::CREATED,
            &UserBody::from(crate::domain::UserView::from(user)),
        ));
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Ok(response)
    })
}

fn invalid(error: crate::domain::Invalid) -> ApiError {
    ApiError::invalid(error.field, &error.issue)
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = Login)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    // Presence and sanity only: the rules of registration are not revealed
    // here, and a malformed email is just a failed login. The document
    // gives bytes as characters: garde counts bytes here.
    #[garde(length(min = 1, max = 254))]
    #[schema(min_length = 1, max_length = 254, example = "ada@example.com")]
    email: String,
    #[garde(length(min = 1, max = 1024))]
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

/// A session, as OAuth 2.0 token responses spell it (RFC 6749, 5.1).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Session)]
struct TokenBody {
    /// A JWT for `Authorization: Bearer`.
    access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until `access_token` expires.
    expires_in: u64,
    /// For `POST /v1/auth/refresh` and `/v1/auth/logout`.
    refresh_token: String,
    /// Seconds until `refresh_token` expires.
    refresh_expires_in: u64,
}

fn session_reply(session: crate::service::Session) -> drover_worker::Response {
    reply::private(reply::json(
        StatusCode::OK,
        &TokenBody {
            access_token: session.access.access_token,
            token_type: "Bearer",
            expires_in: session.access.expires_in.as_secs(),
            refresh_token: session.refresh_token,
            refresh_expires_in: session.refresh_expires_in.as_secs(),
        },
    ))
}

/// Signs in: a new session.
///
/// Refused with 429 before any hashing work when the client's address has
/// spent its login budget, or the account is waiting out the backoff its
/// wrong passwords started.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "The session's tokens.", body = TokenBody),
        errors::JsonBody,
        errors::SignedIn,
    )
)]
fn login(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let client = state.rate_limits.client_ip(&request);
    let state = state.clone();
    Reply::later(async move {
        let body: LoginBody = extract::json(request, state.small_body_limit()).await?;
        let limits = &state.rate_limits;
        limits.before_login(client, &body.email).await?;
        match state.auth.login(&body.email, &body.password).await {
            Ok(session) => {
                limits.login_succeeded(&body.email).await;
                Ok(session_reply(session))
            }
            Err(ServiceError::BadCredentials) => {
                let wait = limits.login_failed(&body.email).await;
                if !wait.is_zero() {
                    audit::record(audit::Event::LoginLockedOut {
                        email: &body.email,
                        retry_after_secs: wait.as_secs().max(1),
                    });
                }
                Err(ApiError::BadCredentials)
            }
            Err(error) => Err(error.into()),
        }
    })
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = RefreshToken)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    // Characters, as the document counts them (schemathesis sent 256 of
    // UTF-8, which were more than 256 bytes). Logout answers 204 for any
    // token, so the limit is the only check: 256 characters, even escaped,
    // fit the small body limit.
    #[garde(length(chars, min = 1, max = 256))]
    #[schema(min_length = 1, max_length = 256)]
    refresh_token: String,
}

/// Trades a refresh token for a new session; the old refresh token ends.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "The new session's tokens.", body = TokenBody),
        errors::JsonBody,
        errors::SignedIn,
    )
)]
fn refresh(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let body: RefreshBody = extract::json(request, state.small_body_limit()).await?;
        let session = state.auth.refresh(&body.refresh_token).await?;
        Ok(session_reply(session))
    })
}

/// Ends the session of a refresh token: 204 whether or not it was current
/// (RFC 7009, 2.2), so the answer does not tell which tokens exist.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    request_body = RefreshBody,
    responses((status = 204, description = "The session has ended (or was not current)."), errors::JsonBody)
)]
fn logout(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let body: RefreshBody = extract::json(request, state.small_body_limit()).await?;
        state.auth.logout(&body.refresh_token).await?;
        Ok(reply::private(reply::empty(StatusCode::NO_CONTENT)))
    })
}
