//! The JWT key set: which key signs, which keys verify, each with its `kid`.
//!
//! Keys come, in this order, from `auth.key` (inline, for the environment),
//! then `auth.key_files` (newest first; `credential:NAME` reads systemd's
//! `$CREDENTIALS_DIRECTORY/NAME`). The first key that can sign signs; all
//! verify, so a key is rotated by putting the new one first and keeping the
//! old one listed until its tokens have expired. With nothing configured, a
//! development key is generated once into the data directory.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand_core::{OsRng, RngCore};

use crate::config::AuthConfig;

/// HS256 secrets shorter than this are refused: the hash's own size.
const MIN_HS256_SECRET: usize = 32;

/// A key that cannot be used; names the configuration key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    /// The configuration key at fault (`auth.key_files`, `auth.key`).
    pub key: &'static str,
    pub message: String,
}

fn key_error(key: &'static str, message: impl Into<String>) -> KeyError {
    KeyError { key, message: message.into() }
}

/// Where the signing key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    /// Generated for development at this path.
    Development(PathBuf),
}

/// The loaded keys.
pub struct KeySet {
    pub algorithm: Algorithm,
    pub signing_kid: String,
    pub signing: EncodingKey,
    pub verifying: HashMap<String, DecodingKey>,
    pub source: KeySource,
}

impl KeySet {
    /// Loads the configured keys, or the development key in `data_dir`
    /// (generating it if needed).
    pub fn load(config: &AuthConfig, data_dir: &Path) -> Result<Self, KeyError> {
        let algorithm = match config.algorithm.as_str() {
            "EdDSA" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            other => return Err(key_error("auth.algorithm", format!("{other:?} is not supported"))),
        };
        let mut keys: Vec<(String, Loaded)> = Vec::new();
        if !config.key.is_empty() {
            keys.push((config.key_id.clone(), parse(algorithm, config.key.as_bytes(), "auth.key")?));
        }
        for entry in &config.key_files {
            let path = resolve(entry)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| key_error("auth.key_files", format!("cannot read {}: {e}", path.display())))?;
            let kid = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let loaded = parse(algorithm, &bytes, "auth.key_files")
                .map_err(|e| key_error("auth.key_files", format!("{}: {}", path.display(), e.message)))?;
            if keys.iter().any(|(k, _)| *k == kid) {
                return Err(key_error("auth.key_files", format!("two keys have the id {kid:?}")));
            }
            keys.push((kid, loaded));
        }
        let mut source = KeySource::Configured;
        if keys.is_empty() {
            let path = development_key(algorithm, data_dir)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| key_error("auth.key_files", format!("cannot read {}: {e}", path.display())))?;
            keys.push(("dev".into(), parse(algorithm, &bytes, "auth.key_files")?));
            source = KeySource::Development(path);
        }
        let (signing_kid, signing) = keys
            .iter()
            .find_map(|(kid, loaded)| loaded.signing.clone().map(|key| (kid.clone(), key)))
            .ok_or_else(|| key_error("auth.key_files", "no key can sign (only public keys are listed)"))?;
        let verifying = keys.into_iter().map(|(kid, loaded)| (kid, loaded.verifying)).collect();
        Ok(Self { algorithm, signing_kid, signing, verifying, source })
    }
}

struct Loaded {
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
}

fn parse(algorithm: Algorithm, bytes: &[u8], config_key: &'static str) -> Result<Loaded, KeyError> {
    match algorithm {
        Algorithm::HS256 => {
            let secret = trim_newline(bytes);
            if secret.len() < MIN_HS256_SECRET {
                return Err(key_error(
                    config_key,
                    format!("an HS256 secret needs at least {MIN_HS256_SECRET} bytes"),
                ));
            }
            Ok(Loaded {
                signing: Some(EncodingKey::from_secret(secret)),
                verifying: DecodingKey::from_secret(secret),
            })
        }
        Algorithm::EdDSA => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| key_error(config_key, "an EdDSA key must be PEM text"))?;
            if let Ok(signing) = SigningKey::from_pkcs8_pem(text) {
                let der = signing.to_pkcs8_der().map_err(|e| key_error(config_key, e.to_string()))?;
                return Ok(Loaded {
                    signing: Some(EncodingKey::from_ed_der(der.as_bytes())),
                    verifying: DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
                });
            }
            if let Ok(public) = VerifyingKey::from_public_key_pem(text) {
                return Ok(Loaded { signing: None, verifying: DecodingKey::from_ed_der(public.as_bytes()) });
            }
            Err(key_error(config_key, "not an Ed25519 PKCS#8 private key or public key in PEM"))
        }
        _ => Err(key_error("auth.algorithm", "unsupported algorithm")),
    }
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// `credential:NAME` → `$CREDENTIALS_DIRECTORY/NAME`; anything else is a path.
fn resolve(entry: &str) -> Result<PathBuf, KeyError> {
    match entry.strip_prefix("credential:") {
        Some(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                key_error(
                    "auth.key_files",
                    format!("{entry}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)"),
                )
            })?;
            Ok(Path::new(&dir).join(name))
        }
        None => Ok(PathBuf::from(entry)),
    }
}

/// The development key's path, generating the key if it does not exist.
/// Concurrent processes race safely: each writes a private temporary file
/// and links it into place; the first link wins and the others read it.
fn development_key(algorithm: Algorithm, data_dir: &Path) -> Result<PathBuf, KeyError> {
    let name = match algorithm {
        Algorithm::HS256 => "jwt-dev-hs256.secret",
        _ => "jwt-dev-eddsa.pem",
    };
    let path = data_dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    let io = |e: std::io::Error| {
        key_error("auth.key_files", format!("cannot create a development key in {}: {e}", data_dir.display()))
    };
    crate::private_files::create_dir(data_dir).map_err(io)?;
    let contents = match algorithm {
        Algorithm::HS256 => {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            secret.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()
        }
        _ => {
            let key = SigningKey::generate(&mut OsRng);
            let pem = key
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| key_error("auth.key_files", e.to_string()))?;
            pem.as_bytes().to_vec()
        }
    };
    let tmp = data_dir.join(format!(".{name}.{}", std::process::id()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    file.write_all(&contents).and_then(|()| file.sync_all()).map_err(io)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path),
        Err(e) => Err(io(e)),
    }
}
