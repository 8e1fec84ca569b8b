//! Password hashing with argon2id, always on the worker's blocking pool: a
//! hash costs tens of milliseconds of CPU, which on the event loop would
//! stall every other request of the worker.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use drover_worker::BlockingPool;

use super::ServiceError;
use crate::domain::Password;

/// Hashes and checks passwords off the event loop.
#[derive(Clone)]
pub struct Passwords {
    pool: BlockingPool,
    /// A real hash of a random password, checked when the email is
    /// unknown, so that "no such user" costs the same time as "wrong
    /// password" and the answer time does not reveal which emails exist.
    decoy: String,
}

impl Passwords {
    pub async fn new(pool: BlockingPool) -> Result<Self, ServiceError> {
        let decoy = pool
            .run(|| hash(&format!("decoy-{:x}", std::process::id())))
            .await
            .map_err(|_| ServiceError::Busy)??;
        Ok(Self { pool, decoy })
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash(&self, password: &Password) -> Result<String, ServiceError> {
        let password = password.expose().to_owned();
        self.pool.run(move || hash(&password)).await.map_err(|_| ServiceError::Busy)?
    }

    /// Checks `password` against `stored`, or against the decoy when there is
    /// no stored hash (and then answers false).
    pub async fn verify(&self, password: &Password, stored: Option<String>) -> Result<bool, ServiceError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.clone());
        let password = password.expose().to_owned();
        let matches = self
            .pool
            .run(move || {
                let parsed = PasswordHash::new(&stored)
                    .map_err(|e| ServiceError::Internal(format!("stored hash unreadable: {e}")))?;
                Ok::<_, ServiceError>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await
            .map_err(|_| ServiceError::Busy)??;
        Ok(known && matches)
    }
}

/// argon2id with the crate's defaults (OWASP's recommended m=19 MiB, t=2,
/// p=1) and a random salt.
fn hash(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::Internal(format!("hashing failed: {e}")))
}
