//! Services: the business logic, on domain types. Nothing here knows HTTP,
//! so the CLI and future jobs call the same code the API does.

mod auth;
mod keys;
mod passwords;
mod tokens;
mod users;

pub use auth::AuthService;
pub use keys::{KeyError, KeySet, KeySource};
pub use passwords::Passwords;
pub use tokens::{Principal, Token, TokenError, TokenService};
pub use users::{UserChanges, UserService};

use crate::domain::Invalid;
use crate::repo::RepoError;

/// What a service call can end with, besides success. Business outcomes,
/// not statuses: the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid input: {0}")]
    Invalid(#[from] Invalid),
    #[error("{0} is already taken")]
    Taken(&'static str),
    #[error("not found")]
    NotFound,
    #[error("email or password is wrong")]
    BadCredentials,
    /// The CPU pool for hashing is full; retry shortly.
    #[error("busy")]
    Busy,
    /// A dependency (the database) is down; retry shortly. Keeps its cause.
    #[error("unavailable: {0}")]
    Unavailable(crate::repo::Cause),
    /// A bug or broken invariant; for logs only. Keeps its cause.
    #[error("{0}")]
    Internal(crate::repo::Cause),
}

impl From<RepoError> for ServiceError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Conflict(field) => ServiceError::Taken(field),
            RepoError::Unavailable(why) | RepoError::Contention(why) => ServiceError::Unavailable(why),
            RepoError::Other(why) => ServiceError::Internal(why),
        }
    }
}
