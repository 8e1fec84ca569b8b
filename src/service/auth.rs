//! Authentication: logging in with email and password, renewing and ending
//! the session a login starts, and deciding whom a bearer token speaks for.

use std::rc::Rc;
use std::time::Duration;

use super::tokens::{Principal, Token, TokenError, TokenService};
use super::{audit, Passwords, ServiceError};
use crate::cache::Cache;
use crate::domain::time::Clock;
use crate::domain::{Password, UserEmail, UserId};
use crate::repo::{Database, Repos, UserRepo};
use crate::resources::sessions::{self, SessionRepo, SqlSessionRepo, Standing};

/// What a login or a refresh hands out.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: Token,
    /// Opaque; exchanged at `POST /v1/auth/refresh` for a new session.
    pub refresh_token: String,
    pub refresh_expires_in: Duration,
}

/// Why a bearer token does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad signature, expired, malformed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Signed, but revoked since: the user was deleted, or changed their
    /// password, email or role after it was issued.
    #[error("token revoked")]
    Revoked,
    /// The user record could not be read.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

#[derive(Clone)]
pub struct AuthService {
    repo: Rc<dyn UserRepo>,
    db: Rc<Database>,
    passwords: Passwords,
    tokens: Rc<TokenService>,
    cache: Cache,
    clock: Rc<dyn Clock>,
    refresh_ttl: Duration,
}

/// The outcome of exchanging a refresh token, inside its transaction.
enum Exchange {
    Rotated {
        user: UserId,
        standing: Standing,
        refresh_token: String,
    },
    /// Not a current token: unknown, expired, revoked or already used.
    NotCurrent,
    /// A current token of a family begun before the user's last password,
    /// email or role change.
    Stale {
        family: String,
    },
}

fn sessions(repos: &dyn Repos) -> SqlSessionRepo {
    SqlSessionRepo::new(repos.sql())
}

impl AuthService {
    pub fn new(
        db: Rc<Database>,
        passwords: Passwords,
        tokens: Rc<TokenService>,
        cache: Cache,
        clock: Rc<dyn Clock>,
        refresh_ttl: Duration,
    ) -> Self {
        Self { repo: db.users.clone(), db, passwords, tokens, cache, clock, refresh_ttl }
    }

    /// A session for the user with this email and password. An unknown
    /// email, a malformed one and a wrong password all end in
    /// [`ServiceError::BadCredentials`] after the same amount of hashing
    /// work, so neither the answer nor its timing tells them apart.
    pub async fn login(&self, email: &str, password: &str) -> Result<Session, ServiceError> {
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
                let standing = Standing { role: credentials.role, token_version: credentials.token_version };
                let family = sessions::random_hex(16);
                let refresh_token = self.store_refresh(&*self.db, &family, credentials.id, standing).await?;
                self.session(credentials.id, standing, refresh_token)
            }
            stored => {
                let known_user = stored.map(|credentials| credentials.id);
                audit::record(audit::Event::LoginFailed { email: email_typed, known_user });
                Err(ServiceError::BadCredentials)
            }
        }
    }

    /// Exchanges a refresh token for a new session, rotating it. A token
    /// that was already exchanged revokes its whole family: either the
    /// client or someone who copied the token used it twice, and the server
    /// cannot tell which (RFC 9700, 4.14.2).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, ServiceError> {
        let hash = sessions::token_hash(refresh_token);
        let now = self.clock.now();
        let exchange = self
            .db
            .transaction(|repos| {
                let hash = hash.clone();
                Box::pin(async move {
                    let repo = sessions(&*repos);
                    if !repo.use_refresh(&hash, now).await? {
                        return Ok::<_, ServiceError>(Exchange::NotCurrent);
                    }
                    let record = repo.find_refresh(&hash).await?.ok_or(ServiceError::NotFound)?;
                    match repo.standing(record.user).await? {
                        Some(standing) if standing.token_version == record.token_version => {
                            let refresh_token =
                                self.store_refresh(&*repos, &record.family, record.user, standing).await?;
                            Ok(Exchange::Rotated { user: record.user, standing, refresh_token })
                        }
                        _ => Ok(Exchange::Stale { family: record.family }),
                    }
                })
            })
            .await?;
        match exchange {
            Exchange::Rotated { user, standing, refresh_token } => {
                self.session(user, standing, refresh_token)
            }
            Exchange::Stale { family } => {
                sessions(&*self.db).revoke_family(&family, now).await?;
                Err(ServiceError::SessionEnded)
            }
            Exchange::NotCurrent => {
                let repo = sessions(&*self.db);
                if let Some(record) = repo.find_refresh(&hash).await? {
                    if record.used && !record.revoked {
                        repo.revoke_family(&record.family, now).await?;
                        audit::record(audit::Event::RefreshReused { user: record.user });
                    }
                }
                Err(ServiceError::SessionEnded)
            }
        }
    }

    /// Ends the session a refresh token belongs to (its whole family).
    /// Unknown tokens are not an error: the session is over either way.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ServiceError> {
        let repo = sessions(&*self.db);
        if let Some(record) = repo.find_refresh(&sessions::token_hash(refresh_token)).await? {
            if repo.revoke_family(&record.family, self.clock.now()).await? > 0 {
                audit::record(audit::Event::LoggedOut { user: record.user });
            }
        }
        Ok(())
    }

    /// Whom a bearer token speaks for: its signature and times are checked,
    /// then the user's record (through the cache) says whether the user
    /// still exists, with which role, and whether the token was revoked by
    /// a later password, email or role change.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claimed = self.tokens.verify(token)?;
        let user = claimed.principal.user;
        let standing = self
            .cache
            .get_or_load(user, || async {
                sessions(&*self.db).standing(user).await.map_err(ServiceError::from)
            })
            .await?;
        match standing {
            Some(standing) if standing.token_version == claimed.version => {
                Ok(Principal { user, role: standing.role })
            }
            _ => Err(AuthError::Revoked),
        }
    }

    /// Stores a new refresh token of `family` and returns it.
    async fn store_refresh(
        &self,
        repos: &dyn Repos,
        family: &str,
        user: UserId,
        standing: Standing,
    ) -> Result<String, ServiceError> {
        let token = sessions::random_hex(32);
        let now = self.clock.now();
        sessions(repos)
            .insert_refresh(
                &sessions::token_hash(&token),
                family,
                user,
                standing.token_version,
                now,
                now + self.refresh_ttl,
            )
            .await?;
        Ok(token)
    }

    fn session(
        &self,
        user: UserId,
        standing: Standing,
        refresh_token: String,
    ) -> Result<Session, ServiceError> {
        let access = self
            .tokens
            .issue(Principal { user, role: standing.role }, standing.token_version)
            .map_err(|e| ServiceError::Internal(e.into()))?;
        Ok(Session { access, refresh_token, refresh_expires_in: self.refresh_ttl })
    }
}
