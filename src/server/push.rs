//! The server's side of push ingest: the RTMP, SRT and WHIP listeners it binds, and each
//! `publish` stream's place among the [`PushPoints`] (its key and passphrase). Owns no
//! protocol: that is `ingest::push`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::ServerError;
use crate::config::{Settings, StreamSettings};
use crate::ingest::PublishPoint;
use crate::ingest::push::{PushPoints, PushProtocol, rtmp, srt, whip};
use crate::stream::{StreamError, StreamOptions};

/// The options of stream `name` (`configured`: its `[[streams]]` entry or API body):
/// with a publish key or an SRT passphrase it meets its publishers in `push`; without,
/// it no longer takes any.
pub(super) fn options_for(
    settings: &Settings,
    push: &Arc<PushPoints>,
    name: &str,
    configured: Option<&StreamSettings>,
) -> StreamOptions {
    let mut options = settings.stream_options();
    let key = configured.and_then(StreamSettings::publish_key_hash);
    let passphrase = configured.and_then(|s| s.srt_passphrase.as_ref().map(|p| p.0.clone()));
    if key.is_none() && passphrase.is_none() {
        push.remove(name);
        return options;
    }
    push.set(name, key, passphrase);
    options.publish = Some(PublishPoint {
        points: push.clone(),
        stream: name.to_string(),
    });
    options
}

/// A kept stream's new publishing credentials: a publisher admitted with the old ones
/// is ended (only when they changed).
pub(super) fn update_credentials(push: &PushPoints, stream: &StreamSettings) {
    let key = stream.publish_key_hash();
    let passphrase = stream.srt_passphrase.as_ref().map(|p| p.0.clone());
    if key.is_some() || passphrase.is_some() {
        push.set(&stream.name, key, passphrase);
    }
}

/// Refuses `stream` when it is published with a protocol no listener serves (a
/// `publish` stream added after start-up, with neither listener configured): it would
/// wait for ever; or with a key another running stream has (an API body is checked
/// alone, not against the running streams): the key would open either.
pub(super) fn check_publishable(
    push: &PushPoints,
    stream: &StreamSettings,
) -> Result<(), StreamError> {
    if let Some(key) = stream.publish_key_hash()
        && push.key_in_use(&key, &stream.name)
    {
        return Err(StreamError::Start {
            stream: stream.name.clone(),
            reason: "another stream has the same publish key".into(),
        });
    }
    let missing = |setting: &str| StreamError::Start {
        stream: stream.name.clone(),
        reason: format!(
            "no listener for its publishers: set [push] {setting} for publish streams added \
             after start-up"
        ),
    };
    if stream.publish_key_hash().is_some() && !push.is_listening(PushProtocol::Rtmp) {
        return Err(missing("rtmp_listen"));
    }
    if stream.srt_passphrase.is_some() && !push.is_listening(PushProtocol::Srt) {
        return Err(missing("srt_listen"));
    }
    Ok(())
}

/// Where the push listeners listen.
#[derive(Debug, Default)]
pub(super) struct PushAddresses {
    pub(super) rtmp: Option<SocketAddr>,
    pub(super) srt: Option<SocketAddr>,
}

/// Binds WHIP's UDP port where `[push] whip_listen` says and starts its task on
/// `tasks`: the handle the HTTP side publishes through and the port's address, or
/// `None` when WHIP is off.
pub(super) async fn start_whip(
    settings: &Settings,
    push: &Arc<PushPoints>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<(whip::Whip, SocketAddr)>, ServerError> {
    let Some(listen) = settings.push.whip_listen else {
        return Ok(None);
    };
    let (socket, candidate) =
        whip::bind(listen, settings.push.whip_host)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                transport: "UDP (WHIP)",
                source,
            })?;
    let (handle, task) = whip::start(
        socket,
        push.clone(),
        whip::WhipOptions {
            candidate,
            keyframe_every: settings.cmaf.segment_target(),
            buffer_samples: settings.source.jitter_buffer_samples,
        },
    );
    tasks.push(tokio::spawn(task));
    Ok(Some((handle, candidate)))
}

/// Binds RTMP and SRT where `[push]` says, or on their default ports when a configured
/// stream is published with that protocol, and serves them into `push` on `tasks`.
pub(super) async fn bind_listeners(
    settings: &Settings,
    push: &Arc<PushPoints>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<PushAddresses, ServerError> {
    let buffer = settings.source.jitter_buffer_samples;
    let by_key = settings
        .streams
        .iter()
        .any(|s| s.publish_key_hash().is_some());
    let by_srt = settings.streams.iter().any(|s| s.srt_passphrase.is_some());
    let mut addresses = PushAddresses::default();
    if let Some(addr) = settings.push.rtmp_address(by_key) {
        let bind_error = |source| ServerError::Bind {
            addr,
            transport: "TCP (RTMP)",
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        addresses.rtmp = Some(listener.local_addr().map_err(bind_error)?);
        push.set_listening(PushProtocol::Rtmp);
        tasks.push(tokio::spawn(rtmp::serve(listener, push.clone(), buffer)));
    }
    if let Some(addr) = settings.push.srt_address(by_srt) {
        let (bound, local) = srt::bind(addr).await.map_err(|source| ServerError::Bind {
            addr,
            transport: "UDP (SRT)",
            source,
        })?;
        addresses.srt = Some(local);
        push.set_listening(PushProtocol::Srt);
        tasks.push(tokio::spawn(srt::serve(bound, local, push.clone(), buffer)));
    }
    Ok(addresses)
}
