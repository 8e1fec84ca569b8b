//! Where file bytes go: an object store from the object_store crate, the
//! local file system under the data directory (zero set-up) or S3
//! (`files.store = "s3://bucket/prefix"`). Uploads are multipart, a part at
//! a time, so that what a worker holds of an upload is bounded by
//! [`PART_BYTES`] times [`PARTS_IN_FLIGHT`], whatever the file's size.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::chunked::ChunkedStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::repo::Cause;

/// The size of an upload's parts. S3 wants at least 5 MiB for every part
/// but the last.
pub const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload being written at once; the next waits.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Pieces a local file is read in: large enough that a download is not a
/// thread hand-off per 8 KiB (object_store's default), small enough that a
/// slow client holds little.
const READ_CHUNK: usize = 64 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such object")]
    NotFound,
    /// The store cannot be reached (S3 down, a network error): retry later.
    #[error("object store unavailable: {0}")]
    Unavailable(Cause),
    #[error("object store: {0}")]
    Other(Cause),
}

impl From<object_store::Error> for StoreError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound,
            // Transport and server errors of a remote store.
            object_store::Error::Generic { .. } => StoreError::Unavailable(Box::new(error)),
            other => StoreError::Other(Box::new(other)),
        }
    }
}

/// An object store, opened once per process.
pub struct FileStore {
    inner: Arc<dyn ObjectStore>,
    /// `local:/path` or `s3://bucket/prefix`, for logs.
    describe: String,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl FileStore {
    /// Opens `files.store`: empty for `<data_dir>/files`, `file:///path`
    /// for another directory, `s3://bucket[/prefix]` for S3 (region,
    /// endpoint and credentials from the `AWS_*` environment, or the
    /// credentials from systemd's `$CREDENTIALS_DIRECTORY`).
    pub fn open(spec: &str, data_dir: &Path) -> Result<Self, String> {
        if spec.is_empty() {
            return Self::local(&data_dir.join("files"));
        }
        if let Some(path) = spec.strip_prefix("file://") {
            return Self::local(Path::new(path));
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            return Self::s3(rest);
        }
        Err(format!("{spec:?} is not empty, file:///path or s3://bucket"))
    }

    fn local(dir: &Path) -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let local = LocalFileSystem::new_with_prefix(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self {
            inner: Arc::new(ChunkedStore::new(Arc::new(local), READ_CHUNK)),
            describe: format!("local:{}", dir.display()),
        })
    }

    fn s3(bucket_and_prefix: &str) -> Result<Self, String> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        if bucket.is_empty() {
            return Err("s3:// needs a bucket name".to_owned());
        }
        // reqwest is built without a crypto provider of its own (see
        // Cargo.toml); another caller may have installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let read = |name: &str| {
                std::fs::read_to_string(Path::new(&dir).join(name)).ok().map(|s| s.trim().to_owned())
            };
            if let (Some(id), Some(secret)) = (read("aws_access_key_id"), read("aws_secret_access_key")) {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = read("aws_session_token") {
                    builder = builder.with_token(token);
                }
            }
        }
        let s3 = builder.build().map_err(|e| e.to_string())?;
        let inner: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
        };
        Ok(Self { inner, describe: format!("s3://{bucket_and_prefix}") })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Starts writing a new object at `key`.
    pub async fn upload(&self, key: &str) -> Result<Upload, StoreError> {
        let upload = self.inner.put_multipart(&Key::from(key)).await?;
        Ok(Upload { writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)) })
    }

    /// The bytes of `key` (the `range` of them), as they are read.
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let result = self.inner.get_opts(&Key::from(key), options).await?;
        Ok(result.into_stream().map_err(StoreError::from).boxed())
    }

    /// Removes `key`; one already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// An object being written. Dropped before [`Upload::finish`] (the client
/// went away, the request was cancelled), it is aborted: the staging file
/// or S3's uploaded parts are removed, and nothing is left behind.
pub struct Upload {
    writer: Option<WriteMultipart>,
}

impl Upload {
    /// Adds `bytes`, once fewer than [`PARTS_IN_FLIGHT`] parts are being
    /// written: a fast client waits for a slow store.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(bytes);
        Ok(())
    }

    /// Writes what is left and makes the object visible.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        match self.writer.take() {
            Some(writer) => writer.finish().await.map(drop).map_err(StoreError::from),
            None => Ok(()),
        }
    }

    /// Gives up: what was written is removed.
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(error) = writer.abort().await {
                tracing::warn!(%error, "an abandoned upload could not be removed from the store");
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Dropped in the middle of a request: the abort needs I/O, so it
            // runs on its own. Outside a runtime there is nothing to run it
            // on; the store's own clean-up (S3 lifecycle rules) remains.
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(async move {
                    if let Err(error) = writer.abort().await {
                        tracing::warn!(%error, "an abandoned upload could not be removed from the store");
                    }
                });
            }
        }
    }
}
