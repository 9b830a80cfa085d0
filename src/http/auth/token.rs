//! Signed playback tokens (`m1.` tokens): what they claim, how they are made
//! (`mirror token`) and checked. Sans-IO: text in, claims or a reason out; it imports
//! nothing of HTTP, streams or the configuration.
//!
//! A token is `m1.PAYLOAD.SIGNATURE`: the payload is base64url (no padding) of a small
//! JSON object (`k` key id, `s` stream name or pattern, `e` expiry in Unix seconds,
//! optionally `a` a client address or CIDR block); the signature is base64url of
//! HMAC-SHA256 over `m1.PAYLOAD` with the key the payload names. Every character is
//! one a path segment takes as it is, so a token is a path prefix
//! (`/t/TOKEN/STREAM/index.m3u8`) without escaping. Several keys may be valid at once
//! (rotation): the key id picks one.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;
use ring::hmac;

/// What a token's first part says: this format, version 1.
const VERSION: &str = "m1";

/// The longest token read; anything longer is refused before any work.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// The least secret a key may have: HMAC-SHA256 wants 32 bytes of entropy.
pub const MIN_SECRET_BYTES: usize = 32;

/// One signing key: its id (named in each token it signs) and its secret.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Key `id` with `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn new(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::BadId(id.to_string()));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret {
                id: id.to_string(),
                bytes: secret.len(),
            });
        }
        Ok(Self {
            id: id.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The id is empty, too long, or has spaces or control characters.
    #[error("key id {0:?} is not 1-64 visible ASCII characters")]
    BadId(String),
    /// The secret is too short to sign with.
    #[error("key {id:?}: its secret has {bytes} bytes, at least {MIN_SECRET_BYTES} are needed")]
    ShortSecret {
        /// The key.
        id: String,
        /// Its secret's length.
        bytes: usize,
    },
}

/// Which streams a token admits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StreamPattern(String);

impl StreamPattern {
    /// `name` exactly, or every stream whose name starts with what comes before a
    /// trailing `*` (`*` alone: every stream).
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_string())
    }

    /// Whether it admits stream `name`.
    pub fn admits(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

impl std::fmt::Display for StreamPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The key that signed it.
    #[serde(rename = "k")]
    pub key_id: String,
    /// The streams it admits.
    #[serde(rename = "s")]
    pub streams: StreamPattern,
    /// When it stops admitting new viewers, in Unix seconds.
    #[serde(rename = "e")]
    pub expires: u64,
    /// The client address (or CIDR block) it is bound to, if any.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpNet>,
    /// When it starts admitting viewers, in Unix seconds, if not at once (a JWT's `nbf`).
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
}

/// How far an issuer's clock may run ahead of Mirror's before a token that is not yet
/// valid is refused (jsonwebtoken's default leeway, and Kubernetes' and Envoy's).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token admits nobody, or not this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format (or longer than [`MAX_TOKEN_BYTES`]).
    #[error("the token is malformed")]
    Malformed,
    /// Signed with a key this server does not have.
    #[error("the token's key is unknown")]
    UnknownKey,
    /// The signature does not match: the token was altered, or is not ours.
    #[error("the token's signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Before its start (`nbf`), by more than [`CLOCK_SKEW_SECS`].
    #[error("the token is not valid yet")]
    NotYetValid,
    /// For other streams.
    #[error("the token is for another stream")]
    WrongStream,
    /// Bound to another client address.
    #[error("the token is for another client address")]
    WrongAddress,
}

impl TokenError {
    /// As `/metrics` and the refusal's body name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongStream => "token_wrong_stream",
            TokenError::WrongAddress => "token_wrong_address",
        }
    }
}

/// The token of `claims`, signed with `key` (whose id must be the claims' key id).
pub fn sign(claims: &Claims, key: &SigningKey) -> String {
    debug_assert_eq!(claims.key_id, key.id);
    // Serialising a struct of strings and numbers cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = hmac::sign(&key.key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The claims of `token` when one of `keys` signed it. Says nothing yet of expiry,
/// stream or address: [`Claims::admit`] does.
pub fn verify(token: &str, keys: &[SigningKey]) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let payload = signed
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or(TokenError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == claims.key_id)
        .ok_or(TokenError::UnknownKey)?;
    // Constant time: ring compares the tags without stopping at the first difference.
    hmac::verify(&key.key, signed.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;
    Ok(claims)
}

impl Claims {
    /// Whether these (verified) claims admit a request for `stream` from `remote` at
    /// `now` (Unix seconds), up to `grace` seconds past expiry (a viewer the caller
    /// admitted before it expired, still watching).
    pub fn admit(
        &self,
        stream: &str,
        remote: IpAddr,
        now: u64,
        grace: u64,
    ) -> Result<(), TokenError> {
        if !self.streams.admits(stream) {
            return Err(TokenError::WrongStream);
        }
        if let Some(block) = self.address
            && !block.contains(&canonical(remote))
        {
            return Err(TokenError::WrongAddress);
        }
        if now >= self.expires.saturating_add(grace) {
            return Err(TokenError::Expired);
        }
        if let Some(start) = self.not_before
            && now.saturating_add(CLOCK_SKEW_SECS) < start
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// An IPv4 client seen through an IPv6 socket as `::ffff:a.b.c.d` is `a.b.c.d`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> SigningKey {
        SigningKey::new(id, &[7u8; 32]).expect("key")
    }

    fn claims(key_id: &str, streams: &str, expires: u64, address: Option<&str>) -> Claims {
        Claims {
            key_id: key_id.into(),
            streams: StreamPattern::new(streams),
            expires,
            address: address.map(|a| a.parse().expect("CIDR")),
            not_before: None,
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_signed_token_reads_back_and_is_a_path_segment() {
        let made = claims("k1", "cam", 1_000, Some("10.0.0.0/8"));
        let token = sign(&made, &key("k1"));
        assert!(token.starts_with("m1."));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{token}"
        );
        assert_eq!(verify(&token, &[key("k1")]), Ok(made));
    }

    #[test]
    fn rotation_keeps_two_keys_valid() {
        let (old, new) = (
            SigningKey::new("2026-11", &[1u8; 32]).expect("key"),
            SigningKey::new("2026-12", &[2u8; 32]).expect("key"),
        );
        let by_old = sign(&claims("2026-11", "*", 10, None), &old);
        let by_new = sign(&claims("2026-12", "*", 10, None), &new);
        let both = [new.clone(), old.clone()];
        assert!(verify(&by_old, &both).is_ok());
        assert!(verify(&by_new, &both).is_ok());
        // The old key retired: its tokens are refused by name.
        assert_eq!(verify(&by_old, &[new]), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tampering_is_refused() {
        let token = sign(&claims("k1", "cam", 10, None), &key("k1"));
        // Another stream in the payload, the signature kept.
        let (_, signature) = token.rsplit_once('.').expect("signature");
        let forged_payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("k1", "*", 10, None)).expect("json"));
        let forged = format!("m1.{forged_payload}.{signature}");
        assert_eq!(verify(&forged, &[key("k1")]), Err(TokenError::BadSignature));
        // The right payload under another key's secret.
        let other = SigningKey::new("k1", &[9u8; 32]).expect("key");
        assert_eq!(verify(&token, &[other]), Err(TokenError::BadSignature));
        for bad in [
            "",
            "m1",
            "m1..",
            "m2.e30.AA",
            "m1.!!!.AA",
            &"m1.".repeat(400),
        ] {
            assert_eq!(
                verify(bad, &[key("k1")]),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_stream_and_address_are_checked() {
        let c = claims("k1", "cam-*", 100, Some("127.0.0.0/8"));
        assert_eq!(c.admit("cam-1", LOCAL, 99, 0), Ok(()));
        assert_eq!(c.admit("cam-1", LOCAL, 100, 0), Err(TokenError::Expired));
        assert_eq!(
            c.admit("cam-1", LOCAL, 160, 60),
            Err(TokenError::Expired),
            "the grace ends"
        );
        assert_eq!(
            c.admit("cam-1", LOCAL, 100, 60),
            Ok(()),
            "a viewer already watching"
        );
        assert_eq!(c.admit("other", LOCAL, 99, 0), Err(TokenError::WrongStream));
        let away: IpAddr = "192.0.2.1".parse().expect("address");
        assert_eq!(c.admit("cam-1", away, 99, 0), Err(TokenError::WrongAddress));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("address");
        assert_eq!(c.admit("cam-1", mapped, 99, 0), Ok(()));
        let later = Claims {
            not_before: Some(50 + CLOCK_SKEW_SECS),
            ..c.clone()
        };
        assert_eq!(
            later.admit("cam-1", LOCAL, 49, 0),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            later.admit("cam-1", LOCAL, 50, 0),
            Ok(()),
            "an issuer's clock a little ahead"
        );
        assert!(StreamPattern::new("*").admits("anything"));
        assert!(!StreamPattern::new("cam").admits("cam-1"));
    }

    #[test]
    fn short_secrets_and_bad_ids_are_refused() {
        assert!(matches!(
            SigningKey::new("k", &[0u8; 31]),
            Err(KeyError::ShortSecret { bytes: 31, .. })
        ));
        assert!(matches!(
            SigningKey::new("a b", &[0u8; 32]),
            Err(KeyError::BadId(_))
        ));
    }
}
