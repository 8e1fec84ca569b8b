//! `POST /v1/auth/register`, and the session: `login`, `refresh`, `logout`.

use std::rc::Rc;

use drover_worker::Request;
use garde::Validate;
use http::{header, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

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

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[serde(deserialize_with = "extract::normalized_email")]
    #[garde(email, length(max = 254))]
    email: String,
    #[garde(length(chars, min = 8, max = 128))]
    password: String,
    #[garde(length(chars, min = 1, max = 100))]
    name: String,
}

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

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    // Presence and sanity only: the rules of registration are not revealed
    // here, and a malformed email is just a failed login.
    #[garde(length(min = 1, max = 254))]
    email: String,
    #[garde(length(min = 1, max = 1024))]
    password: String,
}

/// A session, as OAuth 2.0 token responses spell it (RFC 6749, 5.1).
#[derive(Serialize)]
struct TokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
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

/// Refused with 429 before any hashing work when the client's address has
/// spent its login budget, or the account is waiting out the backoff its
/// wrong passwords started.
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

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    #[garde(length(min = 1, max = 256))]
    refresh_token: String,
}

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
fn logout(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let body: RefreshBody = extract::json(request, state.small_body_limit()).await?;
        state.auth.logout(&body.refresh_token).await?;
        Ok(reply::private(reply::empty(StatusCode::NO_CONTENT)))
    })
}
