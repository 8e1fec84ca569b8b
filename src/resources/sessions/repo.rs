//! Standings and refresh tokens, stored: one implementation for every
//! backend, on the portable statement layer.

use std::time::SystemTime;

use async_trait::async_trait;

use super::Standing;
use crate::domain::{Role, UserId};
use crate::params;
use crate::repo::sql::{Row, SqlRef};
use crate::repo::RepoError;

/// A refresh token as stored (by its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub family: String,
    pub user: UserId,
    /// The user's token version when the family began.
    pub token_version: i64,
    pub expires_at: SystemTime,
    /// Set once it was exchanged for a new one.
    pub used: bool,
    /// Set once its family was revoked (logout, reuse, deletion).
    pub revoked: bool,
}

#[async_trait(?Send)]
pub trait SessionRepo {
    /// The standing of a user that exists (deleted users have none).
    async fn standing(&self, user: UserId) -> Result<Option<Standing>, RepoError>;
    /// The password hash of a user that exists.
    async fn password_hash(&self, user: UserId) -> Result<Option<String>, RepoError>;
    /// Marks a user deleted: the row stays (orders and invoices refer to
    /// it), its email is freed and its password and tokens stop working.
    /// `false` if there was no such user.
    async fn delete_user(&self, user: UserId, now: SystemTime) -> Result<bool, RepoError>;
    /// Stores a new refresh token.
    async fn insert_refresh(
        &self,
        hash: &str,
        family: &str,
        user: UserId,
        token_version: i64,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), RepoError>;
    /// Marks a current token (not used, not revoked, not expired) used;
    /// `false` if it was not current, so two exchanges of one token cannot
    /// both succeed.
    async fn use_refresh(&self, hash: &str, now: SystemTime) -> Result<bool, RepoError>;
    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, RepoError>;
    /// Revokes every token of a family; how many were still unrevoked.
    async fn revoke_family(&self, family: &str, now: SystemTime) -> Result<u64, RepoError>;
    /// Revokes every token of a user.
    async fn revoke_user(&self, user: UserId, now: SystemTime) -> Result<u64, RepoError>;
}

pub struct SqlSessionRepo {
    sql: SqlRef,
}

impl SqlSessionRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }
}

fn refresh(row: &Row) -> Result<RefreshRecord, RepoError> {
    Ok(RefreshRecord {
        family: row.text(0)?,
        user: UserId(row.int(1)?),
        token_version: row.int(2)?,
        expires_at: row.time(3)?,
        used: row.opt_int(4)?.is_some(),
        revoked: row.opt_int(5)?.is_some(),
    })
}

#[async_trait(?Send)]
impl SessionRepo for SqlSessionRepo {
    async fn standing(&self, user: UserId) -> Result<Option<Standing>, RepoError> {
        let sql = "SELECT role, token_version FROM users WHERE id = ? AND deleted_at IS NULL";
        let Some(row) = self.sql.query_opt(sql, params![user.0]).await? else { return Ok(None) };
        let text = row.text(0)?;
        let role = Role::parse(&text)
            .ok_or_else(|| RepoError::Other(format!("unknown role {text:?} in the database").into()))?;
        Ok(Some(Standing { role, token_version: row.int(1)? }))
    }

    async fn password_hash(&self, user: UserId) -> Result<Option<String>, RepoError> {
        let sql = "SELECT password_hash FROM users WHERE id = ? AND deleted_at IS NULL";
        self.sql.query_opt(sql, params![user.0]).await?.map(|row| row.text(0)).transpose()
    }

    async fn delete_user(&self, user: UserId, now: SystemTime) -> Result<bool, RepoError> {
        // `.invalid` is reserved (RFC 2606): the scrubbed address can never
        // be someone's, and the real one can be registered again.
        let scrubbed = format!("deleted-{}@deleted.invalid", user.0);
        let changed = self
            .sql
            .execute(
                "UPDATE users SET deleted_at = ?, email = ?, password_hash = '!', \
                 token_version = token_version + 1 WHERE id = ? AND deleted_at IS NULL",
                params![now, scrubbed, user.0],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn insert_refresh(
        &self,
        hash: &str,
        family: &str,
        user: UserId,
        token_version: i64,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), RepoError> {
        self.sql
            .insert(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, token_version, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![hash, family, user.0, token_version, now, expires_at],
            )
            .await?;
        Ok(())
    }

    async fn use_refresh(&self, hash: &str, now: SystemTime) -> Result<bool, RepoError> {
        let changed = self
            .sql
            .execute(
                "UPDATE refresh_tokens SET used_at = ? \
                 WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?",
                params![now, hash, now],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, RepoError> {
        let sql = "SELECT family, user_id, token_version, expires_at, used_at, revoked_at \
                   FROM refresh_tokens WHERE token_hash = ?";
        self.sql.query_opt(sql, params![hash]).await?.as_ref().map(refresh).transpose()
    }

    async fn revoke_family(&self, family: &str, now: SystemTime) -> Result<u64, RepoError> {
        self.sql
            .execute(
                "UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
                params![now, family],
            )
            .await
    }

    async fn revoke_user(&self, user: UserId, now: SystemTime) -> Result<u64, RepoError> {
        self.sql
            .execute(
                "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                params![now, user.0],
            )
            .await
    }
}
