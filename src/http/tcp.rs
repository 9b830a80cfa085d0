//! The TCP front: HTTP/1.1 and HTTP/2 over TLS with hyper, for clients and CDNs that
//! cannot speak QUIC, and plain HTTP/1.1 for a cache tier on a trusted network. The protocol is the one ALPN chose (HTTP/1.1 for a client that
//! sends no ALPN): no preface sniffing, so every byte a client sends is read under a
//! timeout. Every response advertises HTTP/3 with `Alt-Svc`.
//!
//! Each connection holds a [`ConnectionPermit`] for as long as its task lives, the TLS
//! handshake must finish within `handshake_timeout`, the first request's headers within
//! `header_timeout`, and a client that takes no bytes for `send_timeout` is dropped.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::access::AccessRecord;
use super::admin::BodyError;
use super::clients::{Admission, ConnectionPermit};
use super::peer::{Peer, until_draining};
use super::watchdog::{BodyProgress, IdleTracker, LogThrottle, RequestInFlight, SendTimeout};
use super::{AppState, Body, handle_with_body};

/// The body type hyper sends. An error ends the response as one no cache may keep: the
/// HTTP/1.1 connection closes before the last chunk, HTTP/2 resets the stream.
pub type HyperBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, io::Error>>>;

/// `body` for hyper, watched by its connection's `progress`; the request stays in
/// flight (the connection not idle) until the body has ended.
fn hyper_body(
    body: Body,
    progress: &Arc<BodyProgress>,
    in_flight: RequestInFlight,
    (sent, logged): (Counter, Option<AccessRecord>),
) -> HyperBody {
    // The access record goes with the body: written when hyper drops it, whole or not.
    // hyper stops polling a body of known length once it has that many bytes.
    let whole = body.len().map(|n| n as u64);
    let mut logged = logged;
    if let Some(record) = logged.as_mut().filter(|_| whole == Some(0)) {
        record.completed();
    }
    let start = Some((body.into_chunks(), sent, logged));
    let stream = futures_util::stream::unfold(start, move |state| async move {
        let (mut chunks, sent, mut logged) = state?;
        let Some(next) = chunks.next().await else {
            if let Some(record) = logged.as_mut() {
                record.completed();
            }
            return None;
        };
        match next {
            Ok(chunk) => {
                sent.inc_by(chunk.len() as u64);
                if let Some(record) = logged.as_mut() {
                    record.bytes += chunk.len() as u64;
                    if Some(record.bytes) == whole {
                        record.completed();
                    }
                }
                Some((Ok(Frame::data(chunk)), Some((chunks, sent, logged))))
            }
            Err(cut) => Some((Err(io::Error::other(cut)), None)),
        }
    });
    StreamBody::new(Box::pin(progress.watch(Box::pin(stream), in_flight)))
}

/// How a TCP listener's connections begin.
#[derive(Clone)]
pub enum Front {
    /// TLS, then HTTP/1.1 or HTTP/2 by ALPN; responses advertise HTTP/3 on this port
    /// in `Alt-Svc`.
    Tls {
        /// The server's TLS configuration (ALPN `h2`, `http/1.1`).
        config: Arc<rustls::ServerConfig>,
        /// Where HTTP/3 listens.
        h3_port: u16,
    },
    /// Plain HTTP/1.1, for a cache tier on a trusted network (Varnish speaks no TLS to
    /// its backends). No `Alt-Svc`: the cache's viewers are not this port's.
    Plain,
}

/// Accepts connections on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    state: Arc<AppState>,
    admission: Admission,
) {
    let (acceptor, alt_svc) = match &front {
        Front::Tls { config, h3_port } => (
            Some(TlsAcceptor::from(config.clone())),
            HeaderValue::from_str(&format!("h3=\":{h3_port}\"; ma=86400")).ok(),
        ),
        Front::Plain => (None, None),
    };
    let refused = LogThrottle::new();
    let mut backoff = AcceptBackoff::default();
    let mut draining = admission.clients().draining();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Shutting down: the listening socket closes, new connections are refused.
            () = until_draining(&mut draining) => return,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                backoff.failed(&error).await;
                continue;
            }
        };
        let permit = match admission.admit(remote) {
            Ok(permit) => permit,
            Err(refusal) => {
                if let Some(count) = refused.hit() {
                    tracing::warn!(%remote, %refusal, count, "TCP connection refused");
                }
                continue; // dropping the socket closes it
            }
        };
        // Parts are small and latency-bound: do not let Nagle hold their tails back.
        let _ = socket.set_nodelay(true);
        let connection = TcpConnection {
            state: state.clone(),
            alt_svc: alt_svc.clone(),
            peer: state.peer(remote),
        };
        tokio::spawn(connection.run(socket, acceptor.clone(), permit));
    }
}

/// Pauses the accept loop when accepting fails for lack of resources (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM) instead of spinning on the same error: 10 ms doubling to 1 s, like
/// Go's net/http server, with one log line per second.
#[derive(Debug, Default)]
pub(super) struct AcceptBackoff {
    delay: Option<Duration>,
    log: LogThrottle,
}

impl AcceptBackoff {
    pub(super) fn reset(&mut self) {
        self.delay = None;
    }

    pub(super) async fn failed(&mut self, error: &io::Error) {
        if let Some(count) = self.log.hit() {
            tracing::warn!(%error, count, "TCP accept failed");
        }
        // A connection reset before it was accepted says nothing about this server.
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        let delay = self.delay.map_or(Duration::from_millis(10), |d| {
            (d * 2).min(Duration::from_secs(1))
        });
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

/// One accepted TCP connection, before and after its TLS handshake.
struct TcpConnection {
    state: Arc<AppState>,
    alt_svc: Option<HeaderValue>,
    peer: Peer,
}

impl TcpConnection {
    async fn run(mut self, socket: TcpStream, tls: Option<TlsAcceptor>, permit: ConnectionPermit) {
        let _permit = permit;
        let remote = self.peer.remote();
        let limits = self.peer.limits().clone();
        let Some(acceptor) = tls else {
            let io = SendTimeout::new(socket, limits.send_timeout());
            self.peer = self.peer.unencrypted();
            return self.serve_http(io, false).await;
        };
        let tls =
            match tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(socket)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
        let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve_http(SendTimeout::new(tls, limits.send_timeout()), http2)
            .await;
    }

    /// HTTP/2 or HTTP/1.1 on `io` until the connection ends.
    async fn serve_http<T>(mut self, io: SendTimeout<T>, http2: bool)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = if http2 { "h2" } else { "h1" };
        self.peer = self.peer.speaking(protocol);
        let remote = self.peer.remote();
        let limits = self.peer.limits().clone();
        let io = TokioIo::new(io);
        let idle = IdleTracker::default();
        let progress = BodyProgress::new();
        let mut draining = self.peer.draining();
        let address = self.peer.clone();
        let cut_off = address.until_cut_off();
        let _open = self.state.metrics.http.connection(protocol);
        let sent = self.state.metrics.http.response_bytes(protocol);
        let service = {
            let (idle, progress) = (idle.clone(), progress.clone());
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let (state, alt_svc, peer) =
                    (self.state.clone(), self.alt_svc.clone(), self.peer.clone());
                let in_flight = idle.request();
                let (progress, sent) = (progress.clone(), sent.clone());
                async move {
                    let (parts, incoming) = request.into_parts();
                    let request = http::Request::from_parts(parts, ());
                    let body = if super::handler::wants_body(&state, &request, &peer) {
                        Some(read_body(incoming, peer.limits().header_timeout()).await)
                    } else {
                        None
                    };
                    let mut response = handle_with_body(&state, &request, body, &peer).await;
                    let logged = response.extensions_mut().remove::<AccessRecord>();
                    let (mut parts, body) = response.into_parts();
                    if let Some(alt_svc) = alt_svc {
                        parts.headers.insert(http::header::ALT_SVC, alt_svc);
                    }
                    let body = hyper_body(body, &progress, in_flight, (sent, logged));
                    Ok::<_, Infallible>(http::Response::from_parts(parts, body))
                }
            })
        };
        let ended = if http2 {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_streams_per_connection)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                // Clients send requests, not bodies: small receive windows bound what
                // one may park here (see README, "Limits").
                .initial_stream_window_size(REQUEST_WINDOW)
                .initial_connection_window_size(REQUEST_WINDOW * 4)
                .keep_alive_interval(limits.idle_timeout() / 2)
                .keep_alive_timeout(limits.idle_timeout() / 2);
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            // hyper closes an HTTP/2 connection only when the peer stops answering
            // pings; one that pings back but asks for nothing is idle too: GOAWAY.
            tokio::select! {
                ended = connection.as_mut() => ended,
                // A peer that grants no window: hyper writes nothing, so the socket's
                // send timeout never starts; its bodies are not asked for bytes.
                () = progress.stalled(limits.send_timeout()) => {
                    tracing::debug!(%remote, "HTTP/2 peer took no response bytes: dropped");
                    Ok(())
                }
                // Idle, the server shutting down, or the address cut off: GOAWAY,
                // in-flight streams finish.
                () = async {
                    tokio::select! {
                        () = idle.idle(limits.idle_timeout()) => {}
                        () = until_draining(&mut draining) => {}
                        () = cut_off => {}
                    }
                } => {
                    connection.as_mut().graceful_shutdown();
                    // A peer that ignores GOAWAY (or never sent its preface) is
                    // dropped one header timeout later.
                    tokio::time::timeout(limits.header_timeout(), connection)
                        .await
                        .unwrap_or(Ok(()))
                }
            }
        } else {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // hyper's header timer runs from the moment it waits for a request head, so
            // it is also the keep-alive idle timeout: the shorter of the two.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout().min(limits.idle_timeout()))
                .max_headers(limits.max_headers)
                .max_header_size(limits.max_header_bytes)
                .max_buf_size(limits.max_header_bytes.max(8192));
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                ended = connection.as_mut() => ended,
                // Shutting down, or the address cut off: the response in flight
                // finishes, then the connection closes instead of waiting for another
                // request.
                () = async {
                    tokio::select! {
                        () = until_draining(&mut draining) => {}
                        () = cut_off => {}
                    }
                } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%remote, %error, "HTTP connection ended");
        }
    }
}

/// Stream and connection receive window on HTTP/2: room for a request's headers.
const REQUEST_WINDOW: u32 = 64 << 10;

/// An admin request's body, up to [`super::admin::MAX_BODY_BYTES`] and within `timeout`;
/// none when larger, slower or broken (the admin API answers 413 or 400 then).
async fn read_body(incoming: Incoming, timeout: Duration) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(incoming, super::admin::MAX_BODY_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyError::TooLarge)
        }
        _ => Err(BodyError::Incomplete),
    }
}
