//! Access tokens: JWTs signed with the key set's signing key and checked
//! against the whole set by `kid`, with the algorithm pinned, and `exp`,
//! `nbf`, `iat`, `iss` and `aud` required and checked. A token issued in
//! the future, or living longer than `auth.token_ttl`, is refused (a key
//! that leaked could otherwise mint tokens that never expire). Each token
//! carries a random `jti`, and the user's token version (`ver`): a token
//! whose version is behind the user's record was revoked (see
//! `resources::sessions`).

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use crate::domain::{Role, UserId};

/// Clock skew tolerated between servers when checking `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// Who a valid token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub role: Role,
}

/// What a token with a valid signature says: who it was issued to, and at
/// which of their token versions. Whether that still holds is the user
/// record's to say ([`crate::service::AuthService::authenticate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub principal: Principal,
    pub version: i64,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: String,
    pub expires_in: Duration,
}

/// Why a token was refused. Deliberately coarse: clients learn "invalid" or
/// "expired", logs get the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// A random id (128 bits, hex): tokens issued in the same second for
    /// the same user still differ, and a log can name one without showing
    /// it. Optional when checking: tokens issued before it existed lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// The user's token version at issue. Tokens issued before it existed
    /// lack it, and count as version 0.
    #[serde(default)]
    ver: i64,
}

/// 128 random bits as 32 hex digits.
fn random_id() -> String {
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tokens whose signature was verified, kept per worker: checking an Ed25519
/// signature costs tens of microseconds, more than the rest of a cached
/// read, and a client sends the same token on request after request.
const VERIFIED_CAPACITY: u64 = 4096;
/// How long a verified token is remembered (each use still checks its
/// `exp` and `nbf`).
const VERIFIED_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Verified {
    claimed: Claimed,
    nbf: u64,
    exp: u64,
}

/// Issues and checks tokens.
pub struct TokenService {
    keys: KeySet,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
    verified: RefCell<mini_moka::unsync::Cache<String, Verified>>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenService {
    pub fn new(keys: KeySet, issuer: &str, audience: &str, ttl: Duration) -> Self {
        // The algorithm is pinned: a token that names another one (including
        // "none") is refused before any key is tried.
        let mut validation = Validation::new(keys.algorithm);
        validation.algorithms = vec![keys.algorithm];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let verified = mini_moka::unsync::Cache::builder()
            .max_capacity(VERIFIED_CAPACITY)
            .time_to_live(VERIFIED_TTL)
            .build();
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            validation,
            verified: RefCell::new(verified),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.keys.algorithm
    }

    /// A token for `principal` at its token `version`, valid from now for
    /// the configured lifetime.
    pub fn issue(&self, principal: Principal, version: i64) -> Result<Token, TokenError> {
        let now = unix_now();
        let claims = Claims {
            sub: principal.user.to_string(),
            role: principal.role.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            jti: Some(random_id()),
            ver: version,
        };
        let mut header = Header::new(self.keys.algorithm);
        header.kid = Some(self.keys.signing_kid.clone());
        let access_token = jsonwebtoken::encode(&header, &claims, &self.keys.signing)
            .map_err(|e| TokenError::Invalid(format!("signing failed: {e}")))?;
        Ok(Token { access_token, expires_in: self.ttl })
    }

    /// Checks a token's signature and times; what it claims if it is valid
    /// now.
    pub fn verify(&self, token: &str) -> Result<Claimed, TokenError> {
        let now = unix_now();
        if let Some(seen) = self.verified.borrow_mut().get(&token.to_owned()) {
            // Same bytes, same keys: the signature and claims were checked
            // already. Only time can have changed the answer.
            if seen.nbf <= now + LEEWAY_SECS && now < seen.exp + LEEWAY_SECS {
                return Ok(seen.claimed);
            }
        }
        self.verify_signed(token)
    }

    fn verify_signed(&self, token: &str) -> Result<Claimed, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != self.keys.algorithm {
            return Err(TokenError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let key = self
            .keys
            .verifying
            .get(&kid)
            .ok_or_else(|| TokenError::Invalid(format!("unknown kid {kid:?}")))?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let claims = &data.claims;
        if claims.iat > unix_now() + LEEWAY_SECS {
            return Err(TokenError::Invalid("issued in the future".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > self.ttl.as_secs() + LEEWAY_SECS {
            return Err(TokenError::Invalid("lives longer than auth.token_ttl".into()));
        }
        let user = data
            .claims
            .sub
            .parse()
            .map(UserId)
            .map_err(|_| TokenError::Invalid("sub is not a user id".into()))?;
        let role =
            Role::parse(&data.claims.role).ok_or_else(|| TokenError::Invalid("unknown role".into()))?;
        let claimed = Claimed { principal: Principal { user, role }, version: data.claims.ver };
        let seen = Verified { claimed, nbf: data.claims.nbf, exp: data.claims.exp };
        self.verified.borrow_mut().insert(token.to_owned(), seen);
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jsonwebtoken::{DecodingKey, EncodingKey};

    use super::*;
    use crate::service::keys::KeySource;

    fn service() -> TokenService {
        let secret = b"a test secret that is at least 32 bytes long";
        let keys = KeySet {
            algorithm: Algorithm::HS256,
            signing_kid: "k".into(),
            signing: EncodingKey::from_secret(secret),
            verifying: HashMap::from([("k".to_owned(), DecodingKey::from_secret(secret))]),
            source: KeySource::Configured,
        };
        TokenService::new(keys, "drover", "drover", Duration::from_secs(60))
    }

    #[test]
    fn remembered_tokens_still_need_their_exact_bytes() {
        let tokens = service();
        let principal = Principal { user: UserId(7), role: Role::User };
        let token = tokens.issue(principal, 3).unwrap().access_token;
        let claimed = Claimed { principal, version: 3 };
        assert_eq!(tokens.verify(&token), Ok(claimed));
        assert!(tokens.verified.borrow_mut().contains_key(&token), "the verified token is remembered");
        assert_eq!(tokens.verify(&token), Ok(claimed), "second check, from memory");
        // A tampered signature is a different string: checked in full.
        let at = token.rfind('.').unwrap() + 5;
        let flipped = if token.as_bytes()[at] == b'A' { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert!(matches!(tokens.verify(&forged), Err(TokenError::Invalid(_))));
    }

    /// A token signed with the service's own key, with these claims.
    fn signed(claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k".into());
        let key = EncodingKey::from_secret(b"a test secret that is at least 32 bytes long");
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    fn claims(iat: u64, exp: u64) -> Claims {
        Claims {
            sub: "7".into(),
            role: "user".into(),
            iss: "drover".into(),
            aud: "drover".into(),
            iat,
            nbf: iat.min(unix_now()),
            exp,
            jti: None,
            ver: 0,
        }
    }

    #[test]
    fn tokens_from_the_future_or_living_too_long_are_refused_and_each_has_its_own_jti() {
        let tokens = service();
        let now = unix_now();
        // Valid, and without a jti (issued before jti existed).
        assert!(tokens.verify(&signed(&claims(now, now + 60))).is_ok());
        let future = tokens.verify(&signed(&claims(now + 600, now + 660)));
        assert_eq!(future, Err(TokenError::Invalid("issued in the future".into())));
        let long = tokens.verify(&signed(&claims(now, now + 86_400)));
        assert_eq!(long, Err(TokenError::Invalid("lives longer than auth.token_ttl".into())));

        let principal = Principal { user: UserId(7), role: Role::User };
        let jti = |token: &str| {
            let data = jsonwebtoken::dangerous::insecure_decode::<Claims>(token).unwrap();
            data.claims.jti.unwrap()
        };
        let (a, b) = (
            tokens.issue(principal, 0).unwrap().access_token,
            tokens.issue(principal, 0).unwrap().access_token,
        );
        assert_eq!(jti(&a).len(), 32);
        assert_ne!(jti(&a), jti(&b), "same user, same second, different tokens");
    }
}
