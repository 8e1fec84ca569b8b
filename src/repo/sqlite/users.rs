//! `UserRepo` on SQLite.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::SqliteDatabase;
use crate::domain::{
    Credentials, NewUser, Role, User, UserEmail, UserField, UserFields, UserId, UserName, UserPatch, UserView,
};
use crate::repo::rows::{self, UserRow};
use crate::repo::{RepoError, UserRepo};

const COLUMNS: &str = "id, email, name, role, created_at, updated_at";

/// Users in SQLite.
pub struct SqliteUserRepo {
    db: SqliteDatabase,
}

impl SqliteUserRepo {
    pub fn new(db: SqliteDatabase) -> Self {
        Self { db }
    }
}

#[async_trait(?Send)]
impl UserRepo for SqliteUserRepo {
    async fn create(&self, user: &NewUser) -> Result<User, RepoError> {
        let now = millis(SystemTime::now());
        let sql = format!(
            "INSERT INTO users (email, name, role, password_hash, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
        );
        let query = sqlx::query(&sql)
            .bind(user.email.as_str())
            .bind(user.name.as_str())
            .bind(user.role.as_str())
            .bind(&user.password_hash)
            .bind(now)
            .bind(now);
        let row = self.db.timed(query.fetch_one(self.db.pool())).await?;
        rows::user(&row)
    }

    async fn find(&self, id: UserId, fields: UserFields) -> Result<Option<UserView>, RepoError> {
        let columns: Vec<&str> = fields.iter().map(UserField::name).collect();
        let sql = format!("SELECT {} FROM users WHERE id = ?", columns.join(", "));
        let row = self.db.timed(sqlx::query(&sql).bind(id.0).fetch_optional(self.db.pool())).await?;
        row.map(|row| rows::view(&row, fields)).transpose()
    }

    async fn credentials(&self, email: &UserEmail) -> Result<Option<Credentials>, RepoError> {
        let query =
            sqlx::query("SELECT id, role, password_hash FROM users WHERE email = ?").bind(email.as_str());
        let row = self.db.timed(query.fetch_optional(self.db.pool())).await?;
        row.map(|row| rows::credentials(&row)).transpose()
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, RepoError> {
        // One statement for every patch: NULL leaves a column as it is.
        let sql = format!(
            "UPDATE users SET email = COALESCE(?, email), name = COALESCE(?, name), \
             password_hash = COALESCE(?, password_hash), role = COALESCE(?, role), updated_at = ? \
             WHERE id = ? RETURNING {COLUMNS}"
        );
        let query = sqlx::query(&sql)
            .bind(patch.email.as_ref().map(UserEmail::as_str))
            .bind(patch.name.as_ref().map(UserName::as_str))
            .bind(patch.password_hash.as_deref())
            .bind(patch.role.map(Role::as_str))
            .bind(millis(SystemTime::now()))
            .bind(id.0);
        let row = self.db.timed(query.fetch_optional(self.db.pool())).await?;
        row.map(|row| rows::user(&row)).transpose()
    }
}

/// Times are stored as Unix milliseconds.
fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn column(error: sqlx::Error) -> RepoError {
    RepoError::Other(format!("unexpected column: {error}"))
}

impl UserRow for SqliteRow {
    fn int(&self, column_name: &str) -> Result<i64, RepoError> {
        self.try_get(column_name).map_err(column)
    }
    fn text(&self, column_name: &str) -> Result<&str, RepoError> {
        self.try_get(column_name).map_err(column)
    }
    fn time(&self, column_name: &str) -> Result<SystemTime, RepoError> {
        self.try_get(column_name).map(from_millis).map_err(column)
    }
}
