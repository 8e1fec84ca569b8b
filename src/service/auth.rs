//! Authentication: logging in with email and password, and checking the
//! tokens that login issues.

use std::rc::Rc;

use super::tokens::{Principal, Token, TokenError, TokenService};
use super::{audit, Passwords, ServiceError};
use crate::domain::{Password, UserEmail};
use crate::repo::UserRepo;

#[derive(Clone)]
pub struct AuthService {
    repo: Rc<dyn UserRepo>,
    passwords: Passwords,
    tokens: Rc<TokenService>,
}

impl AuthService {
    pub fn new(repo: Rc<dyn UserRepo>, passwords: Passwords, tokens: Rc<TokenService>) -> Self {
        Self { repo, passwords, tokens }
    }

    /// A token for the user with this email and password. An unknown email,
    /// a malformed one and a wrong password all end in
    /// [`ServiceError::BadCredentials`] after the same amount of hashing
    /// work, so neither the answer nor its timing tells them apart.
    pub async fn login(&self, email: &str, password: &str) -> Result<Token, ServiceError> {
        let email_typed = email;
        let email = UserEmail::parse(email).ok();
        let stored = match &email {
            Some(email) => self.repo.credentials(email).await?,
            None => None,
        };
        // An out-of-bounds password cannot match any stored hash; check it
        // against the decoy anyway to spend the same time.
        let candidate =
            Password::parse(password).unwrap_or_else(|_| Password::parse("........").expect("8 characters"));
        let bounded = Password::parse(password).is_ok();
        let hash = stored.as_ref().map(|c| c.password_hash.clone());
        let matches = self.passwords.verify(&candidate, hash).await?;
        match stored {
            Some(credentials) if matches && bounded => {
                audit::record(audit::Event::LoginSucceeded { user: credentials.id });
                self.tokens
                    .issue(Principal { user: credentials.id, role: credentials.role })
                    .map_err(|e| ServiceError::Internal(e.into()))
            }
            stored => {
                let known_user = stored.map(|credentials| credentials.id);
                audit::record(audit::Event::LoginFailed { email: email_typed, known_user });
                Err(ServiceError::BadCredentials)
            }
        }
    }

    /// The principal a bearer token speaks for.
    pub fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        self.tokens.verify(token)
    }
}
