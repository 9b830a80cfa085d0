//! The RTMP listener: `rtmp://HOST[:PORT]/APP/KEY`, the key picking the stream (the
//! application name is free). rml_rtmp (sans-IO: handshake, chunk stream, the
//! connect/publish commands) does the protocol; this file does the I/O with tokio, the
//! limits, and turns FLV tags into a [`Publication`].
//!
//! Limits, so that nothing a client sends takes the server down: connections at once
//! ([`MAX_CONNECTIONS`]), the handshake and the publish request within
//! [`SETUP_TIMEOUT`], silence of a publisher ([`IDLE_TIMEOUT`]); rml_rtmp holds at most
//! one message per chunk stream (24-bit lengths: 16 MiB), and samples go through the
//! publication's bounded buffer. Playback over RTMP is refused: Mirror serves HLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::Unwrap;
use super::flv::{self, AudioTag, VideoTag};
use super::{Publication, PublisherInfo, PushPoints};

/// RTMP's 32-bit millisecond timestamps wrap at this many 90 kHz ticks.
const RTMP_CLOCK_TICKS: u64 = (1 << 32) * 90;

/// RTMP connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// The handshake, `connect` and `publish` must be done within this.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes a client may send before it publishes (the handshake is 3 KiB, connect and
/// publish a few hundred bytes).
pub const MAX_BYTES_BEFORE_PUBLISH: usize = 1 << 20;
/// Bytes a publisher may send without completing a media message (RTMP's longest
/// message is 16 MiB).
pub const MAX_BYTES_WITHOUT_MEDIA: usize = 17 << 20;

/// Writes `bytes` within [`SETUP_TIMEOUT`]: a client that reads nothing (while
/// rml_rtmp answers its pings and commands) cannot hold its slot for ever.
async fn write(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), RtmpError> {
    match tokio::time::timeout(SETUP_TIMEOUT, socket.write_all(bytes)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RtmpError::TimedOut(
            "writing to a client that reads nothing",
        )),
    }
}

/// Why an RTMP connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Too slow to set up, or silent too long.
    #[error("timed out {0}")]
    TimedOut(&'static str),
    /// Refused: unknown key, a stream published already, playback asked for.
    #[error("refused: {0}")]
    Refused(String),
    /// What the publisher sent cannot be passed through.
    #[error("{0}")]
    Media(String),
}

/// Serves RTMP publishers on `listener` into `points`, each publication's buffer
/// holding `buffer_samples`.
pub async fn serve(listener: TcpListener, points: Arc<PushPoints>, buffer_samples: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: keep the listener, try again shortly.
                tracing::warn!(%error, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%address, "RTMP connection refused: {MAX_CONNECTIONS} already open");
            continue;
        };
        let points = points.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = socket.set_nodelay(true);
            match connection(socket, address, &points, buffer_samples).await {
                Ok(stream) => tracing::info!(%address, stream, "RTMP publisher left"),
                Err(error) => tracing::warn!(%address, %error, "RTMP connection ended"),
            }
        });
    }
}

/// Reads from `socket` into `buffer`, within `limit`; 0 bytes is the peer closing.
async fn read(
    socket: &mut TcpStream,
    buffer: &mut [u8],
    limit: Duration,
    what: &'static str,
) -> Result<usize, RtmpError> {
    match tokio::time::timeout(limit, socket.read(buffer)).await {
        Err(_) => Err(RtmpError::TimedOut(what)),
        Ok(Ok(0)) => Err(RtmpError::Protocol(
            "the client closed the connection".into(),
        )),
        Ok(result) => Ok(result?),
    }
}

/// One connection: handshake, session, publication. Returns the stream it published.
async fn connection(
    mut socket: TcpStream,
    address: SocketAddr,
    points: &Arc<PushPoints>,
    buffer_samples: usize,
) -> Result<String, RtmpError> {
    let protocol = |e: &dyn std::fmt::Display| RtmpError::Protocol(e.to_string());
    let setup_ends = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = loop {
        let left = setup_ends.saturating_duration_since(tokio::time::Instant::now());
        let n = read(&mut socket, &mut buffer, left, "in the handshake").await?;
        match handshake
            .process_bytes(&buffer[..n])
            .map_err(|e| protocol(&format!("{e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                write(&mut socket, &response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                write(&mut socket, &response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| protocol(&e))?;
    let mut state = Connection {
        address,
        points,
        buffer_samples,
        publication: None,
        length_size: 4,
        clock: Unwrap::new(32),
        warned_audio: false,
        finished: false,
        refused: None,
        unfinished_bytes: 0,
    };
    let mut pending = results;
    pending.extend(session.handle_input(&leftover).map_err(|e| protocol(&e))?);
    loop {
        // Results may ask for more (accepting a request gives responses to send).
        while !pending.is_empty() {
            let mut more = Vec::new();
            for result in pending {
                match result {
                    ServerSessionResult::OutboundResponse(packet) => {
                        write(&mut socket, &packet.bytes).await?;
                    }
                    ServerSessionResult::RaisedEvent(event) => {
                        more.extend(state.event(&mut session, event)?);
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            pending = more;
        }
        if let Some(reason) = state.refused.take() {
            let _ = socket.flush().await;
            return Err(RtmpError::Refused(reason));
        }
        let (limit, what) = match &state.publication {
            Some(publication) => {
                if !publication.is_current() {
                    return Err(RtmpError::Refused(
                        "the stream no longer takes this publisher".into(),
                    ));
                }
                (IDLE_TIMEOUT, "waiting for media")
            }
            None => (
                setup_ends.saturating_duration_since(tokio::time::Instant::now()),
                "before publishing",
            ),
        };
        let n = match read(&mut socket, &mut buffer, limit, what).await {
            Ok(n) => n,
            // A publisher that hangs up after publishing has simply left.
            Err(RtmpError::Protocol(_)) if state.publication.is_some() => break,
            Err(error) => return Err(error),
        };
        // rml_rtmp buffers a message until it is whole; a client that never completes
        // one (or never publishes) is cut off at these bounds.
        state.unfinished_bytes += n;
        let bound = if state.publication.is_some() {
            MAX_BYTES_WITHOUT_MEDIA
        } else {
            MAX_BYTES_BEFORE_PUBLISH
        };
        if state.unfinished_bytes > bound {
            return Err(RtmpError::Protocol(format!(
                "{} bytes without {}",
                state.unfinished_bytes,
                if state.publication.is_some() {
                    "a media message"
                } else {
                    "publishing"
                }
            )));
        }
        pending = session
            .handle_input(&buffer[..n])
            .map_err(|e| protocol(&e))?;
        if state.finished {
            break;
        }
    }
    Ok(state
        .publication
        .as_ref()
        .map(|p| p.stream().to_string())
        .unwrap_or_default())
}

/// A connection's state between reads.
struct Connection<'a> {
    address: SocketAddr,
    points: &'a Arc<PushPoints>,
    buffer_samples: usize,
    publication: Option<Publication>,
    /// The NAL length size of the publisher's H.264.
    length_size: usize,
    /// RTMP's 32-bit millisecond timestamps, extended (video and audio share them).
    clock: Unwrap,
    warned_audio: bool,
    /// The publisher said it is done (FCUnpublish / deleteStream).
    finished: bool,
    /// Why its publish request was refused: the connection ends once the refusal is
    /// sent.
    refused: Option<String>,
    /// Bytes read since the last media message (or since the start, before publishing).
    unfinished_bytes: usize,
}

impl Connection<'_> {
    /// Acts on one of the session's events; returns what the session answers.
    fn event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, RtmpError> {
        let protocol = |e: &dyn std::fmt::Display| RtmpError::Protocol(e.to_string());
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                session.accept_request(request_id).map_err(|e| protocol(&e))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.publication.is_some() {
                    return Err(RtmpError::Refused(
                        "a second publish on one connection".into(),
                    ));
                }
                let publisher = PublisherInfo::new("rtmp", self.address);
                match self.points.claim(&stream_key, publisher.clone()) {
                    Ok(claim) => {
                        tracing::info!(
                            address = %self.address,
                            stream = claim.stream(),
                            "RTMP publisher accepted"
                        );
                        self.publication = Some(Publication::new(
                            claim,
                            publisher,
                            self.buffer_samples,
                            RTMP_CLOCK_TICKS,
                        ));
                        session.accept_request(request_id).map_err(|e| protocol(&e))
                    }
                    Err(refusal) => {
                        // The session's error reply goes out, then the connection
                        // closes; the key itself is never logged.
                        self.refused = Some(refusal.to_string());
                        session
                            .reject_request(
                                request_id,
                                "NetStream.Publish.BadName",
                                &refusal.to_string(),
                            )
                            .map_err(|e| protocol(&e))
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { .. } => Err(RtmpError::Refused(
                "playback over RTMP (Mirror serves HLS)".into(),
            )),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.finished = true;
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.unfinished_bytes = 0;
                self.video(&data, timestamp.value)?;
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.unfinished_bytes = 0;
                self.audio(&data, timestamp.value);
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    fn video(&mut self, data: &bytes::Bytes, dts_ms: u32) -> Result<(), RtmpError> {
        let Some(publication) = self.publication.as_mut() else {
            return Ok(());
        };
        match flv::video(data).map_err(|e| RtmpError::Media(e.to_string()))? {
            VideoTag::Config { avc, length_size } => {
                self.length_size = length_size;
                publication.video_config(avc);
            }
            VideoTag::Frame {
                keyframe,
                composition_ms,
                nal_units,
            } => {
                let nal_units = flv::four_byte_lengths(nal_units, self.length_size)
                    .ok_or_else(|| RtmpError::Media("a NAL unit runs past its tag".into()))?;
                let dts = self.clock.extend(u64::from(dts_ms)) * 90;
                publication
                    .video(dts, composition_ms.saturating_mul(90), keyframe, nal_units)
                    .map_err(|e| RtmpError::Media(e.to_string()))?;
            }
            VideoTag::Nothing => {}
        }
        Ok(())
    }

    /// Audio that cannot be passed through is left out (with one warning), as an RTSP
    /// camera's is: the picture goes on.
    fn audio(&mut self, data: &bytes::Bytes, dts_ms: u32) {
        let Some(publication) = self.publication.as_mut() else {
            return;
        };
        let result = match flv::audio(data) {
            Ok(AudioTag::Config(aac)) => {
                publication.audio_config(aac);
                Ok(())
            }
            Ok(AudioTag::Frame(frame)) => publication
                .audio(self.clock.extend(u64::from(dts_ms)) * 90, frame)
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = result
            && !self.warned_audio
        {
            self.warned_audio = true;
            tracing::warn!(address = %self.address, stream = publication.stream(), %reason, "RTMP audio left out");
        }
    }
}
