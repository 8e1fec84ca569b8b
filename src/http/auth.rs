//! `POST /v1/auth/register` and `POST /v1/auth/login`.

use std::rc::Rc;

use drover_worker::Request;
use garde::Validate;
use http::{header, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::users::UserBody;
use super::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::domain::{Password, Role, UserName};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/auth/register", Method::POST, register);
    table.add("/v1/auth/login", Method::POST, login);
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
    let state = state.clone();
    Reply::later(async move {
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

#[derive(Serialize)]
struct TokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

fn login(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let state = state.clone();
    Reply::later(async move {
        let body: LoginBody = extract::json(request, state.small_body_limit()).await?;
        let token = state.auth.login(&body.email, &body.password).await?;
        Ok(reply::private(reply::json(
            StatusCode::OK,
            &TokenBody {
                access_token: token.access_token,
                token_type: "Bearer",
                expires_in: token.expires_in.as_secs(),
            },
        )))
    })
}
