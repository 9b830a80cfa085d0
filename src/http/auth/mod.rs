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
//! `settings` reads `[auth]`; `path` finds the token in a path and hides it from logs.
//!
//! Imports the peer of HTTP; nothing of media.

pub mod jwt;
mod path;
mod settings;
pub mod token;

pub use path::{redacted_target, split_token};
pub use settings::{AuthSettings, AuthSettingsError, JwtKeySettings, KeySettings};

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use http::{HeaderName, Request, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::peer::Peer;
use jwt::JwtKey;
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

/// Who may read what names every stream (`/streams`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpsAccess {
    /// Anyone; `/streams` lists streams that are not public to an operator only.
    #[default]
    Open,
    /// An operator only: the admin API's token (as a bearer token) or the CDN's secret.
    Operator,
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
    /// `/streams` or `/metrics` under `[auth] ops = "operator"`, asked without the admin
    /// token or the CDN's secret.
    #[error("this needs the admin token: Authorization: Bearer TOKEN")]
    OperatorOnly,
}

impl Denial {
    /// As `/metrics` labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::TokenMissing => "token_missing",
            Denial::Token(error) => error.as_str(),
            Denial::CdnOnly => "cdn_only",
            Denial::CdnSecretRequired => "cdn_secret_required",
            Denial::OperatorOnly => "operator_only",
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
    ops: OpsAccess,
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
            ops: OpsAccess::Open,
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
            ops: settings.ops,
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
        let policy = self
            .retiring_policy(stream)
            .unwrap_or_else(|| self.policy(stream));
        self.check_under(policy, stream, token, request, peer)
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

    /// Whether a request for `/streams` or `/metrics` is answered; `operator`: it
    /// carries the admin token or the CDN's secret.
    pub fn check_ops(&self, operator: bool) -> Result<(), Denial> {
        match self.ops {
            OpsAccess::Operator if !operator => Err(Denial::OperatorOnly),
            _ => Ok(()),
        }
    }

    /// Whether `/streams` names stream `name` to a caller (`operator`: as for
    /// [`Access::check_ops`]): a stream that is not public only to an operator, so that
    /// its name is not a stranger's to learn.
    pub fn lists(&self, name: &str, operator: bool) -> bool {
        operator || self.policy(name) == Policy::Public
    }

    /// Whether `request` carries the CDN's secret (compared in constant time: both
    /// sides hashed first, then every byte looked at).
    pub fn carries_cdn_secret(&self, request: &Request<()>) -> bool {
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
        self.check_under(self.policy(stream), stream, token, request, peer)
    }

    /// [`check`](Self::check) under `policy`.
    fn check_under(
        &self,
        policy: Policy,
        stream: &str,
        token: Option<&str>,
        request: &Request<()>,
        peer: &Peer,
    ) -> Result<Admission, Denial> {
        self.check_listener(request, peer)?;
        if self.carries_cdn_secret(request) {
            return Ok(Admission::Cdn);
        }
        self.check_viewer(policy, stream, token, request, peer, true)
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
        let policy = self.policy(stream);
        let (admission, expires) =
            self.check_viewer(policy, stream, token, request, peer, false)?;
        let keep = match expires {
            Some(expires) => expires.saturating_sub(unix_now()).min(KEEP),
            None => KEEP,
        };
        Ok((admission, keep))
    }

    /// A viewer's request (no CDN secret): admitted by `policy` and its token, with the
    /// token's expiry. With `remember`, a viewer admitted before on `peer`'s connection
    /// is served for the grace past expiry.
    fn check_viewer(
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
