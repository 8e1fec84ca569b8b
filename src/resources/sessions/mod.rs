//! Sessions: what makes an access token still good after it was signed,
//! and the refresh tokens that renew it.
//!
//! - A user's *standing* (role, token version, existence) is read from the
//!   user's row on every authenticated request, through the cache, and
//!   invalidated wherever the user changes. A token's signature says who
//!   it was issued to; the standing says whether that still counts: a
//!   deleted user's tokens, and every token issued before a password,
//!   email or role change, stop working at their next request.
//! - Refresh tokens are opaque (256 random bits), stored as their SHA-256,
//!   rotate on every use and belong to a family (one login). Presenting a
//!   rotated one again means it was copied: the whole family is revoked
//!   (RFC 9700, section 4.14.2).

pub mod repo;

use crate::cache::Cached;
use crate::domain::Role;

pub use repo::{RefreshRecord, SessionRepo, SqlSessionRepo};

/// What the user's row says about the tokens issued to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub token_version: i64,
}

impl Cached for Standing {
    const KIND: &'static str = "standing:v1";

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(9);
        bytes.push(u8::from(self.role == Role::Admin));
        bytes.extend_from_slice(&self.token_version.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&admin, version) = bytes.split_first()?;
        let role = match admin {
            0 => Role::User,
            1 => Role::Admin,
            _ => return None,
        };
        Some(Standing { role, token_version: i64::from_le_bytes(version.try_into().ok()?) })
    }
}

/// A fresh secret: 256 random bits as 64 hex digits (a refresh token), or
/// 128 bits as 32 (a family id).
pub fn random_hex(bytes: usize) -> String {
    use rand_core::{OsRng, RngCore};
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a refresh token is stored: its SHA-256, in hex. Unsalted on
/// purpose: the token is 256 random bits, so there is nothing to guess, and
/// the hash must be looked up by value.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standings_round_trip_and_refuse_other_bytes() {
        for standing in [
            Standing { role: Role::Admin, token_version: 7 },
            Standing { role: Role::User, token_version: 0 },
        ] {
            assert_eq!(Standing::decode(&standing.encode()), Some(standing));
        }
        assert_eq!(Standing::decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(Standing::decode(&[0, 1]), None);
    }

    #[test]
    fn secrets_are_fresh_and_hashes_fixed() {
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_hex(16), random_hex(16));
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
