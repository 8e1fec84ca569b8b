//! `GET /v1/users/me`, `GET /v1/users/{id}`, `PATCH /v1/users/me`, with
//! sparse fieldsets (`?fields=id,name`); for administrators,
//! `PATCH /v1/users/{id}` (the role) and `DELETE /v1/users/{id}`.

use std::rc::Rc;
use std::time::SystemTime;

use drover_worker::Request;
use garde::Validate;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::openapi::errors;
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

/// These routes in the OpenAPI document (src/http/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(me, update_me, by_id, set_role, delete))]
pub struct Api;

/// `?fields=`, as the document describes it on every route that takes it.
const FIELDS: &str = "A comma-separated subset of id, email, name, role, created_at, updated_at: \
                      only those are returned. All when absent.";

/// A user as the API shows it; absent fields (sparse fieldsets) are left
/// out. Never the password hash: the domain view does not carry one.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RoleName>, nullable = false)]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    updated_at: Option<String>,
}

/// A user's role, as the document spells it (the domain's `Role` carries
/// no schema: the domain layer does not depend on utoipa).
#[derive(utoipa::ToSchema)]
#[schema(as = Role, rename_all = "lowercase")]
#[allow(dead_code)]
enum RoleName {
    User,
    Admin,
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

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "users",
    params(("fields" = Option<String>, Query, description = FIELDS, nullable = false,
         pattern = "^(id|email|name|role|created_at|updated_at)(,(id|email|name|role|created_at|updated_at))*$")),
    responses(
        (status = 200, description = "The signed-in user.", body = UserBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
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

/// A user: yourself, or anyone for an administrator (others are 404).
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(
        ("id" = i64, Path, minimum = 1, description = "The user's id."),
        ("fields" = Option<String>, Query, description = FIELDS, nullable = false,
         pattern = "^(id|email|name|role|created_at|updated_at)(,(id|email|name|role|created_at|updated_at))*$"),
    ),
    responses(
        (status = 200, description = "The user.", body = UserBody),
        errors::Invalid,
        errors::SignedIn,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = UserPatch)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "extract::normalized_email_opt")]
    #[garde(inner(email, length(max = 254)))]
    #[schema(format = Email, max_length = 254, nullable = false)]
    email: Option<String>,
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(inner(length(chars, min = 1, max = 100)))]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        nullable = false
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(inner(length(chars, min = 8, max = 128)))]
    #[schema(min_length = 8, max_length = 128, pattern = r"[^\s\u0085]", nullable = false)]
    password: Option<String>,
    /// Required with `email` or `password`.
    #[serde(default, deserialize_with = "extract::present")]
    #[garde(inner(length(min = 1, max = 1024)))]
    #[schema(min_length = 1, max_length = 1024, nullable = false)]
    current_password: Option<String>,
}

/// Changes your own email, name or password; email and password need
/// `current_password`.
#[utoipa::path(
    patch,
    path = "/v1/users/me",
    tag = "users",
    request_body = PatchBody,
    responses(
        (status = 200, description = "The user, changed.", body = UserBody),
        errors::JsonBody,
        errors::SignedIn,
        errors::Missing,
        errors::Conflict,
    ),
    security(("bearerAuth" = []))
)]
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

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[schema(as = RoleChange)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[garde(length(min = 1, max = 16))]
    #[schema(value_type = RoleName)]
    role: String,
}

/// Sets a user's role (administrators only).
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The user, changed.", body = UserBody),
        errors::JsonBody,
        errors::AdminOnly,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
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

/// Deletes a user (administrators only).
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    responses(
        (status = 204, description = "The user is deleted."),
        errors::Invalid,
        errors::AdminOnly,
        errors::Missing,
    ),
    security(("bearerAuth" = []))
)]
fn delete(state: &Rc<State>, request: Request, params: Params) -> Reply {
    let (principal, id) = crate::ready_or_return!(extract::principal_and_id(state, &request, &params));
    let state = state.clone();
    Reply::later(async move {
        state.users.delete(principal, UserId(id)).await?;
        Ok(reply::empty(StatusCode::NO_CONTENT))
    })
}
