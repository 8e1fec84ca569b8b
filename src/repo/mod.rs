//! Repositories: storage behind traits, with implementations for
//! PostgreSQL (tokio-postgres) and for the sqlx backends, SQLite and
//! MariaDB/MySQL, which share theirs. SQL lives only below this module.
//!
//! The backend is chosen once, from `database.url`, by [`Database::connect`];
//! everything above works with `Rc<dyn UserRepo>`.

pub mod migrate;
pub mod mysql;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod via_sqlx;

use std::rc::Rc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{Credentials, NewUser, User, UserEmail, UserFields, UserId, UserPatch, UserView};

/// What can go wrong in a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A uniqueness rule was broken; names the field (for example `email`).
    #[error("{0} is already taken")]
    Conflict(&'static str),
    /// The database cannot be reached now (down, restarting, timed out).
    /// Callers fail fast and tell clients to retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken invariant. The text is for logs only.
    #[error("database error: {0}")]
    Other(String),
}

/// Users, stored.
#[async_trait(?Send)]
pub trait UserRepo {
    /// Inserts a user; [`RepoError::Conflict`] on a taken email.
    async fn create(&self, user: &NewUser) -> Result<User, RepoError>;
    /// Reads only `fields` of a user.
    async fn find(&self, id: UserId, fields: UserFields) -> Result<Option<UserView>, RepoError>;
    /// The login check's inputs, by email.
    async fn credentials(&self, email: &UserEmail) -> Result<Option<Credentials>, RepoError>;
    /// Applies a patch (an empty one reads the user back); `None` if no
    /// such user. [`RepoError::Conflict`] on a taken email.
    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, RepoError>;
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    MySql,
}

impl Backend {
    /// `postgres://…` / `postgresql://…`, `sqlite://…` / `sqlite:…`, or
    /// `mysql://…` / `mariadb://…`.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(Backend::MySql)
        } else {
            None
        }
    }
}

/// How a worker uses its database; from `[database]` in the configuration.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    /// PostgreSQL: shared, pipelined clients per worker.
    pub pg_clients: usize,
    /// PostgreSQL: pooled connections per worker, for transactions.
    pub pg_pool_size: usize,
    /// PostgreSQL: `false` sends every query through a pool checkout instead
    /// of the shared clients (what most servers do; kept to measure it).
    pub pg_pipelining: bool,
    /// SQLite: connections per worker.
    pub sqlite_pool_size: usize,
    /// MariaDB/MySQL: connections per worker.
    pub mysql_pool_size: usize,
    pub connect_timeout: Duration,
    /// A query that takes longer fails as unavailable instead of hanging.
    pub query_timeout: Duration,
}

/// A connected database: the repositories and a health check.
pub struct Database {
    pub backend: Backend,
    pub users: Rc<dyn UserRepo>,
    health: Health,
}

enum Health {
    Postgres(Rc<postgres::PgDatabase>),
    Sqlite(sqlite::SqliteDatabase),
    MySql(mysql::MySqlDatabase),
}

impl Database {
    /// Connects to the backend `settings.url` names. PostgreSQL clients
    /// connect in the background and reconnect by themselves, so this
    /// returns at once even when the server is down.
    pub async fn connect(settings: &DbSettings) -> Result<Self, RepoError> {
        match Backend::of(&settings.url) {
            Some(Backend::Postgres) => {
                let db = Rc::new(postgres::PgDatabase::connect(settings).await?);
                Ok(Self {
                    backend: Backend::Postgres,
                    users: Rc::new(postgres::PgUserRepo::new(db.clone())),
                    health: Health::Postgres(db),
                })
            }
            Some(Backend::Sqlite) => {
                let db = sqlite::connect(settings).await?;
                Ok(Self {
                    backend: Backend::Sqlite,
                    users: Rc::new(via_sqlx::SqlxUserRepo::new(db.clone())),
                    health: Health::Sqlite(db),
                })
            }
            Some(Backend::MySql) => {
                let db = mysql::connect(settings)?;
                Ok(Self {
                    backend: Backend::MySql,
                    users: Rc::new(via_sqlx::SqlxUserRepo::new(db.clone())),
                    health: Health::MySql(db),
                })
            }
            None => Err(RepoError::Other(format!(
                "unsupported database URL scheme: {}",
                redact_url(&settings.url)
            ))),
        }
    }

    /// Connection figures for metrics, by name.
    pub fn gauges(&self) -> Vec<(String, f64)> {
        match &self.health {
            Health::Postgres(db) => db.gauges(),
            Health::Sqlite(db) => db.gauges("sqlite"),
            Health::MySql(db) => db.gauges("mysql"),
        }
    }

    /// Answers whether a trivial query succeeds now.
    pub async fn ping(&self) -> Result<(), RepoError> {
        match &self.health {
            Health::Postgres(db) => db.ping().await,
            Health::Sqlite(db) => db.ping().await,
            Health::MySql(db) => db.ping().await,
        }
    }
}

/// A database URL with its password replaced, for logs and `config check`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:<redacted>@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/drover.db"), "sqlite://data/drover.db");
        assert_eq!(Backend::of("postgresql://x"), Some(Backend::Postgres));
        assert_eq!(Backend::of("sqlite:x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("mysql://x"), Some(Backend::MySql));
        assert_eq!(Backend::of("mariadb://x"), Some(Backend::MySql));
        assert_eq!(Backend::of("oracle://x"), None);
    }
}
