//! File metadata, stored: one implementation for every backend on the
//! portable statement layer. The bytes are the store's (`store.rs`); a row
//! names them by key. Replacing and deleting compare the key they read, so
//! that of two concurrent writers of one name exactly one removes the
//! object it replaced.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{FileMeta, FileName};
use crate::domain::UserId;
use crate::params;
use crate::repo::sql::{Row, SqlRef};
use crate::repo::RepoError;

/// What an upload stores about its file.
pub struct NewFile<'a> {
    pub owner: UserId,
    pub name: &'a FileName,
    pub key: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    pub content_type: &'a str,
}

#[async_trait(?Send)]
pub trait FileRepo {
    async fn find(&self, owner: UserId, name: &FileName) -> Result<Option<FileMeta>, RepoError>;
    /// A new row; [`RepoError::Conflict`] when the owner has the name
    /// already (a concurrent upload won).
    async fn insert(&self, file: &NewFile<'_>, now: SystemTime) -> Result<FileMeta, RepoError>;
    /// Points row `id` at a new object, if it still points at `old_key`.
    async fn replace(
        &self,
        id: i64,
        old_key: &str,
        file: &NewFile<'_>,
        now: SystemTime,
    ) -> Result<bool, RepoError>;
    /// Removes row `id`, if it still points at `key`.
    async fn delete(&self, id: i64, key: &str) -> Result<bool, RepoError>;
    /// The owner's files, newest first, before id `before`.
    async fn list(&self, owner: UserId, before: Option<i64>, limit: i64) -> Result<Vec<FileMeta>, RepoError>;
}

pub struct SqlFileRepo {
    sql: SqlRef,
}

impl SqlFileRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }
}

const COLUMNS: &str = "id, owner_id, name, store_key, size, sha256, content_type, created_at, updated_at";

fn meta(row: &Row) -> Result<FileMeta, RepoError> {
    let stored =
        |e: crate::domain::Invalid| RepoError::Other(format!("stored file name: {}", e.issue).into());
    Ok(FileMeta {
        id: row.int(0)?,
        owner: UserId(row.int(1)?),
        name: FileName::parse(&row.text(2)?).map_err(stored)?,
        key: row.text(3)?,
        size: u64::try_from(row.int(4)?).unwrap_or(0),
        sha256: row.text(5)?,
        content_type: row.text(6)?,
        created_at: row.time(7)?,
        updated_at: row.time(8)?,
    })
}

fn size(file: &NewFile<'_>) -> i64 {
    i64::try_from(file.size).unwrap_or(i64::MAX)
}

#[async_trait(?Send)]
impl FileRepo for SqlFileRepo {
    async fn find(&self, owner: UserId, name: &FileName) -> Result<Option<FileMeta>, RepoError> {
        let row = self
            .sql
            .query_opt(
                &format!("SELECT {COLUMNS} FROM files WHERE owner_id = ? AND name = ?"),
                params![owner.0, name.as_str()],
            )
            .await?;
        row.as_ref().map(meta).transpose()
    }

    async fn insert(&self, file: &NewFile<'_>, now: SystemTime) -> Result<FileMeta, RepoError> {
        let id = self
            .sql
            .insert(
                "INSERT INTO files (owner_id, name, store_key, size, sha256, content_type, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    file.owner.0,
                    file.name.as_str(),
                    file.key,
                    size(file),
                    file.sha256,
                    file.content_type,
                    now,
                    now
                ],
            )
            .await
            .map_err(|e| e.unique_is("name"))?;
        let row =
            self.sql.query_one(&format!("SELECT {COLUMNS} FROM files WHERE id = ?"), params![id]).await?;
        meta(&row)
    }

    async fn replace(
        &self,
        id: i64,
        old_key: &str,
        file: &NewFile<'_>,
        now: SystemTime,
    ) -> Result<bool, RepoError> {
        let changed = self
            .sql
            .execute(
                "UPDATE files SET store_key = ?, size = ?, sha256 = ?, content_type = ?, updated_at = ? \
                 WHERE id = ? AND store_key = ?",
                params![file.key, size(file), file.sha256, file.content_type, now, id, old_key],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn delete(&self, id: i64, key: &str) -> Result<bool, RepoError> {
        let deleted =
            self.sql.execute("DELETE FROM files WHERE id = ? AND store_key = ?", params![id, key]).await?;
        Ok(deleted == 1)
    }

    async fn list(&self, owner: UserId, before: Option<i64>, limit: i64) -> Result<Vec<FileMeta>, RepoError> {
        let rows = self
            .sql
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM files WHERE owner_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
                ),
                params![owner.0, before.unwrap_or(i64::MAX), limit],
            )
            .await?;
        rows.iter().map(meta).collect()
    }
}
