//! `[push]`: where the listeners encoders push to listen, and what a second publisher
//! and publishers' timestamps mean. Settings only: imports nothing of the protocols.

use std::net::SocketAddr;

/// Where RTMP listens when a stream is published to and `[push]` says nothing.
pub const DEFAULT_RTMP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 1935);

/// Where SRT listens when a stream has a passphrase and `[push]` says nothing.
pub const DEFAULT_SRT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 8890);

/// `[push]`: the listeners encoders push to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// RTMP (`rtmp://HOST:PORT/APP/KEY`). Default `[::]:1935` when a stream has a
    /// publish key, else none.
    pub rtmp_listen: Option<SocketAddr>,
    /// SRT (`srt://HOST:PORT?streamid=#!::r=NAME,m=publish&passphrase=…`). Default
    /// `[::]:8890` (MediaMTX's, so encoder presets carry over) when a stream has an
    /// `srt_passphrase`, else none.
    pub srt_listen: Option<SocketAddr>,
    /// What a second publisher of a stream being published gets: `refuse` (the
    /// default: the first goes on) or `replace` (the first is disconnected; for an
    /// encoder that reconnects before the server noticed it left).
    pub second_publisher: SecondPublisher,
    /// What publishers' timestamps are: `arrival` (the default: any origin; a
    /// stream's PROGRAM-DATE-TIME is when its first frame arrived, plus media time) or
    /// `wallclock` (Unix time, as an encoder synchronised by NTP or PTP can write it,
    /// e.g. ffmpeg's `-use_wallclock_as_timestamps 1 -copyts`): PROGRAM-DATE-TIME is
    /// then the encoder's capture time, and glass-to-glass latency reads from it.
    pub publisher_clock: PublisherClock,
    /// WHIP's media (ICE-lite, one UDP port for every WebRTC publisher), e.g.
    /// `"[::]:8189"`; WHIP itself (`POST /whip/STREAM` with the publish key as bearer
    /// token) is on the HTTPS port. Default none: no WHIP.
    pub whip_listen: Option<SocketAddr>,
    /// The address publishers reach `whip_listen` at, given to them as the ICE
    /// candidate. Default `whip_listen`'s; required when that is unspecified (`[::]`).
    pub whip_host: Option<std::net::IpAddr>,
}

/// See [`PushSettings::publisher_clock`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublisherClock {
    /// Timestamps from any origin; the wall clock is the first frame's arrival.
    #[default]
    Arrival,
    /// Timestamps are Unix time (wrapped as the protocol wraps them).
    Wallclock,
}

/// See [`PushSettings::second_publisher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecondPublisher {
    /// Refused; the first goes on.
    #[default]
    Refuse,
    /// Taken; the first is disconnected.
    Replace,
}

impl PushSettings {
    /// Where RTMP listens, `publishing`: whether a stream is published to with a key.
    pub fn rtmp_address(&self, publishing: bool) -> Option<SocketAddr> {
        self.rtmp_listen
            .or(publishing.then_some(DEFAULT_RTMP_LISTEN))
    }

    /// Where SRT listens, `publishing`: whether a stream is published to over SRT.
    pub fn srt_address(&self, publishing: bool) -> Option<SocketAddr> {
        self.srt_listen.or(publishing.then_some(DEFAULT_SRT_LISTEN))
    }

    /// Checks that WHIP's candidate address is known: `(field, reason)` when not.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(listen) = self.whip_listen
            && listen.ip().is_unspecified()
            && self.whip_host.is_none()
        {
            return Err((
                "push.whip_host",
                format!(
                    "whip_listen {listen} is on every address: name the one publishers reach \
                     it at"
                ),
            ));
        }
        if let Some(host) = self.whip_host
            && host.is_unspecified()
        {
            return Err((
                "push.whip_host",
                "must be an address publishers can reach".into(),
            ));
        }
        Ok(())
    }
}
