//! Domain types: what the services work with. No serde derives and no HTTP
//! types here; values are validated when they are built (`parse`), so a
//! `UserEmail` in hand is always a normalised, valid address.

pub mod money;
mod password;
pub mod proration;
pub mod time;
mod user;

pub use password::Password;
pub use user::{
    Credentials, NewUser, Role, User, UserEmail, UserField, UserFields, UserId, UserName, UserPatch, UserView,
};

/// A value that failed its domain rule: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {issue}")]
pub struct Invalid {
    pub field: &'static str,
    pub issue: String,
}

impl Invalid {
    pub fn new(field: &'static str, issue: impl Into<String>) -> Self {
        Self { field, issue: issue.into() }
    }
}
