//! The rules of files, without HTTP: who may see what, the size limit
//! enforced while the bytes arrive, the digest computed on the way, and the
//! order of store and database writes that leaves nothing half-done.

use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::repo::{FileRepo, NewFile, SqlFileRepo};
use super::store::{FileStore, StoreError};
use super::{FileMeta, FileName};
use crate::domain::time::Clock;
use crate::repo::{Database, RepoError, Repos, TX_ATTEMPTS};
use crate::service::{Principal, ServiceError};

/// Why an upload failed.
#[derive(Debug)]
pub enum PutError<E> {
    /// Reading the body failed (the client stalled or went away).
    Body(E),
    /// The body passed `files.max_bytes`; nothing was kept.
    TooLarge {
        limit: u64,
    },
    Service(ServiceError),
}

impl<E> From<ServiceError> for PutError<E> {
    fn from(error: ServiceError) -> Self {
        PutError::Service(error)
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ServiceError::NotFound,
            StoreError::Unavailable(cause) => ServiceError::Unavailable(cause),
            StoreError::Other(cause) => ServiceError::Internal(cause),
        }
    }
}

/// The file service of a process.
#[derive(Clone)]
pub struct FileService {
    db: Rc<Database>,
    store: Rc<FileStore>,
    clock: Rc<dyn Clock>,
    max_bytes: u64,
}

impl FileService {
    pub fn new(db: Rc<Database>, store: Rc<FileStore>, clock: Rc<dyn Clock>, max_bytes: u64) -> Self {
        Self { db, store, clock, max_bytes }
    }

    /// `files.max_bytes`: the largest file accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn repo(&self) -> SqlFileRepo {
        SqlFileRepo::new(self.db.sql())
    }

    /// Stores `body` as the caller's file `name`, replacing any file of
    /// that name once the new one is complete. The bytes go to the store
    /// as they arrive, hashed on the way; past `files.max_bytes`, or when
    /// the body fails, what was written is removed and the previous
    /// version stays. Returns the metadata and whether the file is new.
    pub async fn put<S, E>(
        &self,
        by: Principal,
        name: FileName,
        content_type: String,
        mut body: S,
    ) -> Result<(FileMeta, bool), PutError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let key = new_key(by);
        let mut upload = self.store.upload(&key).await.map_err(ServiceError::from)?;
        let mut digest = Sha256::new();
        let mut size = 0u64;
        while let Some(piece) = body.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(error) => {
                    upload.abort().await;
                    return Err(PutError::Body(error));
                }
            };
            size += piece.len() as u64;
            if size > self.max_bytes {
                upload.abort().await;
                return Err(PutError::TooLarge { limit: self.max_bytes });
            }
            digest.update(&piece);
            if let Err(error) = upload.write(&piece).await {
                upload.abort().await;
                return Err(ServiceError::from(error).into());
            }
        }
        upload.finish().await.map_err(ServiceError::from)?;
        let sha256 = hex(&digest.finalize());
        let file = NewFile {
            owner: by.user,
            name: &name,
            key: &key,
            size,
            sha256: &sha256,
            content_type: &content_type,
        };
        match self.record(&file).await {
            Ok(done) => Ok(done),
            Err(error) => {
                // The object is complete but no row names it.
                self.forget(&key).await;
                Err(error.into())
            }
        }
    }

    /// Points the name at the new object: a new row, or the existing row
    /// swapped from the key it had (whose object is then removed).
    async fn record(&self, file: &NewFile<'_>) -> Result<(FileMeta, bool), ServiceError> {
        let repo = self.repo();
        for _ in 0..TX_ATTEMPTS {
            let now = self.clock.now();
            match repo.find(file.owner, file.name).await? {
                None => match repo.insert(file, now).await {
                    Ok(meta) => return Ok((meta, true)),
                    // A concurrent upload of the same name inserted first.
                    Err(RepoError::Conflict(_)) => continue,
                    Err(error) => return Err(error.into()),
                },
                Some(old) => {
                    if repo.replace(old.id, &old.key, file, now).await? {
                        self.forget(&old.key).await;
                        let meta = repo.find(file.owner, file.name).await?.ok_or(ServiceError::NotFound)?;
                        return Ok((meta, false));
                    }
                }
            }
        }
        Err(ServiceError::Contention("the file kept changing while it was being replaced".into()))
    }

    /// Removes an object no row names any more. A failure leaves an
    /// orphan in the store, never a row without its object: logged.
    async fn forget(&self, key: &str) {
        if let Err(error) = self.store.delete(key).await {
            tracing::warn!(%error, key, "an object no file refers to could not be removed");
        }
    }

    /// The caller's file `name`.
    pub async fn find(&self, by: Principal, name: &FileName) -> Result<FileMeta, ServiceError> {
        self.repo().find(by.user, name).await?.ok_or(ServiceError::NotFound)
    }

    /// The bytes of `file` (the `range` of them), as the store reads them.
    pub async fn read(
        &self,
        file: &FileMeta,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, ServiceError> {
        Ok(self.store.read(&file.key, range).await?)
    }

    /// Removes the caller's file `name`.
    pub async fn delete(&self, by: Principal, name: &FileName) -> Result<(), ServiceError> {
        let repo = self.repo();
        for _ in 0..TX_ATTEMPTS {
            let file = repo.find(by.user, name).await?.ok_or(ServiceError::NotFound)?;
            if repo.delete(file.id, &file.key).await? {
                self.forget(&file.key).await;
                return Ok(());
            }
        }
        Err(ServiceError::Contention("the file kept changing while it was being deleted".into()))
    }

    /// The caller's files, newest first: a page of at most `limit`, and the
    /// id to continue before when there are more.
    pub async fn list(
        &self,
        by: Principal,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<FileMeta>, Option<i64>), ServiceError> {
        let mut page = self.repo().list(by.user, before, limit + 1).await?;
        let more = page.len() as i64 > limit;
        page.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more { page.last().map(|f| f.id) } else { None };
        Ok((page, next))
    }
}

/// A key no other upload has: the owner, then 128 random bits.
fn new_key(by: Principal) -> String {
    let mut random = [0u8; 16];
    OsRng.fill_bytes(&mut random);
    format!("u{}/{}", by.user.0, hex(&random))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
