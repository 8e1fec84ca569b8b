//! The audit log: one structured line per security event (target
//! `drover::audit`, level INFO), whichever way the service was called, so
//! an operator can answer "who logged in, who failed to, who changed their
//! password or email" from the logs alone. Each line carries the event, the
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
    }
}
