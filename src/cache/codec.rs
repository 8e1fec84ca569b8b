//! How cached values are encoded: a storage shape with serde derives (the
//! domain types have none), written with postcard, a compact binary format.
//! Changing a shape means bumping its `KIND` version.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Cached;
use crate::domain::{Role, User, UserEmail, UserId, UserName};

#[derive(Serialize, Deserialize)]
struct StoredUser {
    id: i64,
    email: String,
    name: String,
    admin: bool,
    created_ms: u64,
    updated_ms: u64,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Cached for User {
    const KIND: &'static str = "user:v1";

    fn encode(&self) -> Vec<u8> {
        let stored = StoredUser {
            id: self.id.0,
            email: self.email.as_str().to_owned(),
            name: self.name.as_str().to_owned(),
            admin: self.role == Role::Admin,
            created_ms: millis(self.created_at),
            updated_ms: millis(self.updated_at),
        };
        // Plain strings and integers always encode.
        postcard::to_allocvec(&stored).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let stored: StoredUser = postcard::from_bytes(bytes).ok()?;
        Some(User {
            id: UserId(stored.id),
            email: UserEmail::parse(&stored.email).ok()?,
            name: UserName::parse(&stored.name).ok()?,
            role: if stored.admin { Role::Admin } else { Role::User },
            created_at: UNIX_EPOCH + Duration::from_millis(stored.created_ms),
            updated_at: UNIX_EPOCH + Duration::from_millis(stored.updated_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_round_trip_compactly() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let user = User {
            id: UserId(42),
            email: UserEmail::parse("ada@example.com").unwrap(),
            name: UserName::parse("Ada").unwrap(),
            role: Role::Admin,
            created_at: at,
            updated_at: at,
        };
        let bytes = user.encode();
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(User::decode(&bytes), Some(user));
        assert_eq!(User::decode(b"\xff\xff"), None);
    }
}
