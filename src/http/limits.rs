//! What one client may take and how long the server waits for it: the `[limits]`
//! settings, read by both front ends and by [`super::clients`], which enforces the
//! counts. Plain values; never imports anything of the server.

use std::time::Duration;

use serde::Deserialize;

/// `[limits]`: what one connection and one client address may hold, and how long the
/// server waits for a client. The timeouts are nginx's defaults (`ssl_handshake_timeout`,
/// `client_header_timeout`, `send_timeout`: 60 s each); the header limits are h2o's and
/// Caddy's order of magnitude (16 KiB, 100 fields).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most concurrent connections per listener (QUIC and TCP each). Default 10000. Only
    /// connections whose address is validated count on QUIC.
    pub max_connections: usize,
    /// Most concurrent connections from one IP address, both listeners together.
    /// Default 256 (a cache tier in front connects from few addresses; raise it there).
    pub max_connections_per_address: usize,
    /// Most concurrent requests per connection (QUIC streams, HTTP/2 streams). Default
    /// 100, as h2o. A player at the live edge holds two or three.
    pub max_streams_per_connection: u32,
    /// A connection with no request for this long is closed. Default 30000 ms.
    pub idle_timeout_ms: u64,
    /// A TLS (TCP) or QUIC handshake must finish within this. Default 60000 ms.
    pub handshake_timeout_ms: u64,
    /// A request's headers must arrive within this of the connection or stream
    /// opening. Default 60000 ms.
    pub header_timeout_ms: u64,
    /// A client that takes no response bytes for this long is dropped: the time between
    /// two writes that make progress, not the whole transfer. Default 60000 ms.
    pub send_timeout_ms: u64,
    /// Most bytes of request header fields (names, values and 32 bytes each, RFC 9114
    /// 4.2.2). Default 16384; larger requests get 431.
    pub max_header_bytes: usize,
    /// Most request header fields. Default 100; more get 431.
    pub max_headers: usize,
    /// Most requests one connection may have held waiting for the live edge (blocking
    /// reloads and hinted parts). Default 16; more get 429.
    pub max_held_per_connection: usize,
    /// Most held requests from one IP address. Default 256; more get 429.
    pub max_held_per_address: usize,
    /// Requests per second one IP address may make on average; 0 turns the limit off.
    /// Default 200 (a player makes about two per part per rendition).
    pub requests_per_second_per_address: u32,
    /// How many requests above the rate one address may make at once. Default 400.
    pub request_burst_per_address: u32,
    /// Requests from one address refused 429 within a second beyond which the address
    /// is cut off: its connections closed, new ones refused, for `cut_off_ms`. 0 turns
    /// it off. Default 1000 (players back off after a 429; an address that keeps asking
    /// thousands of times a second costs everyone else's announcements).
    pub refusals_before_cut_off: u32,
    /// How long an address is cut off the first time; each offence within the longest
    /// cut-off of the last one doubles it, up to 64 times. Default 10000 ms.
    pub cut_off_ms: u64,
    /// QUIC handshakes from unvalidated addresses in flight beyond which new ones must
    /// first prove their address with a Retry (one more round trip). 0: always. Default
    /// 64.
    pub quic_retry_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_streams_per_connection: 100,
            idle_timeout_ms: 30_000,
            handshake_timeout_ms: 60_000,
            header_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            max_header_bytes: 16 << 10,
            max_headers: 100,
            max_held_per_connection: 16,
            max_held_per_address: 256,
            requests_per_second_per_address: 200,
            request_burst_per_address: 400,
            refusals_before_cut_off: 1000,
            cut_off_ms: 10_000,
            quic_retry_threshold: 64,
        }
    }
}

/// A `[limits]` value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidLimit {
    /// Dotted path of the field.
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

fn within<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    low: T,
    high: T,
) -> Result<(), InvalidLimit> {
    if low <= value && value <= high {
        Ok(())
    } else {
        Err(InvalidLimit {
            field,
            reason: format!("{value} is not in {low}..={high}"),
        })
    }
}

impl Limits {
    /// Checks every value; the first bad one is returned with its field.
    pub fn check(&self) -> Result<(), InvalidLimit> {
        within("limits.max_connections", self.max_connections, 1, 1_000_000)?;
        within(
            "limits.max_connections_per_address",
            self.max_connections_per_address,
            1,
            1_000_000,
        )?;
        within(
            "limits.max_streams_per_connection",
            self.max_streams_per_connection,
            4,
            10_000,
        )?;
        within(
            "limits.idle_timeout_ms",
            self.idle_timeout_ms,
            1000,
            600_000,
        )?;
        within(
            "limits.handshake_timeout_ms",
            self.handshake_timeout_ms,
            100,
            600_000,
        )?;
        within(
            "limits.header_timeout_ms",
            self.header_timeout_ms,
            100,
            600_000,
        )?;
        within("limits.send_timeout_ms", self.send_timeout_ms, 100, 600_000)?;
        within(
            "limits.max_header_bytes",
            self.max_header_bytes,
            1024,
            1 << 20,
        )?;
        within("limits.max_headers", self.max_headers, 8, 10_000)?;
        within(
            "limits.max_held_per_connection",
            self.max_held_per_connection,
            1,
            100_000,
        )?;
        within(
            "limits.max_held_per_address",
            self.max_held_per_address,
            1,
            1_000_000,
        )?;
        within(
            "limits.requests_per_second_per_address",
            self.requests_per_second_per_address,
            0,
            1_000_000,
        )?;
        if self.requests_per_second_per_address > 0 {
            within(
                "limits.request_burst_per_address",
                self.request_burst_per_address,
                1,
                10_000_000,
            )?;
        }
        within(
            "limits.refusals_before_cut_off",
            self.refusals_before_cut_off,
            0,
            10_000_000,
        )?;
        within("limits.cut_off_ms", self.cut_off_ms, 100, 3_600_000)?;
        within(
            "limits.quic_retry_threshold",
            self.quic_retry_threshold,
            0,
            1_000_000,
        )
    }

    /// `idle_timeout_ms`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `handshake_timeout_ms`.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// `header_timeout_ms`.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// `cut_off_ms`.
    pub fn cut_off(&self) -> Duration {
        Duration::from_millis(self.cut_off_ms)
    }

    /// `send_timeout_ms`.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn out_of_range_values_name_their_field() {
        let bad = Limits {
            max_headers: 0,
            ..Limits::default()
        };
        assert_eq!(bad.check().unwrap_err().field, "limits.max_headers");
        Limits::default().check().unwrap();
    }
}
