//! Services: the business logic, on domain types. Nothing here knows HTTP,
//! so the CLI and future jobs call the same code the API does.

pub mod audit;
mod auth;
mod keys;
mod passwords;
mod tokens;
mod users;

pub use auth::{AuthError, AuthService, Session};
pub use keys::{KeyError, KeySet, KeySource};
pub use passwords::Passwords;
pub use tokens::{Claimed, Principal, Token, TokenError, TokenService};
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
    /// The `current_password` of a sensitive change is wrong.
    #[error("the current password is wrong")]
    CurrentPasswordWrong,
    /// A refresh token that is unknown, expired, revoked or already used.
    #[error("the session has ended")]
    SessionEnded,
    /// The caller is known but may not do this (an admin-only action).
    #[error("forbidden")]
    Forbidden,
    /// Not enough stock available for these products (ids).
    #[error("out of stock: {0:?}")]
    OutOfStock(Vec<i64>),
    /// An adjustment would take a product's stock below what placed orders
    /// hold (or past the most a product may hold).
    #[error("stock would fall below the reserved units")]
    StockReserved,
    /// A state change the lifecycle does not allow, from `from` to `to`.
    #[error("cannot go from {from} to {to}")]
    InvalidTransition { from: &'static str, to: &'static str },
    /// Amounts in more than one currency where one is required (an order,
    /// an invoice).
    #[error("mixed currencies: {0}")]
    MixedCurrencies(String),
    /// An idempotency key sent again with a different request.
    #[error("idempotency key reused for a different request")]
    IdempotencyKeyReused,
    /// An idempotency key whose first request is still running.
    #[error("a request with this idempotency key is in progress")]
    RequestInProgress,
    /// The CPU pool for hashing is full; retry shortly.
    #[error("busy")]
    Busy,
    /// A dependency (the database) is down; retry shortly. Keeps its cause.
    #[error("unavailable: {0}")]
    Unavailable(crate::repo::Cause),
    /// A transaction lost to a concurrent one; [`crate::repo::Database::transaction`]
    /// runs it again, and one that keeps losing ends as unavailable.
    #[error("contention: {0}")]
    Contention(crate::repo::Cause),
    /// A bug or broken invariant; for logs only. Keeps its cause.
    #[error("{0}")]
    Internal(crate::repo::Cause),
}

impl From<RepoError> for ServiceError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Conflict(field) => ServiceError::Taken(field),
            RepoError::Unavailable(why) => ServiceError::Unavailable(why),
            RepoError::Contention(why) => ServiceError::Contention(why),
            RepoError::Other(why) => ServiceError::Internal(why),
        }
    }
}

impl crate::repo::TxError for ServiceError {
    fn is_contention(&self) -> bool {
        matches!(self, ServiceError::Contention(_))
    }
}
