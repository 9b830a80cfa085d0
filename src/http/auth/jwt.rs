//! JWT playback tokens, for sites that already issue JWTs: HS256 with a shared secret,
//! ES256 or RS256 with a public key from a PEM file or a JWKS file. The header's `kid`
//! picks the key (two may be valid at once), and the key fixes the algorithm, so a
//! token cannot choose a weaker one. Claims: `exp` (Unix seconds) and `stream` (a name
//! or a prefix ending in `*`) are required, `ip` (an address or CIDR block) is
//! optional. They become the same [`Claims`] an `m1.` token has, checked the same way.
//!
//! Sans-IO but for reading key files when the keys are built; imports nothing of HTTP.

use std::path::Path;

use ipnet::IpNet;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::token::{Claims, MAX_TOKEN_BYTES, StreamPattern, TokenError};

/// One key JWTs are verified with.
#[derive(Clone)]
pub struct JwtKey {
    id: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The algorithms a key may be given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

impl JwtKey {
    /// Key `id` for HS256 with `secret` (at least 32 bytes).
    pub fn hs256(id: &str, secret: &[u8]) -> Result<Self, String> {
        if secret.len() < super::token::MIN_SECRET_BYTES {
            return Err(format!(
                "JWT key {id:?}: its secret has {} bytes, at least {} are needed",
                secret.len(),
                super::token::MIN_SECRET_BYTES
            ));
        }
        Ok(Self {
            id: id.to_string(),
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// Key `id` for `algorithm` (ES256 or RS256) with the public key in PEM `file`.
    pub fn from_pem_file(id: &str, algorithm: JwtAlgorithm, file: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(file).map_err(|e| format!("JWT key {id:?}: {}: {e}", file.display()))?;
        let (algorithm, key) = match algorithm {
            JwtAlgorithm::ES256 => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            JwtAlgorithm::RS256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
            JwtAlgorithm::HS256 => {
                return Err(format!(
                    "JWT key {id:?}: HS256 takes a `secret`, not a public key file"
                ));
            }
        };
        let key = key.map_err(|e| format!("JWT key {id:?}: {}: {e}", file.display()))?;
        Ok(Self {
            id: id.to_string(),
            algorithm,
            key,
        })
    }

    /// Every key of the JWKS `file` that has a `kid` and an algorithm Mirror takes
    /// (ES256, RS256).
    pub fn from_jwks_file(file: &Path) -> Result<Vec<Self>, String> {
        let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let set: JwkSet =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let Some(id) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("{}: key {id:?}: {e}", file.display()))?;
            keys.push(Self { id, algorithm, key });
        }
        Ok(keys)
    }

    /// Its id (the `kid` of the tokens it verifies).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A JWT's claims as Mirror reads them.
#[derive(serde::Deserialize)]
struct JwtClaims {
    exp: u64,
    stream: String,
    #[serde(default)]
    ip: Option<IpNet>,
    #[serde(default)]
    nbf: Option<u64>,
}

/// The claims of JWT `token` when one of `keys` signed it (its `kid` names the key).
/// Expiry, stream and address are checked afterwards, by [`Claims::admit`], as for any
/// token.
pub fn verify(token: &str, keys: &[JwtKey]) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    let kid = header.kid.ok_or(TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or(TokenError::UnknownKey)?;
    if header.alg != key.algorithm {
        // A token naming another algorithm than its key's: not one this key signed.
        return Err(TokenError::BadSignature);
    }
    let mut validation = Validation::new(key.algorithm);
    // Expiry and `nbf` are Mirror's to check (a viewer already watching goes on); audience and
    // issuer are the issuing site's business.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<JwtClaims>(token, &key.key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }
        })?;
    Ok(Claims {
        key_id: kid,
        streams: StreamPattern::new(&data.claims.stream),
        expires: data.claims.exp,
        address: data.claims.ip,
        not_before: data.claims.nbf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &[u8] = b"a-jwt-secret-of-at-least-32-bytes!!";

    fn hs256(kid: &str, claims: &serde_json::Value, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_secret(secret)).expect("signs")
    }

    #[test]
    fn an_hs256_token_reads_as_claims() {
        let keys = [JwtKey::hs256("site", SECRET).expect("key")];
        let token = hs256(
            "site",
            &serde_json::json!({"exp": 2000, "stream": "cam-*", "ip": "10.0.0.0/8", "sub": "u1"}),
            SECRET,
        );
        let claims = verify(&token, &keys).expect("verifies");
        assert_eq!(claims.expires, 2000);
        assert!(claims.streams.admits("cam-2"));
        assert_eq!(claims.address, Some("10.0.0.0/8".parse().expect("CIDR")));
        assert_eq!(claims.not_before, None);
        let later = hs256(
            "site",
            &serde_json::json!({"exp": 2000, "nbf": 1500, "stream": "cam"}),
            SECRET,
        );
        let claims = verify(&later, &keys).expect("verifies");
        assert_eq!(claims.not_before, Some(1500));
        assert_eq!(
            claims.admit("cam", "127.0.0.1".parse().expect("address"), 1000, 0),
            Err(TokenError::NotYetValid),
            "nbf is Mirror's to check, as exp is"
        );
    }

    #[test]
    fn a_wrong_key_algorithm_or_claim_is_refused() {
        let keys = [JwtKey::hs256("site", SECRET).expect("key")];
        let claims = serde_json::json!({"exp": 2000, "stream": "cam"});
        let other = hs256("site", &claims, b"another-secret-of-at-least-32-bytes");
        assert_eq!(verify(&other, &keys), Err(TokenError::BadSignature));
        let unknown = hs256("gone", &claims, SECRET);
        assert_eq!(verify(&unknown, &keys), Err(TokenError::UnknownKey));
        let no_stream = hs256("site", &serde_json::json!({"exp": 2000}), SECRET);
        assert_eq!(verify(&no_stream, &keys), Err(TokenError::Malformed));
        // `alg: none` (or any algorithm but the key's) is never taken.
        let mut header = Header::new(Algorithm::HS384);
        header.kid = Some("site".into());
        let hs384 = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("signs");
        assert_eq!(verify(&hs384, &keys), Err(TokenError::BadSignature));
        let unsigned = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","kid":"site"}"#),
            base64_url(br#"{"exp":2000,"stream":"cam"}"#)
        );
        assert!(verify(&unsigned, &keys).is_err());
        assert!(JwtKey::hs256("short", b"too short").is_err());
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// ES256 with the public key from a PEM file, and the same key from a JWKS file.
    #[test]
    fn es256_keys_come_from_pem_and_jwks_files() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair");
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("public.pem");
        std::fs::write(&pem, pair.public_key_pem()).expect("pem");
        // The public key's point, 0x04 || X || Y, as a JWK.
        let point = pair.public_key_raw();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256", "use": "sig",
            "x": base64_url(&point[1..33]), "y": base64_url(&point[33..65]),
        }]});
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks.to_string()).expect("jwks");

        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".into());
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("key");
        let claims = serde_json::json!({"exp": 3000, "stream": "lobby"});
        let token = encode(&header, &claims, &signing).expect("signs");

        let from_pem = [JwtKey::from_pem_file("ec-1", JwtAlgorithm::ES256, &pem).expect("key")];
        assert_eq!(verify(&token, &from_pem).expect("verifies").expires, 3000);
        let from_jwks = JwtKey::from_jwks_file(&jwks_file).expect("jwks");
        assert_eq!(from_jwks.len(), 1);
        assert!(
            verify(&token, &from_jwks)
                .expect("verifies")
                .streams
                .admits("lobby")
        );
        // An HS256 token naming the EC key's id: refused, not checked with the public key
        // as a secret.
        let forged = hs256("ec-1", &claims, pair.public_key_pem().as_bytes());
        assert_eq!(verify(&forged, &from_pem), Err(TokenError::BadSignature));
    }
}
