//! The audit log: one structured line per security event (target
//! `drover::audit`, level INFO), whichever way the service was called, so
//! an operator can answer "who logged in, who failed to, who was locked
//! out, who changed their password, email or role, whose refresh token was
//! replayed" from the logs alone. Each line carries the event, the
//! user id when known, and the request id when the event came from a
//! request (the id the client got in `x-request-id`). Never a password, a
//! hash or a token. Keep these lines when the rest of the log is quieter:
//! `log.level = "warn,drover::audit=info"`.

use crate::domain::UserId;

/// What happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    LoginSucceeded {
        user: UserId,
    },
    /// A wrong password, an unknown address, or a malformed one: the
    /// address as typed (lower-cased) says which account was tried.
    LoginFailed {
        email: &'a str,
        known_user: Option<UserId>,
    },
    Registered {
        user: UserId,
    },
    PasswordChanged {
        user: UserId,
    },
    EmailChanged {
        user: UserId,
    },
    /// A password or email change with a wrong `current_password`.
    CurrentPasswordWrong {
        user: UserId,
    },
    /// A rotated refresh token presented again: its family is revoked.
    RefreshReused {
        user: UserId,
    },
    LoggedOut {
        user: UserId,
    },
    RoleChanged {
        user: UserId,
        by: UserId,
        role: crate::domain::Role,
    },
    UserDeleted {
        user: UserId,
        by: UserId,
    },
    /// Login attempts for an account refused until `retry_after_secs`
    /// passes, after too many wrong passwords.
    LoginLockedOut {
        email: &'a str,
        retry_after_secs: u64,
    },
}

/// Writes the event's line.
pub fn record(event: Event<'_>) {
    drover_worker::request_id::read_current(|request_id| write(event, request_id.unwrap_or("")));
}

fn write(event: Event<'_>, request_id: &str) {
    match event {
        Event::LoginSucceeded { user } => {
            tracing::info!(target: "drover::audit", event = "login_succeeded", user_id = user.0, request_id);
        }
        Event::LoginFailed { email, known_user } => tracing::info!(
            target: "drover::audit",
            event = "login_failed",
            email = %email.trim().to_lowercase(),
            user_id = known_user.map(|user| user.0),
            request_id,
        ),
        Event::Registered { user } => {
            tracing::info!(target: "drover::audit", event = "registered", user_id = user.0, request_id);
        }
        Event::PasswordChanged { user } => {
            tracing::info!(target: "drover::audit", event = "password_changed", user_id = user.0, request_id);
        }
        Event::EmailChanged { user } => {
            tracing::info!(target: "drover::audit", event = "email_changed", user_id = user.0, request_id);
        }
        Event::CurrentPasswordWrong { user } => {
            tracing::info!(target: "drover::audit", event = "current_password_wrong", user_id = user.0, request_id);
        }
        Event::RefreshReused { user } => tracing::warn!(
            target: "drover::audit",
            event = "refresh_token_reused",
            user_id = user.0,
            request_id,
            "a rotated refresh token was presented again; its session is revoked"
        ),
        Event::LoggedOut { user } => {
            tracing::info!(target: "drover::audit", event = "logged_out", user_id = user.0, request_id);
        }
        Event::RoleChanged { user, by, role } => tracing::info!(
            target: "drover::audit",
            event = "role_changed",
            user_id = user.0,
            by_user_id = by.0,
            role = role.as_str(),
            request_id,
        ),
        Event::UserDeleted { user, by } => tracing::info!(
            target: "drover::audit",
            event = "user_deleted",
            user_id = user.0,
            by_user_id = by.0,
            request_id,
        ),
        Event::LoginLockedOut { email, retry_after_secs } => tracing::warn!(
            target: "drover::audit",
            event = "login_locked_out",
            email = %email.trim().to_lowercase(),
            retry_after_secs,
            request_id,
        ),
    }
}
