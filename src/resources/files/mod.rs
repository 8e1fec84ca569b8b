//! Files: a signed-in user's named uploads, streamed to an object store
//! (the local file system under the data directory, or S3) and back, never
//! held whole in memory. Metadata (size, SHA-256, media type, times) lives
//! in the database; the bytes live in the store under a key of their own,
//! new for every upload, so that a replacement is in place only once it is
//! complete and a failed one leaves the previous version untouched.

pub mod http;
mod repo;
mod service;
mod store;

use std::time::SystemTime;

use crate::domain::Invalid;
use crate::domain::UserId;

pub use service::{FileService, PutError};
pub use store::{FileStore, StoreError};

/// A file's name, as its owner chose it: 1 to 255 bytes of UTF-8 without
/// `/`, `\`, control or bidi-control characters, and not `.` or `..`.
/// Names are per user: two users may each have a `report.pdf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 255 {
            return Err(Invalid::new("name", "must be 1 to 255 bytes"));
        }
        if raw == "." || raw == ".." {
            return Err(Invalid::new("name", "must not be . or .."));
        }
        // Bidi controls would let a name display as something else
        // (`gpj.exe` shown as `exe.jpg`); controls break logs and headers.
        let refused = |c: char| {
            c == '/'
                || c == '\\'
                || c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        };
        if raw.chars().any(refused) {
            return Err(Invalid::new("name", "must not contain /, \\, control or bidi-control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub id: i64,
    pub owner: UserId,
    pub name: FileName,
    /// Where its bytes are in the store.
    pub key: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex: the file's entity tag.
    pub sha256: String,
    /// The media type the uploader sent (`application/octet-stream` when
    /// none).
    pub content_type: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::FileName;

    #[test]
    fn names_refuse_paths_controls_and_bidi_tricks() {
        for good in ["report.pdf", "a", "résumé 2026.txt", "..hidden", &"x".repeat(255)] {
            assert!(FileName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb", "a\u{0}b", "gpj\u{202e}exe", &"x".repeat(256)] {
            assert!(FileName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
