//! Turning database rows into domain values, shared by both backends: each
//! backend only says how to read an integer, a text and a time column.

use std::time::SystemTime;

use crate::domain::{Credentials, Role, User, UserEmail, UserField, UserFields, UserId, UserName, UserView};

use super::RepoError;

/// Typed column access on one backend's row type.
pub(crate) trait UserRow {
    fn int(&self, column: &str) -> Result<i64, RepoError>;
    fn text(&self, column: &str) -> Result<&str, RepoError>;
    fn time(&self, column: &str) -> Result<SystemTime, RepoError>;
}

fn role(row: &impl UserRow) -> Result<Role, RepoError> {
    let text = row.text("role")?;
    Role::parse(text).ok_or_else(|| RepoError::Other(format!("unknown role {text:?} in the database").into()))
}

/// The requested fields of a row.
pub(crate) fn view(row: &impl UserRow, fields: UserFields) -> Result<UserView, RepoError> {
    let stored = |e: crate::domain::Invalid| {
        RepoError::Other(format!("stored value breaks a domain rule: {e}").into())
    };
    let mut view = UserView::default();
    for field in fields.iter() {
        match field {
            UserField::Id => view.id = Some(UserId(row.int("id")?)),
            UserField::Email => view.email = Some(UserEmail::parse(row.text("email")?).map_err(stored)?),
            UserField::Name => view.name = Some(UserName::parse(row.text("name")?).map_err(stored)?),
            UserField::Role => view.role = Some(role(row)?),
            UserField::CreatedAt => view.created_at = Some(row.time("created_at")?),
            UserField::UpdatedAt => view.updated_at = Some(row.time("updated_at")?),
        }
    }
    Ok(view)
}

/// A row with every user column.
pub(crate) fn user(row: &impl UserRow) -> Result<User, RepoError> {
    view(row, UserFields::ALL)?.into_user().ok_or_else(|| RepoError::Other("incomplete user row".into()))
}

/// A row of `id, role, password_hash, token_version`.
pub(crate) fn credentials(row: &impl UserRow) -> Result<Credentials, RepoError> {
    Ok(Credentials {
        id: UserId(row.int("id")?),
        role: role(row)?,
        password_hash: row.text("password_hash")?.to_owned(),
        token_version: row.int("token_version")?,
    })
}
