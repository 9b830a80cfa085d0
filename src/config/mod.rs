//! Settings: a TOML file, overridden by command-line flags, validated into typed values
//! at start-up and at each reload. A bad value stops start-up (or a reload) with the
//! field named; `streams` holds `[[streams]]`, shared with the admin API.
//!
//! Every field has a default, so `mirror` runs with no file at all. Each field's doc says
//! its default and what it does to latency.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cmaf::CmafOptions;
use crate::http::limits::{InvalidLimit, Limits};
use crate::ingest::SourceOptions;
use crate::pipeline::EncoderOptions;
use crate::stream::StreamOptions;

mod streams;

pub use streams::StreamSettings;
use streams::validate_stream;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("config file {path}: {}{message}", at_field(.field))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field the parser stopped at (`source.width`); empty when
        /// the text itself is not TOML.
        field: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field of a JSON body (the admin API) is missing, of the wrong type or unknown.
    #[error("invalid `{field}`: {reason}")]
    Field {
        /// Its path in the JSON (`renditions[0].width`); empty for the body as a whole.
        field: String,
        /// The parser's message.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, as written in the file.
        field: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
}

/// A field's path as serde_path_to_error writes it (`streams[1].source`); empty for the
/// document as a whole.
pub(crate) fn field_path(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." { String::new() } else { path }
}

/// The TOML parser's message with its line and column, but not the line itself nor any
/// quoted value: the line may be `password = …` or a source URL with credentials in a
/// misspelt key, and the message goes to logs and to the admin API's answer.
fn parse_message(error: &toml::de::Error, text: &str) -> String {
    let message = hide_quoted(error.message());
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}

/// `text` with whatever stands between double quotes replaced by `***`.
fn hide_quoted(text: &str) -> String {
    let mut hidden = String::with_capacity(text.len());
    for (i, piece) in text.split('"').enumerate() {
        if i > 0 {
            hidden.push('"');
        }
        hidden.push_str(if i % 2 == 1 { "***" } else { piece });
    }
    hidden
}

/// "invalid `field`: " before a parser's message, when it names a field.
fn at_field(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("invalid `{field}`: ")
    }
}

/// All settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[source]`: where the pictures and sound come from.
    pub source: SourceOptions,
    /// `[encoder]`: how they are encoded.
    pub encoder: EncoderOptions,
    /// `[cmaf]`: how the encoded stream is cut into parts and segments.
    pub cmaf: CmafOptions,
    /// `[server]`: listeners, TLS, the store.
    pub server: ServerSettings,
    /// `[limits]`: what one client may hold and how long the server waits for it.
    pub limits: Limits,
    /// `[log]`: the log's format and the access log's sampling.
    pub log: crate::http::access::LogSettings,
    /// `[admin]`: the admin API (off without a token).
    pub admin: crate::http::admin::AdminSettings,
    /// `[auth]`: who may watch: the default policy, playback token keys, the CDN's
    /// shared secret.
    pub auth: crate::http::auth::AuthSettings,
    /// `[push]`: where encoders push to (RTMP).
    pub push: crate::ingest::push::PushSettings,
    /// `[[streams]]`: the streams to serve, each with its source and renditions. None:
    /// one stream from the command line (`--name`, `--source`).
    pub streams: Vec<StreamSettings>,
}

/// `[server]`: what `mirror serve` listens on and how much it holds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of both listeners: HTTP/3 on UDP and HTTP/1.1 + HTTP/2 on TCP, same port.
    /// Default `[::]:4443` (IPv6 and IPv4).
    pub listen: std::net::SocketAddr,
    /// Plain HTTP/1.1 (no TLS) on this address too, for a cache tier in front on a
    /// trusted network (Varnish speaks no TLS to its backends). Default none. Never
    /// expose it to viewers: it carries no Alt-Svc and no encryption.
    pub http_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain. Default none: a self-signed certificate for localhost,
    /// 127.0.0.1 and ::1 is generated into `certs_dir`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Where the development certificate lives. Default `certs`.
    pub certs_dir: PathBuf,
    /// On SIGTERM or Ctrl-C, responses in flight may finish for this many milliseconds
    /// before the server exits (no new connections, GOAWAY, held requests answered 503
    /// at once). Default 10000.
    pub shutdown_grace_ms: u64,
    /// Byte budget of the media store. Default 512 MiB, shared equally by the streams:
    /// each has its own part, so one stream's media never evicts another's.
    pub store_bytes: u64,
    /// Complete segments each media playlist lists. Default 12: twice CAN-SKIP-UNTIL, so
    /// delta updates skip half of it. No effect on latency.
    pub window_segments: usize,
    /// hls.js for the player page, read from this file at start-up. Default: none, the
    /// copy built into the binary (from `node_modules`, which the set-up installs from
    /// npm), so the page plays whatever the working directory.
    pub hls_js: Option<PathBuf>,
    /// Reload the config file when it changes (looked at every 2 s), as SIGHUP does: an
    /// invalid file is refused and logged, and the running config stays. Default true.
    pub watch_config: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 4443)),
            http_listen: None,
            cert: None,
            key: None,
            certs_dir: PathBuf::from("certs"),
            shutdown_grace_ms: 10_000,
            store_bytes: 512 << 20,
            window_segments: 12,
            hls_js: None,
            watch_config: true,
        }
    }
}

/// What the command line sets over the config file; kept, so that a reload applies it
/// again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--cert` and `--key`.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl Overrides {
    /// Sets these over `settings`.
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(listen) = self.listen {
            settings.server.listen = listen;
        }
        if let Some((cert, key)) = &self.cert_and_key {
            settings.server.cert = Some(cert.clone());
            settings.server.key = Some(key.clone());
        }
    }
}

impl Settings {
    /// The settings in force: `path` (none: the defaults) with `overrides` over it,
    /// validated.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut settings = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        overrides.apply(&mut settings);
        settings.validate()?;
        Ok(settings)
    }

    /// Whether `other` makes streams differently (the sections every stream is made
    /// with): every stream restarts on a reload then.
    pub fn stream_options_differ(&self, other: &Self) -> bool {
        self.source != other.source
            || self.encoder != other.encoder
            || self.cmaf != other.cmaf
            || self.server.window_segments != other.server.window_segments
    }

    /// Reads a TOML file (unknown fields are refused, so a typo is not silently ignored).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { field, message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                field,
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text; an error names the field it stopped at, and where.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let field = field_path(e.path());
            ConfigError::Parse {
                path: PathBuf::from("<text>"),
                field,
                message: parse_message(&e.into_inner(), text),
            }
        })
    }

    /// Checks every value; the first bad one is returned with its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.source;
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if !(16..=7680).contains(&s.width) || !s.width.is_multiple_of(2) {
            return invalid(
                "source.width",
                format!("{} is not an even number in 16..=7680", s.width),
            );
        }
        if !(16..=4320).contains(&s.height) || !s.height.is_multiple_of(2) {
            return invalid(
                "source.height",
                format!("{} is not an even number in 16..=4320", s.height),
            );
        }
        if !(1..=120).contains(&s.fps) {
            return invalid("source.fps", format!("{} is not in 1..=120", s.fps));
        }
        if !(20..=20_000).contains(&s.tone_hz) {
            return invalid(
                "source.tone_hz",
                format!("{} is not in 20..=20000", s.tone_hz),
            );
        }
        if ![44_100, 48_000].contains(&s.sample_rate) {
            return invalid(
                "source.sample_rate",
                format!("{} is not 44100 or 48000", s.sample_rate),
            );
        }
        if !(16..=100_000).contains(&s.jitter_buffer_samples) {
            return invalid(
                "source.jitter_buffer_samples",
                format!("{} is not in 16..=100000", s.jitter_buffer_samples),
            );
        }
        if s.stall_timeout_ms != 0 && !(100..=600_000).contains(&s.stall_timeout_ms) {
            return invalid(
                "source.stall_timeout_ms",
                format!(
                    "{} is not 0 (three PART-TARGETs) or in 100..=600000",
                    s.stall_timeout_ms
                ),
            );
        }
        if !(1_000..=3_600_000).contains(&s.outage_max_ms) {
            return invalid(
                "source.outage_max_ms",
                format!("{} is not in 1000..=3600000", s.outage_max_ms),
            );
        }
        let e = &self.encoder;
        const PRESETS: [&str; 10] = [
            "ultrafast",
            "superfast",
            "veryfast",
            "faster",
            "fast",
            "medium",
            "slow",
            "slower",
            "veryslow",
            "placebo",
        ];
        if !PRESETS.contains(&e.preset.as_str()) {
            return invalid(
                "encoder.preset",
                format!("{:?} is not one of {}", e.preset, PRESETS.join(", ")),
            );
        }
        if !(100..=100_000).contains(&e.video_bitrate_kbps) {
            return invalid(
                "encoder.video_bitrate_kbps",
                format!("{} is not in 100..=100000", e.video_bitrate_kbps),
            );
        }
        if !(100..=10_000).contains(&e.vbv_buffer_ms) {
            return invalid(
                "encoder.vbv_buffer_ms",
                format!("{} is not in 100..=10000", e.vbv_buffer_ms),
            );
        }
        if !(32..=512).contains(&e.audio_bitrate_kbps) {
            return invalid(
                "encoder.audio_bitrate_kbps",
                format!("{} is not in 32..=512", e.audio_bitrate_kbps),
            );
        }
        if e.bframes > 4 {
            return invalid("encoder.bframes", format!("{} is more than 4", e.bframes));
        }
        if e.threads > 64 {
            return invalid("encoder.threads", format!("{} is more than 64", e.threads));
        }
        let c = &self.cmaf;
        let frame_ms = 1000.0 / f64::from(s.fps);
        if f64::from(c.part_target_ms) < frame_ms || c.part_target_ms > 5000 {
            return invalid(
                "cmaf.part_target_ms",
                format!(
                    "{} must hold at least one frame ({frame_ms:.1} ms) and be at most 5000",
                    c.part_target_ms
                ),
            );
        }
        if c.segment_target_ms < c.part_target_ms || c.segment_target_ms > 30_000 {
            return invalid(
                "cmaf.segment_target_ms",
                format!(
                    "{} must be at least cmaf.part_target_ms ({}) and at most 30000",
                    c.segment_target_ms, c.part_target_ms
                ),
            );
        }
        if !(1024..=(256 << 20)).contains(&c.max_sample_bytes) {
            return invalid(
                "cmaf.max_sample_bytes",
                format!("{} is not in 1024..=268435456", c.max_sample_bytes),
            );
        }
        let v = &self.server;
        if v.cert.is_some() != v.key.is_some() {
            return invalid(
                "server.cert",
                "server.cert and server.key go together".into(),
            );
        }
        if v.shutdown_grace_ms > 600_000 {
            return invalid(
                "server.shutdown_grace_ms",
                format!("{} is more than 600000", v.shutdown_grace_ms),
            );
        }
        if v.store_bytes < 16 << 20 {
            return invalid(
                "server.store_bytes",
                format!("{} is below 16 MiB", v.store_bytes),
            );
        }
        if !(6..=1000).contains(&v.window_segments) {
            return invalid(
                "server.window_segments",
                format!(
                    "{} is not in 6..=1000 (RFC 8216bis 6.2.2 and Apple want at least 6)",
                    v.window_segments
                ),
            );
        }
        self.limits
            .check()
            .map_err(|InvalidLimit { field, reason }| ConfigError::Invalid { field, reason })?;
        self.log
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })?;
        self.admin
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })?;
        self.push
            .validate()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })?;
        self.auth.validate().map_err(|e| ConfigError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        for (i, stream) in self.streams.iter().enumerate() {
            validate_stream(stream, &self.streams[..i])?;
        }
        Ok(())
    }

    /// What every stream is made with: each stage's own part of these settings.
    pub fn stream_options(&self) -> StreamOptions {
        StreamOptions {
            source: self.source.clone(),
            encoder: self.encoder.clone(),
            cmaf: self.cmaf.clone(),
            window_segments: self.server.window_segments,
            publish: None,
        }
    }

    /// The streams to serve: `[[streams]]`, or else one stream named `name` playing
    /// `source` (the command line's).
    pub fn streams_or(&self, name: &str, source: &str) -> Vec<StreamSettings> {
        if self.streams.is_empty() {
            vec![StreamSettings {
                name: name.to_string(),
                source: source.to_string(),
                renditions: Vec::new(),
                policy: None,
                publish_key: None,
                publish_key_sha256: None,
                srt_passphrase: None,
            }]
        } else {
            self.streams.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let settings = Settings::from_toml("").expect("parses");
        assert_eq!(settings, Settings::default());
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.source.width, 1280);
        assert_eq!(settings.cmaf.part_target_ms, 200);
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let err = Settings::from_toml("[cmaf]\npart_target = 100\n").expect_err("typo");
        assert!(err.to_string().contains("part_target"), "{err}");
    }

    #[test]
    fn a_parse_error_shows_no_value_from_the_file() {
        let text = "[source]\nwidth = \"rtsp://admin:hunter2@cam\"\n\
                    [[streams]]\nname = \"a\"\nsoruce = \"rtsp://admin:hunter2@cam\"\n";
        for text in [
            &text[..text.find("[[").unwrap_or(0)],
            &text.replace("width = \"rtsp://admin:hunter2@cam\"", "width = 2"),
        ] {
            let error = Settings::from_toml(text).expect_err("invalid").to_string();
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("(line "), "{error}");
        }
    }

    #[test]
    fn a_parse_error_names_the_field_path() {
        let field = |text: &str| match Settings::from_toml(text) {
            Err(ConfigError::Parse { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("[source]\nwidth = \"wide\"\n"), "source.width");
        assert_eq!(field("[cmaf]\npart_target = 100\n"), "cmaf.part_target");
        let streams = "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\n\
                       [[streams]]\nname = \"b\"\nsource = 3\n";
        assert_eq!(field(streams), "streams[1].source");
        assert_eq!(field("[source\n"), "", "not TOML at all");
    }

    #[test]
    fn out_of_range_value_names_the_field() {
        let mut settings = Settings::default();
        settings.source.width = 1281;
        let err = settings.validate().expect_err("odd width");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "source.width",
                    ..
                }
            ),
            "{err}"
        );
        let mut settings = Settings::default();
        settings.cmaf.segment_target_ms = 100;
        let err = settings.validate().expect_err("segment shorter than part");
        assert!(matches!(
            err,
            ConfigError::Invalid {
                field: "cmaf.segment_target_ms",
                ..
            }
        ));
        let ladder = Settings::from_toml(
            "[[streams]]\nname = \"file\"\nsource = \"clip.mp4\"\n\
             [[streams.renditions]]\nname = \"low\"\ncodec = \"copy\"\n",
        )
        .expect("parses");
        assert!(matches!(
            ladder.validate(),
            Err(ConfigError::Invalid {
                field: "streams.renditions.codec",
                ..
            })
        ));
        let twice = Settings::from_toml(
            "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\n\
             [[streams]]\nname = \"a\"\nsource = \"testsrc\"\n",
        )
        .expect("parses");
        let err = twice.validate().expect_err("same name twice");
        assert!(err.to_string().contains("used twice"), "{err}");
        let mut settings = Settings::default();
        settings.encoder.preset = "warp".into();
        assert!(matches!(
            settings.validate(),
            Err(ConfigError::Invalid {
                field: "encoder.preset",
                ..
            })
        ));
    }
}
