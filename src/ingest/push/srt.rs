//! The SRT listener: one UDP port; a caller's stream id picks the stream and the mode
//! (`#!::r=NAME,m=publish`, the SRT access-control syntax, or a plain `NAME`), and the
//! stream's passphrase (SRT's own AES, as libsrt does it) admits it: a caller without
//! it fails the handshake. srt-tokio runs the protocol; the MPEG-TS inside is
//! demultiplexed by [`super::ts`] into a [`Publication`].
//!
//! A caller asking to play (`m=request`) or for a stream that is not published over SRT
//! is rejected in the handshake with SRT's reject code for it; one for a stream being
//! published already is closed once its passphrase is proven. A publisher silent for
//! [`IDLE_TIMEOUT`] is dropped.
//!
//! Known limit: srt-protocol 0.4 panics (`unimplemented!`) on some malformed handshake
//! packets inside the listener's task, which carries every open connection's packets:
//! such a datagram ends every SRT publication (they reconnect; the listener is bound
//! again), though not the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::Passphrase;
use srt_tokio::{ConnectionRequest, SrtIncoming, SrtListener, SrtSocket};

use super::ts::{EsUnit, TsDemuxer, adts_frames};
use super::{Publication, PublisherInfo, PushPoints, Unwrap};

/// A publisher that sends nothing for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// SRT's receive latency: how long it waits for a lost packet's retransmission (libsrt's
/// default; on loopback and good links retransmissions come much sooner).
pub const LATENCY: Duration = Duration::from_millis(120);

/// What a caller's stream id asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdRequest {
    /// The stream (`r=`, or the whole id).
    pub stream: String,
    /// `m=publish` (or no mode with a plain name); false for `request` (play).
    pub publish: bool,
}

/// Reads a stream id: `#!::r=NAME,m=publish` (keys in any order, others ignored) or a
/// plain name. `None` when it names no stream.
pub fn parse_stream_id(id: &str) -> Option<StreamIdRequest> {
    let Some(entries) = id.strip_prefix("#!::") else {
        return (!id.is_empty()).then(|| StreamIdRequest {
            stream: id.to_string(),
            publish: true,
        });
    };
    let mut stream = None;
    let mut publish = false;
    for entry in entries.split(',') {
        match entry.split_once('=') {
            Some(("r", name)) if !name.is_empty() => stream = Some(name.to_string()),
            Some(("m", mode)) => publish = mode == "publish",
            _ => {}
        }
    }
    Some(StreamIdRequest {
        stream: stream?,
        publish,
    })
}

/// A bound SRT listener: the protocol's task and the callers it hands over.
pub struct Bound {
    /// Kept for as long as callers are served (dropping it ends the listener's task).
    listener: SrtListener,
    incoming: SrtIncoming,
}

/// Serves SRT publishers arriving at `bound` (listening on `local`) into `points`. When
/// the listener's task ends (srt-tokio panics on some malformed handshakes, which ends
/// it and the connections it carries), the port is bound again, so that SRT stays open.
pub async fn serve(
    bound: Bound,
    local: SocketAddr,
    points: Arc<PushPoints>,
    buffer_samples: usize,
) {
    let mut bound = bound;
    loop {
        let Bound {
            listener: _listener,
            mut incoming,
        } = bound;
        while let Some(request) = incoming.incoming().next().await {
            let points = points.clone();
            tokio::spawn(async move {
                let address = request.remote();
                match connection(request, &points, buffer_samples).await {
                    Ok(stream) => tracing::info!(%address, stream, "SRT publisher left"),
                    Err(error) => tracing::warn!(%address, %error, "SRT connection ended"),
                }
            });
        }
        tracing::error!(%local, "the SRT listener ended; binding it again");
        bound = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match bind(local).await {
                Ok((again, _)) => break again,
                Err(error) => tracing::error!(%local, %error, "SRT listener not bound"),
            }
        };
    }
}

/// One caller: admitted or rejected, then its media until it leaves.
async fn connection(
    request: ConnectionRequest,
    points: &Arc<PushPoints>,
    buffer_samples: usize,
) -> Result<String, String> {
    let address = request.remote();
    let asked = request
        .stream_id()
        .and_then(|id| parse_stream_id(id))
        .filter(|asked| asked.publish);
    let Some(asked) = asked else {
        let _ = request
            .reject(RejectReason::Server(ServerRejectReason::BadMode))
            .await;
        return Err("refused: no stream id, or not m=publish (Mirror serves HLS)".into());
    };
    let Some(passphrase) = points.srt_passphrase(&asked.stream) else {
        let _ = request
            .reject(RejectReason::Server(ServerRejectReason::Notfound))
            .await;
        return Err(format!(
            "refused: stream {} is not published over SRT",
            asked.stream
        ));
    };
    // The passphrase is checked by the handshake `accept` completes; only then is the
    // stream claimed, so that a caller without it cannot take or block the stream.
    let key_size = request.key_size();
    let passphrase =
        Passphrase::try_from(passphrase).map_err(|e| format!("the stream's passphrase: {e}"))?;
    let socket = request
        .accept(Some(KeySettings {
            key_size,
            passphrase,
        }))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let publisher = PublisherInfo::new("srt", address);
    // A busy stream (with `second_publisher = "refuse"`): the socket is dropped, which
    // closes the connection.
    let claim = points
        .claim_stream(&asked.stream, publisher.clone())
        .map_err(|refusal| format!("refused: {refusal}"))?;
    tracing::info!(%address, stream = claim.stream(), "SRT publisher accepted");
    let mut publication = Publication::new(claim, publisher, buffer_samples, 1 << 33);
    receive(socket, &mut publication).await?;
    Ok(publication.stream().to_string())
}

/// Reads `socket` until the publisher leaves, feeding `publication`.
async fn receive(mut socket: SrtSocket, publication: &mut Publication) -> Result<(), String> {
    let mut demuxer = TsDemuxer::default();
    let mut clock = Unwrap::new(33);
    let mut warned_audio = false;
    loop {
        let bytes = match tokio::time::timeout(IDLE_TIMEOUT, socket.next()).await {
            Err(_) => return Err(format!("no media for {} s", IDLE_TIMEOUT.as_secs())),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok((_, bytes)))) => bytes,
        };
        if !publication.is_current() {
            return Err("the stream no longer takes this publisher".into());
        }
        for unit in demuxer.push(&bytes) {
            match unit {
                EsUnit::Video { pts, dts, data } => {
                    // PTS − DTS on the 33-bit clock (never more than a few frames).
                    let offset = pts.wrapping_sub(dts) & ((1 << 33) - 1);
                    let composition = i32::try_from(offset).unwrap_or(0);
                    publication
                        .annexb_video(clock.extend(dts), composition, &data)
                        .map_err(|e| e.to_string())?;
                }
                EsUnit::Audio { pts, data } => {
                    let Some((aac, frames)) = adts_frames(&data) else {
                        if !warned_audio {
                            warned_audio = true;
                            tracing::warn!(
                                stream = publication.stream(),
                                "SRT audio that is not ADTS AAC is left out"
                            );
                        }
                        continue;
                    };
                    let rate = u64::from(aac.sample_rate.max(1));
                    publication.audio_config(aac);
                    let start = clock.extend(pts);
                    for (i, frame) in (0u64..).zip(frames) {
                        publication
                            .audio(start + i * 1024 * 90_000 / rate, frame)
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
}

/// Binds an SRT listener on `address` (port 0: any); returns it and where it listens.
pub async fn bind(address: SocketAddr) -> std::io::Result<(Bound, SocketAddr)> {
    let socket = tokio::net::UdpSocket::bind(address).await?;
    let local = socket.local_addr()?;
    let (listener, incoming) = SrtListener::builder()
        .latency(LATENCY)
        .socket(socket)
        .bind(local)
        .await?;
    Ok((Bound { listener, incoming }, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_in_both_syntaxes() {
        let publish = |stream: &str| {
            Some(StreamIdRequest {
                stream: stream.into(),
                publish: true,
            })
        };
        assert_eq!(parse_stream_id("#!::r=live,m=publish"), publish("live"));
        assert_eq!(
            parse_stream_id("#!::m=publish,u=obs,r=cam-2"),
            publish("cam-2")
        );
        assert_eq!(parse_stream_id("studio"), publish("studio"));
        assert_eq!(
            parse_stream_id("#!::r=live,m=request").map(|r| r.publish),
            Some(false)
        );
        assert_eq!(
            parse_stream_id("#!::r=live").map(|r| r.publish),
            Some(false)
        );
        assert_eq!(parse_stream_id("#!::m=publish"), None);
        assert_eq!(parse_stream_id(""), None);
    }
}
