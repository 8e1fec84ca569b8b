//! Password hashing with argon2id, always on the worker's blocking pool: a
//! hash costs tens of milliseconds of CPU, which on the event loop would
//! stall every other request of the worker.

use std::rc::Rc;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use drover_worker::BlockingPool;
use tokio::sync::OnceCell;

use super::ServiceError;
use crate::domain::Password;

/// Hashes and checks passwords off the event loop.
#[derive(Clone)]
pub struct Passwords {
    pool: BlockingPool,
    /// A real hash of a random password, checked when the email is
    /// unknown, so that "no such user" costs the same time as "wrong
    /// password" and the answer time does not reveal which emails exist.
    /// Made at the first login, not at start-up: hashing allocates argon2's
    /// 19 MiB, which would stay in an idle worker's RSS.
    decoy: Rc<OnceCell<String>>,
}

impl Passwords {
    pub fn new(pool: BlockingPool) -> Self {
        Self { pool, decoy: Rc::new(OnceCell::new()) }
    }

    async fn decoy(&self) -> Result<String, ServiceError> {
        let decoy = self
            .decoy
            .get_or_try_init(|| async {
                let mut random = [0u8; 16];
                OsRng.fill_bytes(&mut random);
                let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
                self.pool.run(move || hash(&secret)).await.map_err(|_| ServiceError::Busy)?
            })
            .await?;
        Ok(decoy.clone())
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
        let stored = match stored {
            Some(stored) => stored,
            None => self.decoy().await?,
        };
        let password = password.expose().to_owned();
        let matches = self
            .pool
            .run(move || {
                let parsed = PasswordHash::new(&stored)
                    .map_err(|e| ServiceError::Internal(format!("stored hash unreadable: {e}").into()))?;
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
        .map_err(|e| ServiceError::Internal(format!("hashing failed: {e}").into()))
}
