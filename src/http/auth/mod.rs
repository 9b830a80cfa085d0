//! Who may watch a stream: its policy (`public`, `token`, `cdn-only`), playback tokens
//! ([`token`]), and the shared secret a CDN's requests carry. The handler asks
//! [`Access::check`] before it serves any resource of a stream; the admin API's own
//! token is separate ([`super::admin`]).
//!
//! A token travels as a path prefix, `/t/TOKEN/STREAM/index.m3u8`: every URI in
//! Mirror's playlists is relative, so a player that knows nothing of tokens asks for
//! `/t/TOKEN/STREAM/video.m3u8` and `/t/TOKEN/STREAM/<part>` by itself, and the
//! playlist bodies are the same bytes for every viewer (a cache shares them). A token
//! in `Authorization: Bearer` is taken too (curl, a player configured with headers).
//! A token is Mirror's own signed `m1.` token ([`token`]) or a JWT ([`jwt`]).
//!
//! Expiry is checked when a connection first presents a token: a viewer admitted
//! before it expired keeps watching on that connection (players fetch parts for hours);
//! a new connection after expiry needs a new token.
//!
//! Imports the peer and the settings' secret type of HTTP; nothing of media.

pub mod jwt;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use http::{HeaderName, Request, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::admin::Secret;
use super::peer::Peer;
use jwt::{JwtAlgorithm, JwtKey};
use token::{SigningKey, TokenError};

/// The resource of a stream a cache tier's pre-flight asks for: never a media name.
pub const PREFLIGHT: &str = ".access";

/// The environment variable that may hold the CDN's shared secret.
pub const CDN_SECRET_ENV: &str = "MIRROR_CDN_SECRET";

/// The header a CDN's requests carry the shared secret in, unless configured.
pub const DEFAULT_CDN_HEADER: &str = "x-mirror-cdn-secret";

/// Who may watch a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Anyone who reaches the server.
    #[default]
    Public,
    /// A viewer with a valid playback token (or the CDN, with its secret).
    Token,
    /// The CDN only (with its secret): viewers are checked at its edge.
    CdnOnly,
}

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

/// Why a request for a stream is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// A `token` stream, and the request carries no token.
    #[error("this stream needs a playback token: /t/TOKEN/STREAM/…")]
    TokenMissing,
    /// The token does not admit this request.
    #[error("{0}")]
    Token(TokenError),
    /// A `cdn-only` stream, asked for without the CDN's secret.
    #[error("this stream is served to the CDN only")]
    CdnOnly,
    /// The plain-HTTP listener, asked without the CDN's secret.
    #[error("this listener serves the CDN only")]
    CdnSecretRequired,
}

impl Denial {
    /// As `/metrics` labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::TokenMissing => "token_missing",
            Denial::Token(error) => error.as_str(),
            Denial::CdnOnly => "cdn_only",
            Denial::CdnSecretRequired => "cdn_secret_required",
        }
    }
}

/// How a request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A public stream.
    Open,
    /// The CDN's secret.
    Cdn,
    /// A token in the path: the URL is the viewer's own.
    PathToken,
    /// A token in `Authorization`: the answer is for this viewer only (`private`).
    BearerToken,
}

/// The access rules in force, read per request.
pub struct Access {
    keys: Vec<SigningKey>,
    jwt_keys: Vec<JwtKey>,
    cdn_secret: Option<[u8; 32]>,
    cdn_header: HeaderName,
    default_policy: Policy,
    watching_grace: u64,
    /// Streams whose policy is not the default, by name.
    policies: RwLock<HashMap<String, Policy>>,
    /// The policy a stream taken out of service (deleted, replaced) had, by name, until
    /// its names are no longer served: they stay under it, whatever replaced it.
    retiring: RwLock<HashMap<String, (Policy, std::time::Instant)>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("keys", &self.keys)
            .field("jwt_keys", &self.jwt_keys)
            .field("cdn_secret", &self.cdn_secret.map(|_| "***"))
            .field("default_policy", &self.default_policy)
            .finish_non_exhaustive()
    }
}

impl Default for Access {
    /// Every stream public, no keys, no CDN secret.
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            jwt_keys: Vec::new(),
            cdn_secret: None,
            cdn_header: HeaderName::from_static(DEFAULT_CDN_HEADER),
            default_policy: Policy::Public,
            watching_grace: 0,
            policies: RwLock::default(),
            retiring: RwLock::default(),
        }
    }
}

impl Access {
    /// The rules `settings` describe.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthSettingsError> {
        settings.validate()?;
        Ok(Self {
            keys: settings.signing_keys()?,
            jwt_keys: settings.jwt_keys()?,
            cdn_secret: settings
                .resolve_cdn_secret()?
                .map(|s| Sha256::digest(s.0.as_bytes()).into()),
            cdn_header: HeaderName::from_bytes(settings.cdn_header.as_bytes())
                .unwrap_or(HeaderName::from_static(DEFAULT_CDN_HEADER)),
            default_policy: settings.policy,
            watching_grace: settings.watching_grace_secs,
            policies: RwLock::default(),
            retiring: RwLock::default(),
        })
    }

    /// Sets stream `name`'s policy (`None`: the default).
    pub fn set_policy(&self, name: &str, policy: Option<Policy>) {
        let mut policies = self
            .policies
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match policy {
            Some(policy) if policy != self.default_policy => {
                policies.insert(name.to_string(), policy);
            }
            _ => {
                policies.remove(name);
            }
        }
    }

    /// Stream `name` is taken out of service: its names, served for `retire_for` more,
    /// keep the policy it has now.
    pub fn retire(&self, name: &str, retire_for: std::time::Duration) {
        let policy = self.policy(name);
        let until = std::time::Instant::now() + retire_for;
        let mut retiring = self
            .retiring
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        retiring.retain(|_, (_, until)| *until > std::time::Instant::now());
        retiring.insert(name.to_string(), (policy, until));
    }

    /// The policy of the retiring stream named `name`, while its names are served.
    fn retiring_policy(&self, name: &str) -> Option<Policy> {
        self.retiring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(policy, _)| *policy)
    }

    /// Whether `peer` may have `request` for a resource of the *retiring* stream named
    /// `stream` (the handler serves one when the live stream has no such name): under
    /// the policy that stream had, not its replacement's.
    pub fn check_retiring(
        &self,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
    ) -> Result<Admission, Denial> {
        match self.retiring_policy(stream) {
            Some(policy) if policy != self.policy(stream) => {
                self.check_listener(request, peer)?;
                if self.carries_cdn_secret(request) {
                    return Ok(Admission::Cdn);
                }
                self.check_viewer_under(policy, stream, token, request, peer, true)
                    .map(|(admission, _)| admission)
            }
            _ => self.check(stream, token, request, peer),
        }
    }

    /// Stream `name`'s policy.
    pub fn policy(&self, name: &str) -> Policy {
        self.policies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
            .unwrap_or(self.default_policy)
    }

    /// Whether `request` carries the CDN's secret (compared in constant time: both
    /// sides hashed first, then every byte looked at).
    fn carries_cdn_secret(&self, request: &Request<()>) -> bool {
        let (Some(expected), Some(given)) =
            (self.cdn_secret, request.headers().get(&self.cdn_header))
        else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }

    /// Whether a request from `peer` without the CDN's secret may be served at all: on
    /// the plain-HTTP listener, with a secret configured, only health checks may.
    pub fn check_listener(&self, request: &Request<()>, peer: &Peer) -> Result<(), Denial> {
        if !peer.encrypted() && self.cdn_secret.is_some() && !self.carries_cdn_secret(request) {
            return Err(Denial::CdnSecretRequired);
        }
        Ok(())
    }

    /// Whether `peer` may have `request` for a resource of stream `stream`, and how it
    /// was admitted; `token` is the path's token, if the path had one.
    pub fn check(
        &self,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
    ) -> Result<Admission, Denial> {
        self.check_listener(request, peer)?;
        if self.carries_cdn_secret(request) {
            return Ok(Admission::Cdn);
        }
        self.check_viewer(stream, token, request, peer, true)
            .map(|(admission, _)| admission)
    }

    /// A cache tier's pre-flight (`/t/TOKEN/STREAM/.access`): whether a viewer with
    /// this token (or none) may watch `stream` (the CDN's secret admits a `cdn-only`
    /// stream, never a `token` one without its token), and how
    /// long the answer may be kept: at most a few seconds, never past the token's
    /// expiry. Expiry is strict: the tier's pooled connections are not one viewer's.
    pub fn preflight(
        &self,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
    ) -> Result<(Admission, u64), Denial> {
        const KEEP: u64 = 10;
        // A cdn-only stream asked for by the CDN itself: its viewers are the CDN's to
        // check. A token stream's pre-flight checks the token even then.
        if self.policy(stream) == Policy::CdnOnly && self.carries_cdn_secret(request) {
            return Ok((Admission::Cdn, KEEP));
        }
        let (admission, expires) = self.check_viewer(stream, token, request, peer, false)?;
        let keep = match expires {
            Some(expires) => expires.saturating_sub(unix_now()).min(KEEP),
            None => KEEP,
        };
        Ok((admission, keep))
    }

    /// A viewer's request (no CDN secret): admitted by the stream's policy and its
    /// token, with the token's expiry. With `remember`, a viewer admitted before on
    /// `peer`'s connection is served for the grace past expiry.
    fn check_viewer(
        &self,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
        remember: bool,
    ) -> Result<(Admission, Option<u64>), Denial> {
        self.check_viewer_under(self.policy(stream), stream, token, request, peer, remember)
    }

    /// [`check_viewer`](Self::check_viewer) under `policy`.
    fn check_viewer_under(
        &self,
        policy: Policy,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
        remember: bool,
    ) -> Result<(Admission, Option<u64>), Denial> {
        match policy {
            Policy::Public => Ok((Admission::Open, None)),
            Policy::CdnOnly => Err(Denial::CdnOnly),
            Policy::Token => {
                let (token, admission) = match token {
                    Some(token) => (token, Admission::PathToken),
                    None => (
                        bearer(request).ok_or(Denial::TokenMissing)?,
                        Admission::BearerToken,
                    ),
                };
                // `m1.` tokens are Mirror's own; anything else is read as a JWT.
                let claims = if token.starts_with("m1.") {
                    token::verify(token, &self.keys)
                } else {
                    jwt::verify(token, &self.jwt_keys)
                }
                .map_err(Denial::Token)?;
                let now = unix_now();
                // A viewer already watching this stream on this connection: served
                // for the grace past expiry.
                let watching = remember && peer.has_admitted(token, stream);
                let grace = if watching { self.watching_grace } else { 0 };
                claims
                    .admit(stream, peer.remote().ip(), now, grace)
                    .map_err(Denial::Token)?;
                if remember && !watching {
                    peer.admitted(token, stream);
                }
                Ok((admission, Some(claims.expires)))
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of an `Authorization: Bearer` header.
fn bearer(request: &Request<()>) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `path` and `query` as a log may show them: a token in the path (`/t/TOKEN/…`, with
/// any number of leading slashes) or in the query (`token=`, the player page's) is
/// `***`.
pub fn redacted_target(path: &str, query: Option<&str>) -> String {
    let trimmed = path.trim_start_matches('/');
    let path = match trimmed.strip_prefix("t/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, after)) => format!("/t/***/{after}"),
            None => "/t/***".to_string(),
        },
        None => path.to_string(),
    };
    match query {
        None => path,
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("token", _)) => "token=***".to_string(),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    }
}

/// Splits `/t/TOKEN/rest` into the token and `/rest`; other paths are returned whole.
pub fn split_token(path: &str) -> (Option<&str>, &str) {
    match path
        .strip_prefix("/t/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((token, rest)) if !token.is_empty() => {
            (Some(token), &path[path.len() - rest.len() - 1..])
        }
        _ => (None, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_token() {
        assert_eq!(
            redacted_target("/t/m1.a.b/cam/x.m4s", None),
            "/t/***/cam/x.m4s"
        );
        assert_eq!(redacted_target("//t/m1.a.b/cam/x", None), "/t/***/cam/x");
        assert_eq!(redacted_target("/t/m1.a.b", None), "/t/***");
        assert_eq!(
            redacted_target("/", Some("stream=cam&token=m1.a.b")),
            "/?stream=cam&token=***"
        );
        assert_eq!(
            redacted_target("/cam/video.m3u8", Some("_HLS_msn=3")),
            "/cam/video.m3u8?_HLS_msn=3"
        );
    }

    #[test]
    fn a_token_prefix_is_split_off() {
        assert_eq!(
            split_token("/t/m1.a.b/cam/index.m3u8"),
            (Some("m1.a.b"), "/cam/index.m3u8")
        );
        assert_eq!(split_token("/cam/index.m3u8"), (None, "/cam/index.m3u8"));
        assert_eq!(split_token("/t//cam/x"), (None, "/t//cam/x"));
        assert_eq!(split_token("/t/only"), (None, "/t/only"));
    }
}
