//! `UserRepo` on the sqlx backends (SQLite, MariaDB/MySQL): one
//! implementation for both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::rc::Rc;

use async_trait::async_trait;
use sqlx::{Database, Executor, IntoArguments, Row};

use super::tx::{Exec, TxConn};
use super::{Dialect, SqlxPool};
use crate::domain::{
    Credentials, NewUser, Role, User, UserEmail, UserField, UserFields, UserId, UserName, UserPatch, UserView,
};
use crate::repo::rows::{self, UserRow};
use crate::repo::{RepoError, UserRepo};

const COLUMNS: &str = "id, email, name, role, created_at, updated_at";

/// Users on a sqlx backend, on its pool or in one transaction.
pub struct SqlxUserRepo<DB: Database> {
    exec: Exec<DB>,
}

impl<DB: Database> SqlxUserRepo<DB> {
    pub fn new(db: SqlxPool<DB>) -> Self {
        Self { exec: Exec::Pool(db) }
    }

    pub(crate) fn in_transaction(conn: Rc<TxConn<DB>>) -> Self {
        Self { exec: Exec::Tx(conn) }
    }
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

impl<DB> SqlxUserRepo<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    /// The row `read` returns after `write` ran, both in one transaction:
    /// their own, or the one this repository is part of.
    async fn write_then_read<'q>(
        &self,
        write: Query<'q, DB>,
        read: Query<'q, DB>,
    ) -> Result<Option<DB::Row>, RepoError> {
        let db = self.exec.db();
        if self.exec.in_transaction() {
            let mut conn = self.exec.conn().await?;
            db.timed(write.execute(&mut *conn)).await?;
            return db.timed(read.fetch_optional(&mut *conn)).await;
        }
        let mut tx = db.begin().await?;
        let result = async {
            db.timed(write.execute(&mut *tx)).await?;
            db.timed(read.fetch_optional(&mut *tx)).await
        }
        .await;
        db.finish(tx, result).await
    }

    /// The row `query` returns, if any.
    async fn fetch_optional<'q>(&self, query: Query<'q, DB>) -> Result<Option<DB::Row>, RepoError> {
        let mut conn = self.exec.conn().await?;
        self.exec.db().timed(query.fetch_optional(&mut *conn)).await
    }
}

#[async_trait(?Send)]
impl<DB> UserRepo for SqlxUserRepo<DB>
where
    DB: Dialect,
    DB::Row: UserRow,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn create(&self, user: &NewUser) -> Result<User, RepoError> {
        let now = millis(SystemTime::now());
        let insert = "INSERT INTO users (email, name, role, password_hash, created_at, updated_at) \
                      VALUES (?, ?, ?, ?, ?, ?)";
        let bind = |sql| {
            sqlx::query::<DB>(sql)
                .bind(user.email.as_str())
                .bind(user.name.as_str())
                .bind(user.role.as_str())
                .bind(&user.password_hash)
                .bind(now)
                .bind(now)
        };
        let row = if DB::RETURNING {
            let sql = format!("{insert} RETURNING {COLUMNS}");
            self.fetch_optional(bind(&sql)).await
        } else {
            let sql = format!("SELECT {COLUMNS} FROM users WHERE id = {}", DB::LAST_INSERT_ID);
            self.write_then_read(bind(insert), sqlx::query::<DB>(&sql)).await
        };
        // The one unique key a user can break.
        let row = row.map_err(|e| e.unique_is("email"))?;
        let row = row.ok_or_else(|| RepoError::Other("an insert returned no row".into()))?;
        rows::user(&row)
    }

    async fn find(&self, id: UserId, fields: UserFields) -> Result<Option<UserView>, RepoError> {
        let columns: Vec<&str> = fields.iter().map(UserField::name).collect();
        let sql = format!("SELECT {} FROM users WHERE id = ? AND deleted_at IS NULL", columns.join(", "));
        let row = self.fetch_optional(sqlx::query::<DB>(&sql).bind(id.0)).await?;
        row.map(|row| rows::view(&row, fields)).transpose()
    }

    async fn credentials(&self, email: &UserEmail) -> Result<Option<Credentials>, RepoError> {
        let query = sqlx::query::<DB>(
            "SELECT id, role, password_hash, token_version FROM users WHERE email = ? AND deleted_at IS NULL",
        )
        .bind(email.as_str());
        let row = self.fetch_optional(query).await?;
        row.map(|row| rows::credentials(&row)).transpose()
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, RepoError> {
        // One statement for every patch: NULL leaves a column as it is.
        let set = "UPDATE users SET email = COALESCE(?, email), name = COALESCE(?, name), \
                   password_hash = COALESCE(?, password_hash), role = COALESCE(?, role), \
                   token_version = token_version + ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL";
        let bind = |sql| {
            sqlx::query::<DB>(sql)
                .bind(patch.email.as_ref().map(UserEmail::as_str))
                .bind(patch.name.as_ref().map(UserName::as_str))
                .bind(patch.password_hash.as_deref())
                .bind(patch.role.map(Role::as_str))
                .bind(i64::from(patch.revoke_tokens))
                .bind(millis(SystemTime::now()))
                .bind(id.0)
        };
        let row = if DB::RETURNING {
            let sql = format!("{set} RETURNING {COLUMNS}");
            self.fetch_optional(bind(&sql)).await
        } else {
            let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ? AND deleted_at IS NULL");
            self.write_then_read(bind(set), sqlx::query::<DB>(&sql).bind(id.0)).await
        };
        let row = row.map_err(|e| e.unique_is("email"))?;
        row.map(|row| rows::user(&row)).transpose()
    }
}

/// Times are stored as Unix milliseconds: one encoding for both backends
/// (SQLite has no timestamp type).
fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn column(error: sqlx::Error) -> RepoError {
    RepoError::Other(format!("unexpected column: {error}").into())
}

/// Column access for a sqlx row type (a blanket impl would overlap the one
/// for tokio-postgres rows).
macro_rules! user_row {
    ($row:ty) => {
        impl UserRow for $row {
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
    };
}

user_row!(sqlx::sqlite::SqliteRow);
user_row!(sqlx::mysql::MySqlRow);
