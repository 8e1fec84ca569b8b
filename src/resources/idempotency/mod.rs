//! Idempotency keys (the `Idempotency-Key` request header, IETF httpapi
//! draft): a client that retries a request with the same key gets the first
//! request's answer instead of a second effect.
//!
//! A key is claimed (one row per user and key) before the work starts; a
//! second request with the key finds the claim: still running (`409
//! request_in_progress`), for another request (`422
//! idempotency_key_reused`), or finished (its stored status and body are
//! replayed). The outcome is stored in the same transaction as the work's
//! effect ([`complete`] inside it), so an order placed is never without its
//! stored answer. Outcomes that are worth retrying (5xx) release the key.
//! Keys live 24 hours; a claim whose request died (a worker killed
//! mid-request) is taken over after [`STALE_CLAIM`].

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::domain::{Invalid, UserId};
use crate::params;
use crate::repo::sql::{self, Sql};
use crate::repo::RepoError;

/// How long a key is remembered.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A claim without an outcome for this long belongs to a request that died.
pub const STALE_CLAIM: Duration = Duration::from_secs(60);

/// A client's key: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new("idempotency-key", "must be 1-255 visible ASCII characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a request was, reduced to a digest: the same key must come with the
/// same request. Built from the parsed request, so formatting does not
/// matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(request: &str) -> Self {
        let digest = Sha256::digest(request.as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// A finished request's answer, as stored: no HTTP types, only what is
/// needed to send it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// Proof of a claim: the instant it was taken. Storing the outcome checks
/// it, so a request whose claim was taken over (it looked dead) cannot
/// store its outcome, and its transaction fails instead of placing a second
/// effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(i64);

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now: do the work.
    Claimed(ClaimToken),
    /// The first request with this key finished: answer what it answered.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Reused,
}

/// Claims `key` for `user`'s request.
pub async fn claim(
    db: &dyn Sql,
    user: UserId,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    now: SystemTime,
) -> Result<Claim, RepoError> {
    let insert = sql::insert_ignore(
        db.backend(),
        "INSERT INTO idempotency_keys (user_id, idem_key, fingerprint, status_code, body, created_at, locked_at) \
         VALUES (?, ?, ?, NULL, NULL, ?, ?)",
    );
    // Twice at most: once more after removing an expired key.
    for _ in 0..2 {
        if db.execute(&insert, params![user.0, key.as_str(), fingerprint.0.as_str(), now, now]).await? == 1 {
            return Ok(Claim::Claimed(ClaimToken(sql::millis(now))));
        }
        let row = db
            .query_opt(
                "SELECT fingerprint, status_code, body, created_at, locked_at FROM idempotency_keys \
                 WHERE user_id = ? AND idem_key = ?",
                params![user.0, key.as_str()],
            )
            .await?;
        let Some(row) = row else { continue };
        let created_at = row.time(3)?;
        if created_at + KEY_LIFETIME <= now {
            db.execute(
                "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND created_at = ?",
                params![user.0, key.as_str(), created_at],
            )
            .await?;
            continue;
        }
        if row.text(0)? != fingerprint.0 {
            return Ok(Claim::Reused);
        }
        if let Some(status) = row.opt_int(1)? {
            let status = u16::try_from(status).map_err(|e| RepoError::Other(e.into()))?;
            return Ok(Claim::Replay(StoredResponse { status, body: row.opt_text(2)?.unwrap_or_default() }));
        }
        let locked_at = row.time(4)?;
        // Taken over only with a later token: the old one stops working.
        if locked_at + STALE_CLAIM <= now && sql::millis(now) > sql::millis(locked_at) {
            // Taken over only if no one else took it first.
            let taken = db
                .execute(
                    "UPDATE idempotency_keys SET locked_at = ? \
                     WHERE user_id = ? AND idem_key = ? AND locked_at = ? AND status_code IS NULL",
                    params![now, user.0, key.as_str(), locked_at],
                )
                .await?;
            if taken == 1 {
                return Ok(Claim::Claimed(ClaimToken(sql::millis(now))));
            }
        }
        return Ok(Claim::InProgress);
    }
    Ok(Claim::InProgress)
}

/// Stores the outcome of the claimed request (inside the transaction of
/// its effect, where there is one). `false` if the claim is no longer this
/// request's (it was taken over): the caller must not keep its effect.
pub async fn complete(
    db: &dyn Sql,
    user: UserId,
    key: &IdempotencyKey,
    token: ClaimToken,
    response: &StoredResponse,
) -> Result<bool, RepoError> {
    let changed = db
        .execute(
            "UPDATE idempotency_keys SET status_code = ?, body = ? \
             WHERE user_id = ? AND idem_key = ? AND status_code IS NULL AND locked_at = ?",
            params![i64::from(response.status), response.body.as_str(), user.0, key.as_str(), token.0],
        )
        .await?;
    Ok(changed == 1)
}

/// Gives up a claim without an outcome, so that a retry runs afresh.
pub async fn release(
    db: &dyn Sql,
    user: UserId,
    key: &IdempotencyKey,
    token: ClaimToken,
) -> Result<(), RepoError> {
    db.execute(
        "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND status_code IS NULL AND locked_at = ?",
        params![user.0, key.as_str(), token.0],
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_and_fingerprints_are_stable() {
        assert!(IdempotencyKey::parse("order-2026-12-03-0001").is_ok());
        for bad in ["", "with space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Fingerprint::of("a"), Fingerprint::of("a"));
        assert_ne!(Fingerprint::of("a"), Fingerprint::of("b"));
        assert_eq!(Fingerprint::of("a").0.len(), 64);
    }
}

/// The keys of one store, for the layers above (the HTTP layer claims a key
/// before it calls a service, and settles it after).
#[derive(Clone)]
pub struct IdempotencyService {
    db: std::rc::Rc<crate::repo::Database>,
    clock: std::rc::Rc<dyn crate::domain::time::Clock>,
}

impl IdempotencyService {
    pub fn new(
        db: std::rc::Rc<crate::repo::Database>,
        clock: std::rc::Rc<dyn crate::domain::time::Clock>,
    ) -> Self {
        Self { db, clock }
    }

    pub async fn claim(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Claim, crate::service::ServiceError> {
        use crate::repo::Repos;
        Ok(claim(&*self.db.sql(), user, key, fingerprint, self.clock.now()).await?)
    }

    /// Stores the outcome of a request that failed in a way a retry would
    /// repeat (4xx), or releases the key for one that a retry may fix (5xx).
    pub async fn settle(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        token: ClaimToken,
        response: &StoredResponse,
    ) -> Result<(), crate::service::ServiceError> {
        use crate::repo::Repos;
        let sql = self.db.sql();
        if response.status >= 500 {
            release(&*sql, user, key, token).await?;
        } else {
            // A claim taken over meanwhile keeps the other request's outcome.
            complete(&*sql, user, key, token, response).await?;
        }
        Ok(())
    }
}
