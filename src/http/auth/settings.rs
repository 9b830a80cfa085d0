//! `[auth]` as the configuration gives it: the default policy, the keys playback
//! tokens are signed and verified with (secrets inline or in files), the CDN's shared
//! secret; and their checks. Reads key files; imports nothing of requests.

use std::path::PathBuf;

use http::HeaderName;
use serde::Deserialize;

use super::jwt::{JwtAlgorithm, JwtKey};
use super::token::SigningKey;
use super::{CDN_SECRET_ENV, DEFAULT_CDN_HEADER, OpsAccess, Policy};
use crate::http::admin::Secret;

/// One `[[auth.keys]]` entry: a key playback tokens are signed with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Its id, named in every token it signs (`2026-12`).
    pub id: String,
    /// Its secret, at least 32 bytes.
    pub secret: Option<Secret>,
    /// A file holding the secret (its first line), for secrets mounted as files.
    pub secret_file: Option<PathBuf>,
}

/// One `[[auth.jwt_keys]]` entry: a key JWT playback tokens are verified with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySettings {
    /// The `kid` of the tokens it verifies.
    pub id: String,
    /// `HS256`, `ES256` or `RS256`: the only one its tokens may use.
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret, at least 32 bytes.
    pub secret: Option<Secret>,
    /// HS256: a file holding the secret (its first line).
    pub secret_file: Option<PathBuf>,
    /// ES256, RS256: the PEM file of the public key.
    pub public_key_file: Option<PathBuf>,
}

/// `[auth]`: who may watch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The policy of a stream that names none. Default `public`.
    pub policy: Policy,
    /// Keys playback tokens are signed with; the first signs what `mirror token` makes,
    /// all are accepted (rotation: add the new key first, retire the old one once its
    /// tokens have expired).
    pub keys: Vec<KeySettings>,
    /// The secret a CDN's requests carry (or the environment's `MIRROR_CDN_SECRET`);
    /// with it, they are served without viewer tokens, and the plain-HTTP listener
    /// serves nothing to a request without it. At least 16 bytes. Default none.
    pub cdn_secret: Option<Secret>,
    /// The header that carries it. Default `x-mirror-cdn-secret`.
    pub cdn_header: String,
    /// How long past its token's expiry a viewer already watching (on the connection
    /// that presented it in time) keeps being served, in seconds. Default 14400 (4 h).
    pub watching_grace_secs: u64,
    /// Keys JWT playback tokens are verified with, by `kid`.
    pub jwt_keys: Vec<JwtKeySettings>,
    /// A JWKS file of more such keys (ES256 and RS256 ones with a `kid`), read at
    /// start-up.
    pub jwks_file: Option<PathBuf>,
    /// Who may read `/streams` and `/metrics`: `open` (the default: anyone, though
    /// `/streams` lists a stream that is not public only to an operator) or `operator`
    /// (the admin token as a bearer token, or the CDN's secret).
    pub ops: OpsAccess,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            policy: Policy::Public,
            keys: Vec::new(),
            cdn_secret: None,
            cdn_header: DEFAULT_CDN_HEADER.to_string(),
            watching_grace_secs: 4 * 3600,
            jwt_keys: Vec::new(),
            jwks_file: None,
            ops: OpsAccess::Open,
        }
    }
}

/// A secret given inline or in a file (its first line); exactly one of the two.
fn secret_of(inline: Option<&Secret>, file: Option<&PathBuf>) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(secret), None) => Ok(Some(secret.0.clone())),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(text.lines().next().unwrap_or_default().trim().to_string()))
            .map_err(|e| format!("{}: {e}", path.display())),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err("give one of `secret` and `secret_file`, not both".into()),
    }
}

/// Why `[auth]` cannot be used: the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct AuthSettingsError {
    /// Dotted path of the field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl AuthSettings {
    /// The signing keys, their secrets read from files where so configured.
    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, AuthSettingsError> {
        let invalid = |reason: String| AuthSettingsError {
            field: "auth.keys",
            reason,
        };
        let mut keys: Vec<SigningKey> = Vec::with_capacity(self.keys.len());
        for entry in &self.keys {
            let secret = secret_of(entry.secret.as_ref(), entry.secret_file.as_ref())
                .map_err(|e| invalid(format!("key {:?}: {e}", entry.id)))?
                .ok_or_else(|| invalid(format!("key {:?} has no secret", entry.id)))?;
            let key = SigningKey::new(&entry.id, secret.as_bytes())
                .map_err(|e| invalid(e.to_string()))?;
            if keys.iter().any(|k| k.id() == key.id()) {
                return Err(invalid(format!("key id {:?} is used twice", entry.id)));
            }
            keys.push(key);
        }
        Ok(keys)
    }

    /// The JWT keys: `jwt_keys`, then the JWKS file's.
    pub fn jwt_keys(&self) -> Result<Vec<JwtKey>, AuthSettingsError> {
        let mut keys = Vec::new();
        for entry in &self.jwt_keys {
            let invalid = |reason: String| AuthSettingsError {
                field: "auth.jwt_keys",
                reason: format!("key {:?}: {reason}", entry.id),
            };
            let secret =
                secret_of(entry.secret.as_ref(), entry.secret_file.as_ref()).map_err(invalid)?;
            let key = match (entry.algorithm, secret, &entry.public_key_file) {
                (JwtAlgorithm::HS256, Some(secret), None) => {
                    JwtKey::hs256(&entry.id, secret.as_bytes())
                }
                (JwtAlgorithm::ES256 | JwtAlgorithm::RS256, None, Some(file)) => {
                    JwtKey::from_pem_file(&entry.id, entry.algorithm, file)
                }
                _ => Err("HS256 takes a secret; ES256 and RS256 a public_key_file".into()),
            }
            .map_err(invalid)?;
            keys.push(key);
        }
        if let Some(file) = &self.jwks_file {
            keys.extend(
                JwtKey::from_jwks_file(file).map_err(|reason| AuthSettingsError {
                    field: "auth.jwks_file",
                    reason,
                })?,
            );
        }
        Ok(keys)
    }

    /// The CDN's shared secret: the setting, else the environment's.
    pub fn resolve_cdn_secret(&self) -> Result<Option<Secret>, AuthSettingsError> {
        let secret = self.cdn_secret.clone().or_else(|| {
            std::env::var(CDN_SECRET_ENV)
                .ok()
                .filter(|s| !s.is_empty())
                .map(Secret)
        });
        match secret {
            Some(secret) if secret.0.len() < 16 => Err(AuthSettingsError {
                field: "auth.cdn_secret",
                reason: "shorter than 16 bytes".into(),
            }),
            other => Ok(other),
        }
    }

    /// Checks every field; the first bad one is returned with its name.
    pub fn validate(&self) -> Result<(), AuthSettingsError> {
        HeaderName::from_bytes(self.cdn_header.as_bytes()).map_err(|_| AuthSettingsError {
            field: "auth.cdn_header",
            reason: format!("{:?} is not a header name", self.cdn_header),
        })?;
        self.signing_keys()?;
        self.jwt_keys()?;
        self.resolve_cdn_secret()?;
        Ok(())
    }
}
