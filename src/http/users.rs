//! `GET /v1/users/me`, `GET /v1/users/{id}`, `PATCH /v1/users/me`, with
//! sparse fieldsets (`?fields=id,name`); for administrators,
//! `PATCH /v1/users/{id}` (the role) and `DELETE /v1/users/{id}`.

use std::rc::Rc;
use std::time::SystemTime;

use drover_worker::Request;
use garde::Validate;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::{extract, reply, ApiError, Params, Reply, RouteTable, State};
use crate::domain::{Password, Role, UserFields, UserId, UserName, UserView};
use crate::service::{ServiceError, UserChanges};

pub fn routes(table: &mut RouteTable) {
    table.add("/v1/users/me", Method::GET, me);
    table.add("/v1/users/me", Method::PATCH, update_me);
    table.add("/v1/users/{id}", Method::GET, by_id);
    table.add("/v1/users/{id}", Method::PATCH, set_role);
    table.add("/v1/users/{id}", Method::DELETE, delete);
}

/// A user as the API shows it; absent fields (sparse fieldsets) are left
/// out. Never the password hash: the domain view does not carry one.
#[derive(Serialize)]
pub struct UserBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl From<UserView> for UserBody {
    fn from(view: UserView) -> Self {
        Self {
            id: view.id.map(|id| id.0),
            email: view.email.map(|e| e.as_str().to_owned()),
            name: view.name.map(|n| n.as_str().to_owned()),
            role: view.role.map(|r| r.as_str()),
            created_at: view.created_at.map(rfc3339),
            updated_at: view.updated_at.map(rfc3339),
        }
    }
}

/// `?fields=` as a field set; all fields when absent.
fn fields(request: &Request) -> Result<UserFields, ApiError> {
    match extract::query_param(request, "fields") {
        None => Ok(UserFields::ALL),
        Some(list) => UserFields::parse_list(&list).map_err(|e| ApiError::invalid(e.field, &e.issue)),
    }
}

fn me(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let (principal, fields) =
        match extract::principal(state, &request).and_then(|p| Ok((p, fields(&request)?))) {
            Ok(found) => found,
            Err(error) => return error.into(),
        };
    let state = state.clone();
    Reply::later(async move {
        let view = state.users.get(principal, principal.user, fields).await?;
        Ok(reply::private(reply::json(StatusCode::OK, &UserBody::from(view))))
    })
}

fn by_id(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let principal = match extract::principal(state, &request) {
        Ok(principal) => principal,
        Err(error) => return error.into(),
    };
    let id = params.first().and_then(|(_, v)| v.parse::<i64>().ok()).filter(|id| *id > 0);
    let Some(id) = id else {
        return ApiError::invalid("id", "must be a positive integer").into();
    };
    let fields = match fields(&request) {
        Ok(fields) => fields,
        Err(error) => return error.into(),
    };
    let state = state.clone();
    Reply::later(async move {
        let view = state.users.get(principal, UserId(id), fields).await?;
        Ok(reply::private(reply::json(StatusCode::OK, &UserBody::from(view))))
    })
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "extract::normalized_email_opt")]
    #[garde(inner(email, length(max = 254)))]
    email: Option<String>,
    #[garde(inner(length(chars, min = 1, max = 100)))]
    name: Option<String>,
    #[garde(inner(length(chars, min = 8, max = 128)))]
    password: Option<String>,
    /// Required with `email` or `password`.
    #[garde(inner(length(min = 1, max = 1024)))]
    current_password: Option<String>,
}

fn update_me(state: &Rc<State>, request: Request, _params: Params) -> Reply {
    let principal = match extract::principal(state, &request) {
        Ok(principal) => principal,
        Err(error) => return error.into(),
    };
    let state = state.clone();
    Reply::later(async move {
        let body: PatchBody = extract::json(request, state.small_body_limit()).await?;
        let invalid = |e: crate::domain::Invalid| ApiError::invalid(e.field, &e.issue);
        let changes = UserChanges {
            email: body.email.as_deref().map(|email| extract::new_email(&state, email)).transpose()?,
            name: body.name.as_deref().map(UserName::parse).transpose().map_err(invalid)?,
            password: body.password.as_deref().map(Password::parse).transpose().map_err(invalid)?,
            current_password: body.current_password,
        };
        let sensitive = changes.email.is_some() || changes.password.is_some();
        let limits = &state.rate_limits;
        if sensitive {
            limits.before_password_check(principal.user.0).await?;
        }
        let user = match state.users.update(principal.user, changes).await {
            Err(ServiceError::CurrentPasswordWrong) => {
                limits.password_check_failed(principal.user.0).await;
                return Err(ServiceError::CurrentPasswordWrong.into());
            }
            result => result?,
        };
        if sensitive {
            limits.password_check_passed(principal.user.0).await;
        }
        Ok(reply::private(reply::json(StatusCode::OK, &UserBody::from(UserView::from(user)))))
    })
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[garde(length(min = 1, max = 16))]
    role: String,
}

fn set_role(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        let body: RoleBody = extract::json(request, state.small_body_limit()).await?;
        let role =
            Role::parse(&body.role).ok_or_else(|| ApiError::invalid("role", "must be user or admin"))?;
        let user = state.users.set_role(principal, UserId(id), role).await?;
        Ok(reply::private(reply::json(StatusCode::OK, &UserBody::from(UserView::from(user)))))
    })
}

fn delete(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        state.users.delete(principal, UserId(id)).await?;
        Ok(reply::empty(StatusCode::NO_CONTENT))
    })
}
