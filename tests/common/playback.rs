//! Playback access for the tests: one signing key, tokens it signs, and streams with
//! a policy.

#![allow(dead_code, unreachable_pub)]

use std::time::SystemTime;

use mirror::config::StreamSettings;
use mirror::http::admin::Secret;
use mirror::http::auth::token::{Claims, SigningKey, StreamPattern, sign};
use mirror::http::auth::{KeySettings, Policy};

/// The secret of key `k1`.
pub const SECRET: &str = "playback-key-secret-0123456789abcdef";

/// Now, in Unix seconds (what token expiries count in).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `[[auth.keys]]` with key `k1`.
pub fn keys() -> Vec<KeySettings> {
    vec![KeySettings {
        id: "k1".into(),
        secret: Some(Secret(SECRET.into())),
        secret_file: None,
    }]
}

/// A token of key `k1` for `streams` until `expires`.
pub fn token(streams: &str, expires: u64) -> String {
    let key = SigningKey::new("k1", SECRET.as_bytes()).expect("key");
    let claims = Claims {
        key_id: "k1".into(),
        streams: StreamPattern::new(streams),
        expires,
        address: None,
        not_before: None,
    };
    sign(&claims, &key)
}

/// A test-pattern stream `name` under `policy`.
pub fn stream(name: &str, policy: Policy) -> StreamSettings {
    StreamSettings {
        name: name.into(),
        source: "testsrc".into(),
        renditions: Vec::new(),
        policy: Some(policy),
        publish_key: None,
        publish_key_sha256: None,
        srt_passphrase: None,
    }
}
