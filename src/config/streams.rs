//! `[[streams]]`: one live stream's settings, the same schema in the TOML file and in
//! the admin API's JSON, and their checks. Imports nothing of the server or HTTP.

use serde::Deserialize;

use super::ConfigError;
use crate::http::admin::{MIN_TOKEN_BYTES, Secret};
use crate::http::auth::Policy;
use crate::pipeline::{RenditionCodec, RenditionSpec};

/// `[[streams]]`: one live stream (and the body of the admin API's stream requests).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Its path: `/{name}/index.m3u8`. Letters, digits, `-` and `_`.
    pub name: String,
    /// `testsrc`, a file path, or `rtsp://[user:password@]host[:port]/path`.
    pub source: String,
    /// `[[streams.renditions]]`. None: one rendition named `video`, passed through for an
    /// RTSP source, encoded with `[encoder]` at the source's size otherwise.
    #[serde(default)]
    pub renditions: Vec<RenditionSpec>,
    /// Who may watch it: `public`, `token` or `cdn-only`. None: `[auth] policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// With `source = "publish"`: the key an encoder publishes with
    /// (`rtmp://HOST/APP/KEY`), at least 16 bytes. Never written out.
    #[serde(default, skip_serializing)]
    pub publish_key: Option<Secret>,
    /// The same key as its SHA-256 in hex, for a configuration that keeps no key in
    /// the clear (`printf %s KEY | sha256sum`). Never written out.
    #[serde(default, skip_serializing)]
    pub publish_key_sha256: Option<String>,
    /// With `source = "publish"`: the passphrase SRT publishers encrypt with (10-79
    /// bytes, as SRT requires); with it, the stream is published over SRT too. Never
    /// written out.
    #[serde(default, skip_serializing)]
    pub srt_passphrase: Option<Secret>,
}

impl StreamSettings {
    /// One stream's settings from JSON (the admin API), checked as `[[streams]]` are;
    /// the error names the field as the JSON has it (`renditions[0].width`).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let mut reader = serde_json::Deserializer::from_slice(json);
        let stream: Self =
            serde_path_to_error::deserialize(&mut reader).map_err(|e| ConfigError::Field {
                field: super::field_path(e.path()),
                // No value of the body: it may be a source URL with its credentials.
                reason: super::hide_quoted(&e.into_inner().to_string()),
            })?;
        reader.end().map_err(|e| ConfigError::Field {
            field: String::new(),
            reason: e.to_string(),
        })?;
        validate_stream(&stream, &[])?;
        Ok(stream)
    }

    /// Whether `other` makes the same media (the same but for who may watch it): a
    /// reload that changes only the policy does not restart the stream.
    pub fn same_media(&self, other: &Self) -> bool {
        self.name == other.name
            && self.source == other.source
            && self.renditions == other.renditions
    }

    /// The hash of its publish key, when it has one (checked by validation: a hex
    /// string that does not parse is `None`).
    pub fn publish_key_hash(&self) -> Option<crate::ingest::push::KeyHash> {
        if let Some(key) = &self.publish_key {
            return Some(crate::ingest::push::hash_key(&key.0));
        }
        let hex = self.publish_key_sha256.as_deref()?;
        let mut hash = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(hash)
    }

    /// The settings as JSON, with the source's secrets hidden.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["source"] = crate::ingest::redact::redact(&self.source).into();
        value
    }
}

/// A name usable as a path segment.
fn is_path_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Paths of the server's own: no stream may be named so.
const RESERVED_NAMES: [&str; 8] = [
    "streams", "status", "hls.js", "admin", "metrics", "healthz", "readyz", "t",
];

/// Checks one `[[streams]]` entry against itself and the entries before it.
pub(super) fn validate_stream(
    stream: &StreamSettings,
    before: &[StreamSettings],
) -> Result<(), ConfigError> {
    let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
    let name = &stream.name;
    if !is_path_name(name) || RESERVED_NAMES.contains(&name.as_str()) {
        return invalid(
            "streams.name",
            format!(
                "{name:?} is not 1-64 letters, digits, '-' or '_' (nor one of {})",
                RESERVED_NAMES.join(", ")
            ),
        );
    }
    if before.iter().any(|s| &s.name == name) {
        return invalid("streams.name", format!("{name:?} is used twice"));
    }
    if stream.source.trim().is_empty() {
        return invalid("streams.source", format!("stream {name:?} has no source"));
    }
    let spec = crate::ingest::SourceSpec::parse(&stream.source);
    let encoded = spec.is_passthrough();
    if matches!(spec, crate::ingest::SourceSpec::Rtsp(_))
        && let Err(e) = url::Url::parse(&stream.source)
    {
        return invalid(
            "streams.source",
            format!(
                "stream {name:?}: {:?} is not a URL: {e}",
                crate::ingest::redact::redact(&stream.source)
            ),
        );
    }
    validate_publish_key(stream, before)?;
    for (i, r) in stream.renditions.iter().enumerate() {
        if !is_path_name(&r.name) || r.name == "index" {
            return invalid(
                "streams.renditions.name",
                format!(
                    "stream {name:?}: {:?} is not 1-64 letters, digits, '-' or '_' (nor `index`)",
                    r.name
                ),
            );
        }
        if stream.renditions[..i].iter().any(|o| o.name == r.name) {
            return invalid(
                "streams.renditions.name",
                format!("stream {name:?}: rendition {:?} is used twice", r.name),
            );
        }
        let copy = r.codec == RenditionCodec::Copy;
        if copy && !encoded {
            return invalid(
                "streams.renditions.codec",
                format!(
                    "stream {name:?} rendition {:?}: \"copy\" needs an encoded source \
                     (rtsp://); this one is decoded",
                    r.name
                ),
            );
        }
        if copy
            && (r.width.is_some()
                || r.height.is_some()
                || r.video_bitrate_kbps.is_some()
                || r.encoder.is_some())
        {
            return invalid(
                "streams.renditions.codec",
                format!(
                    "stream {name:?} rendition {:?}: \"copy\" takes no size, bit rate or encoder",
                    r.name
                ),
            );
        }
        match (r.width, r.height) {
            (None, None) => {}
            (Some(w), Some(h))
                if (16..=7680).contains(&w)
                    && (16..=4320).contains(&h)
                    && w.is_multiple_of(2)
                    && h.is_multiple_of(2) => {}
            _ => {
                return invalid(
                    "streams.renditions.width",
                    format!(
                        "stream {name:?} rendition {:?}: width and height go together, even, \
                         within 16..=7680 × 16..=4320",
                        r.name
                    ),
                );
            }
        }
        if let Some(kbps) = r.video_bitrate_kbps
            && !(100..=100_000).contains(&kbps)
        {
            return invalid(
                "streams.renditions.video_bitrate_kbps",
                format!(
                    "stream {name:?} rendition {:?}: {kbps} is not in 100..=100000",
                    r.name
                ),
            );
        }
    }
    Ok(())
}

/// A `publish` stream has one key, well formed and its own; others have none.
fn validate_publish_key(
    stream: &StreamSettings,
    before: &[StreamSettings],
) -> Result<(), ConfigError> {
    let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
    let name = &stream.name;
    let publish =
        crate::ingest::SourceSpec::parse(&stream.source) == crate::ingest::SourceSpec::Publish;
    let given = stream.publish_key.is_some() || stream.publish_key_sha256.is_some();
    if !publish {
        return if given || stream.srt_passphrase.is_some() {
            invalid(
                if given {
                    "streams.publish_key"
                } else {
                    "streams.srt_passphrase"
                },
                format!("stream {name:?}: publishing credentials are for source = \"publish\""),
            )
        } else {
            Ok(())
        };
    }
    if let Some(passphrase) = &stream.srt_passphrase
        && !(10..=79).contains(&passphrase.0.len())
    {
        return invalid(
            "streams.srt_passphrase",
            format!("stream {name:?}: an SRT passphrase is 10 to 79 bytes"),
        );
    }
    if !given && stream.srt_passphrase.is_some() {
        // Published over SRT only.
        return Ok(());
    }
    if stream.publish_key.is_some() && stream.publish_key_sha256.is_some() {
        return invalid(
            "streams.publish_key",
            format!("stream {name:?}: give publish_key or publish_key_sha256, not both"),
        );
    }
    if let Some(key) = &stream.publish_key
        && key.0.len() < MIN_TOKEN_BYTES
    {
        return invalid(
            "streams.publish_key",
            format!("stream {name:?}: the publish key is shorter than {MIN_TOKEN_BYTES} bytes"),
        );
    }
    let Some(hash) = stream.publish_key_hash() else {
        return if stream.publish_key_sha256.is_some() {
            invalid(
                "streams.publish_key_sha256",
                format!("stream {name:?}: not 64 hex digits"),
            )
        } else {
            invalid(
                "streams.publish_key",
                format!(
                    "stream {name:?}: source = \"publish\" needs a publish_key or an \
                     srt_passphrase"
                ),
            )
        };
    };
    if before.iter().any(|s| s.publish_key_hash() == Some(hash)) {
        return invalid(
            "streams.publish_key",
            format!("stream {name:?}: another stream has the same publish key"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn field_of(toml: &str) -> Option<String> {
        match Settings::from_toml(toml).and_then(|s| s.validate()) {
            Ok(()) => None,
            Err(ConfigError::Invalid { field, .. }) => Some(field.to_string()),
            Err(other) => Some(other.to_string()),
        }
    }

    #[test]
    fn an_srt_passphrase_is_10_to_79_bytes_and_enough_alone() {
        let stream = |passphrase: &str| {
            format!(
                "[[streams]]\nname = \"a\"\nsource = \"publish\"\nsrt_passphrase = \"{passphrase}\"\n"
            )
        };
        assert_eq!(field_of(&stream("ten-bytes!")), None);
        assert_eq!(
            field_of(&stream("nine-byte")).as_deref(),
            Some("streams.srt_passphrase")
        );
        assert_eq!(
            field_of(&stream(&"x".repeat(80))).as_deref(),
            Some("streams.srt_passphrase")
        );
        assert_eq!(
            field_of(
                "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\nsrt_passphrase = \"ten-bytes!\"\n"
            )
            .as_deref(),
            Some("streams.srt_passphrase")
        );
    }

    #[test]
    fn a_publish_stream_needs_one_key_of_its_own() {
        let stream =
            |extra: &str| format!("[[streams]]\nname = \"a\"\nsource = \"publish\"\n{extra}\n");
        assert_eq!(
            field_of(&stream("publish_key = \"0123456789abcdef\"")),
            None
        );
        assert_eq!(
            field_of(&stream("")).as_deref(),
            Some("streams.publish_key")
        );
        assert_eq!(
            field_of(&stream("publish_key = \"short\"")).as_deref(),
            Some("streams.publish_key")
        );
        assert_eq!(
            field_of(&stream("publish_key_sha256 = \"abc\"")).as_deref(),
            Some("streams.publish_key_sha256")
        );
        let plain = "0123456789abcdef";
        let hashed: String = crate::ingest::push::hash_key(plain)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let twice = format!(
            "{}[[streams]]\nname = \"b\"\nsource = \"publish\"\npublish_key_sha256 = \"{hashed}\"\n",
            stream(&format!("publish_key = \"{plain}\""))
        );
        assert_eq!(
            field_of(&twice).as_deref(),
            Some("streams.publish_key"),
            "the same key, once plain and once hashed"
        );
        assert_eq!(
            field_of(
                "[[streams]]\nname = \"cam\"\nsource = \"testsrc\"\npublish_key = \"0123456789abcdef\"\n"
            )
            .as_deref(),
            Some("streams.publish_key")
        );
    }
}
