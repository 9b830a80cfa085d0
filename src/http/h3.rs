//! The HTTP/3 front: quinn (QUIC) + h3 over Mirror's own transport adapter
//! ([`super::quic`]), ALPN `h3`. Each connection is a task, each request a task; the
//! handler's response is sent chunk by chunk as it comes, its chunks handed to quinn
//! without copying.
//!
//! Admission: a handshake from an address QUIC has not validated is not counted as a
//! connection (its source address may be spoofed); past `quic_retry_threshold` of them
//! in flight, new ones are sent a Retry, and only a connection whose address is proven
//! takes a place under `max_connections`. An address already at its connection budget
//! is sent a Retry too, and refused once it answers: no TLS handshake is spent on it. Flow
//! control is sized for an edge: clients send small requests, the server sends media
//! (README, "Limits").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::FutureExt as _;
use h3::server::RequestStream;

use super::access::AccessRecord;
use super::admin::BodyError;
use super::clients::{Admission, ConnectionPermit};
use super::limits::Limits;
use super::peer::{Peer, until_draining};
use super::quic::{self, BodyHandoff, StreamLimits};
use super::watchdog::{IdleTracker, LogThrottle};
use super::{AppState, handle_with_body};

/// Unidirectional streams a client may have open: HTTP/3's three (control, QPACK
/// encoder and decoder) and a few more it may open (grease, extensions).
const MAX_UNI_STREAMS: u32 = 8;

/// The quinn server configuration for `tls` with `limits`.
pub fn server_config(
    tls: rustls::ServerConfig,
    limits: &Limits,
) -> Result<quinn::ServerConfig, quinn::crypto::rustls::NoInitialCipherSuite> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(limits)));
    Ok(config)
}

/// Receive windows a client's requests fit in many times over, instead of quinn's
/// defaults (1.25 MB per stream, no connection limit), which let one client park
/// hundreds of megabytes it never has to send the server anything for.
fn transport_config(limits: &Limits) -> quinn::TransportConfig {
    let stream_window = request_window(limits);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_streams_per_connection.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(stream_window.into())
        .receive_window((stream_window * 4).into())
        // Mirror uses no QUIC datagrams: none are buffered.
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(limits.idle_timeout().try_into().ok());
    transport
}

/// One stream's receive window: room for the largest request header block allowed.
fn request_window(limits: &Limits) -> u32 {
    u32::try_from(limits.max_header_bytes * 2)
        .unwrap_or(u32::MAX)
        .max(64 << 10)
}

/// Accepts connections on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<AppState>, admission: Admission) {
    let handshaking = Arc::new(AtomicUsize::new(0));
    let refused = LogThrottle::new();
    let limits = admission.clients().limits().clone();
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        // A validated address (this Initial answers a Retry) is counted from the start;
        // an unvalidated one only once its handshake completes, which proves it.
        let permit = if incoming.remote_address_validated() {
            match admission.admit(remote) {
                Ok(permit) => Some(permit),
                Err(refusal) => {
                    if let Some(count) = refused.hit() {
                        tracing::warn!(%remote, %refusal, count, "QUIC connection refused");
                    }
                    state.metrics.quic.refused.inc();
                    incoming.refuse();
                    continue;
                }
            }
        } else if handshaking.load(Ordering::Acquire) >= limits.quic_retry_threshold
            || admission.clients().refuses_connections(remote.ip())
        {
            // Costs the server one stateless packet; a spoofed source never answers.
            // An address with no place left (or cut off) is sent one too, rather than a TLS
            // handshake (the costly part) that would end in a refusal: once it answers,
            // it is proven and refused above. (Initials racing in below the budget still
            // get their handshake, and are closed after it.)
            match incoming.retry() {
                Ok(()) => {
                    state.metrics.quic.retries.inc();
                }
                Err(error) => error.into_incoming().ignore(),
            }
            continue;
        } else {
            None
        };
        let handshake = Handshake::start(&handshaking, permit.is_none());
        let task = QuicConnection {
            state: state.clone(),
            admission: admission.clone(),
            peer: state.peer(remote).speaking("h3"),
        };
        tokio::spawn(async move {
            if let Err(error) = task.run(incoming, handshake, permit).await {
                tracing::debug!(%remote, %error, "HTTP/3 connection ended");
            }
        });
    }
}

/// An unvalidated handshake in flight, counted until it completes or fails.
struct Handshake(Option<Arc<AtomicUsize>>);

impl Handshake {
    fn start(handshaking: &Arc<AtomicUsize>, unvalidated: bool) -> Self {
        Self(unvalidated.then(|| {
            handshaking.fetch_add(1, Ordering::AcqRel);
            handshaking.clone()
        }))
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// H3_NO_ERROR.
const NO_ERROR: u32 = 0x0100;
/// How long a connection that was sent GOAWAY must have been without a request to be
/// closed.
const DRAINED_AFTER: std::time::Duration = std::time::Duration::from_millis(50);
/// H3_EXCESSIVE_LOAD: the server is full.
const EXCESSIVE_LOAD: u32 = 0x0107;

struct QuicConnection {
    state: Arc<AppState>,
    admission: Admission,
    peer: Peer,
}

impl QuicConnection {
    async fn run(
        self,
        incoming: quinn::Incoming,
        handshake: Handshake,
        permit: Option<ConnectionPermit>,
    ) -> Result<(), BoxError> {
        let limits = self.peer.limits().clone();
        let connecting = incoming.accept()?;
        let connection = tokio::time::timeout(limits.handshake_timeout(), connecting)
            .await
            .map_err(|_| "QUIC handshake timed out")??;
        drop(handshake);
        let metrics = &self.state.metrics;
        metrics.quic.handshakes.inc();
        // The handshake proved the address: now it counts.
        let _permit = match permit {
            Some(permit) => permit,
            None => match self.admission.admit(connection.remote_address()) {
                Ok(permit) => permit,
                Err(refusal) => {
                    metrics.quic.refused.inc();
                    connection.close(EXCESSIVE_LOAD.into(), refusal.to_string().as_bytes());
                    return Ok(());
                }
            },
        };
        let _open = metrics.http.connection("h3");
        let quinn = connection.clone();
        let bodies = BodyHandoff::default();
        // h3 and the frame bound let through twice the header limit, so that the
        // handler answers everything up to there with one 431 of its own; beyond, the
        // stream is refused before h3 buffers it.
        let header_bound = 2 * limits.max_header_bytes as u64;
        let stream_limits = StreamLimits {
            max_frame: header_bound,
            send_timeout: limits.send_timeout(),
        };
        let mut h3 = h3::server::builder()
            .max_field_section_size(header_bound)
            .build::<_, Bytes>(quic::Connection::new(
                connection,
                bodies.clone(),
                stream_limits,
            ))
            .await?;
        let idle = IdleTracker::default();
        let mut requests: u64 = 0;
        let mut draining = self.peer.draining();
        let mut goaway_sent = false;
        let cut_off = self.peer.until_cut_off();
        let mut cut_off = std::pin::pin!(cut_off);
        let ended = loop {
            // Once GOAWAY is out, the connection closes as soon as its last request
            // is answered.
            let idle_for = if goaway_sent {
                DRAINED_AFTER
            } else {
                limits.idle_timeout()
            };
            let accepted = tokio::select! {
                accepted = h3.accept() => accepted,
                // Its address kept asking after 429s: dropped at once, whatever it has
                // in flight, and refused for a while (see `clients`).
                () = &mut cut_off => {
                    quinn.close(EXCESSIVE_LOAD.into(), b"cut off");
                    break Ok(());
                }
                // quinn's idle timeout is reset by any packet, PINGs too; a connection
                // that asks for nothing is closed here.
                () = idle.idle(idle_for) => {
                    let reason: &[u8] = if goaway_sent { b"server stopping" } else { b"idle" };
                    quinn.close(NO_ERROR.into(), reason);
                    break Ok(());
                }
                // Shutting down: GOAWAY (RFC 9114 5.2), no new requests; those in
                // flight finish.
                () = until_draining(&mut draining), if !goaway_sent => {
                    goaway_sent = true;
                    // h3 names `last accepted + n` in the GOAWAY: 1 keeps the request
                    // accepted last among those it says will be processed (RFC 9114 5.2).
                    if let Err(error) = h3.shutdown(1).await {
                        break Err(error.into());
                    }
                    continue;
                }
            };
            match accepted {
                Ok(Some(resolver)) => {
                    requests += 1;
                    let in_flight = idle.request();
                    let (state, bodies, peer) =
                        (self.state.clone(), bodies.clone(), self.peer.clone());
                    let header_timeout = limits.header_timeout();
                    tokio::spawn(async move {
                        let _in_flight = in_flight;
                        let resolved =
                            tokio::time::timeout(header_timeout, resolver.resolve_request()).await;
                        match resolved {
                            Ok(Ok((request, stream))) => {
                                if let Err(error) =
                                    respond(&state, &peer, request, stream, &bodies).await
                                {
                                    tracing::debug!(%error, "HTTP/3 request ended early");
                                }
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "bad HTTP/3 request"),
                            // Dropping the stream resets it (see `quic`).
                            Err(_) => tracing::debug!("HTTP/3 request headers timed out"),
                        }
                    });
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error.into()),
            }
        };
        log_connection_stats(&quinn, requests);
        metrics.quic.ended(&quinn.stats());
        // However the loop ended (the peer's GOAWAY, an error), the close says
        // H3_NO_ERROR rather than quinn's implicit code 0; a close already sent stands.
        quinn.close(NO_ERROR.into(), b"");
        ended
    }
}

/// What a connection cost in packets, at debug level (`RUST_LOG=mirror::http::h3=debug`):
/// BENCHMARKS.md's datagrams per request come from these.
fn log_connection_stats(connection: &quinn::Connection, requests: u64) {
    let stats = connection.stats();
    tracing::debug!(
        remote = %connection.remote_address(),
        requests,
        datagrams_sent = stats.udp_tx.datagrams,
        sendmsg_calls = stats.udp_tx.ios,
        bytes_sent = stats.udp_tx.bytes,
        datagrams_received = stats.udp_rx.datagrams,
        stream_frames_sent = stats.frame_tx.stream,
        stop_sending_sent = stats.frame_tx.stop_sending,
        "HTTP/3 connection ended"
    );
}

async fn respond<S>(
    state: &AppState,
    peer: &Peer,
    request: http::Request<()>,
    mut stream: RequestStream<S, Bytes>,
    bodies: &BodyHandoff,
) -> Result<(), BoxError>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let body = if super::handler::wants_body(state, &request, peer) {
        Some(read_body(&mut stream, peer.limits().header_timeout()).await)
    } else {
        None
    };
    let mut response = handle_with_body(state, &request, body, peer).await;
    let mut logged = response.extensions_mut().remove::<AccessRecord>();
    let (parts, body) = response.into_parts();
    stream
        .send_response(http::Response::from_parts(parts, ()))
        .await?;
    let sent = state.metrics.http.response_bytes("h3");
    let mut chunks = body.into_chunks();
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(cut) => {
                // A reset stream is an error to every cache: the short bytes are not
                // kept under the segment's name.
                stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Err(cut.into());
            }
        };
        // The transport sends this very `Bytes`, not a copy (see `quic`).
        bodies.offer(stream.id(), &chunk);
        sent.inc_by(chunk.len() as u64);
        if let Some(record) = logged.as_mut() {
            record.bytes += chunk.len() as u64;
        }
        stream.send_data(chunk).await?;
    }
    stream.finish().await?;
    if let Some(record) = logged.as_mut() {
        record.completed();
    }
    // RFC 9114 4.1: the response is complete and needs nothing more of the request. A
    // request whose end has already arrived (a GET's usually has) is read to that end,
    // which closes the stream without sending anything; otherwise the client is asked to
    // stop sending, with H3_NO_ERROR (not quinn's default code 0, which a client reads as
    // an abort). That STOP_SENDING was sent for nearly every request: a frame each end
    // had to build, track and acknowledge.
    let request_ended = matches!(stream.recv_data().now_or_never(), Some(Ok(None)));
    if !request_ended {
        stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    }
    Ok(())
}

/// An admin request's body, up to [`super::admin::MAX_BODY_BYTES`] and within `timeout`;
/// none when larger, slower or broken (the admin API answers 413 or 400 then).
async fn read_body<S>(
    stream: &mut RequestStream<S, Bytes>,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError>
where
    S: h3::quic::BidiStream<Bytes>,
{
    use bytes::Buf as _;
    let read = async {
        let mut body = Vec::new();
        while let Some(mut chunk) = stream
            .recv_data()
            .await
            .map_err(|_| BodyError::Incomplete)?
        {
            if body.len() + chunk.remaining() > super::admin::MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                body.extend_from_slice(piece);
                let read = piece.len();
                chunk.advance(read);
            }
        }
        Ok(Bytes::from(body))
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::Incomplete))
}
