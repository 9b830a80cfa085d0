//! The access log: one line per response (or one in N), at info under the target
//! `mirror::access`, written when the response's last byte has been handed to the
//! transport (or it ended early), so that it carries the bytes sent and how long it
//! took; and the `[log]` settings. Never imports the handler's routes or media.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (default) or `json`, for every log line.
    pub format: LogFormat,
    /// Log one response in this many; 0 turns the access log off. Default 1: every
    /// response (a viewer makes about two a part per rendition: sample on a busy
    /// server).
    pub access_sample_every: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            access_sample_every: 1,
        }
    }
}

impl LogSettings {
    /// Checks every value; the first bad one is returned as (field, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.access_sample_every > 1_000_000 {
            return Err((
                "log.access_sample_every",
                format!("{} is not in 0..=1000000", self.access_sample_every),
            ));
        }
        Ok(())
    }
}

/// Which responses are logged.
#[derive(Debug, Default)]
pub struct AccessLog {
    every: u64,
    seen: AtomicU64,
}

impl AccessLog {
    /// One response in `every` (0: none).
    pub fn new(every: u64) -> Self {
        Self {
            every,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next response is logged.
    pub fn sampled(&self) -> bool {
        match self.every {
            0 => false,
            1 => true,
            every => self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every),
        }
    }
}

/// One response being logged; the line is written when it is dropped: after the last
/// byte, or when the response ended early (the client went away, the body was cut).
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request arrived.
    pub started: Instant,
    /// The client.
    pub remote: SocketAddr,
    /// `h3`, `h2` or `h1`.
    pub protocol: &'static str,
    /// The method.
    pub method: http::Method,
    /// Path and query as asked.
    pub target: String,
    /// The stream asked for, if the path names one.
    pub stream: Option<String>,
    /// Its rendition, if the path names one.
    pub rendition: Option<String>,
    /// The status answered.
    pub status: u16,
    /// From arrival to the response being ready: for a blocking reload, the time it was
    /// held.
    pub ready_after: Duration,
    /// Body bytes handed to the transport.
    pub bytes: u64,
    /// Whether the whole body went out.
    pub complete: bool,
}

impl AccessRecord {
    /// The body is sent whole.
    pub fn completed(&mut self) {
        self.complete = true;
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "mirror::access",
            remote = %self.remote,
            protocol = self.protocol,
            method = %self.method,
            path = %self.target,
            status = self.status,
            bytes = self.bytes,
            duration_ms = millis(self.started.elapsed()),
            ready_ms = millis(self.ready_after),
            stream = self.stream.as_deref().unwrap_or(""),
            rendition = self.rendition.as_deref().unwrap_or(""),
            complete = self.complete,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_in_n_is_sampled() {
        let every_third = AccessLog::new(3);
        let picked = (0..9).filter(|_| every_third.sampled()).count();
        assert_eq!(picked, 3);
        assert!((0..5).all(|_| AccessLog::new(1).sampled()));
        assert!(!(0..5).any(|_| AccessLog::new(0).sampled()));
    }

    #[test]
    fn settings_are_read_and_checked() {
        let settings: LogSettings =
            toml::from_str("format = \"json\"\naccess_sample_every = 10").unwrap();
        assert_eq!(settings.format, LogFormat::Json);
        assert_eq!(settings.access_sample_every, 10);
        assert!(toml::from_str::<LogSettings>("format = \"xml\"").is_err());
        let too_many = LogSettings {
            access_sample_every: 2_000_000,
            ..LogSettings::default()
        };
        assert_eq!(too_many.check().unwrap_err().0, "log.access_sample_every");
    }
}
