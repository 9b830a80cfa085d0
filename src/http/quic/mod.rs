//! The QUIC transport under h3: quinn's connections and streams behind h3's `quic`
//! traits, for the server side. It does what h3-quinn does, with one difference that
//! matters to a media server: a response body chunk, which is already a shared `Bytes`
//! (a part straight from the store), goes to quinn as that `Bytes` (`write_chunks`).
//! h3-quinn writes every frame with `poll_write(&[u8])`, which copies it into a new
//! buffer: that copy was 9 % of the server's CPU while it served parts (BENCHMARKS.md).
//!
//! h3 wraps each frame in an opaque `WriteBuf` (frame header, then payload), so the
//! request task tells the stream which chunk it is about to send ([`BodyHandoff`]). The
//! stream copies the few header bytes and passes the chunk by reference when the
//! `WriteBuf`'s payload is that very memory; any other frame is copied, as before.
//!
//! It also bounds what a peer can make either side hold: frames h3 would buffer are
//! limited as they pass ([`super::frame_limit`]), a write that makes no progress for
//! the send timeout fails, and a request stream dropped before it was finished is
//! reset, never finished, so a response cut short cannot pass for a whole one (the
//! streams are in `stream`). Imports nothing of the handler.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId};

use super::frame_limit::StreamKind;

mod stream;

pub use stream::{BidiStream, RecvStream, SendStream};
use stream::{connection_error, stream_connection_error, varint};

/// What one stream may make the server hold or wait for.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Longest frame other than DATA a peer may send (h3 buffers such frames whole).
    pub max_frame: u64,
    /// A write that makes no progress for this long fails.
    pub send_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_frame: 16 << 10,
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// An accept or open in progress. quinn's accept and open futures keep their waker
/// registration only while they live, so they are kept across polls.
type Pending<T> = Pin<Box<dyn Future<Output = Result<T, quinn::ConnectionError>> + Send + Sync>>;

/// Body chunks about to be sent, by request stream id: from the request task, which has
/// the `Bytes`, to the stream, which gets only h3's `WriteBuf`. One per connection.
#[derive(Debug, Clone, Default)]
pub struct BodyHandoff(Arc<Handoff>);

#[derive(Debug, Default)]
struct Handoff {
    offered: Mutex<HashMap<u64, Bytes>>,
    /// Chunks that went to quinn by reference.
    shared: AtomicU64,
}

impl BodyHandoff {
    /// The next DATA frame on `stream` carries `chunk`.
    pub fn offer(&self, stream: StreamId, chunk: &Bytes) {
        self.offered().insert(stream.into_inner(), chunk.clone());
    }

    /// How many offered chunks were sent without a copy.
    pub fn shared_chunks(&self) -> u64 {
        self.0.shared.load(Ordering::Relaxed)
    }

    fn take(&self, stream: StreamId) -> Option<Bytes> {
        self.offered().remove(&stream.into_inner())
    }

    fn offered(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Bytes>> {
        // The map stays consistent whatever a panicking holder did: entries are only
        // inserted and removed whole.
        self.0
            .offered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A server connection.
pub struct Connection {
    quinn: quinn::Connection,
    incoming_bi: Pending<(quinn::SendStream, quinn::RecvStream)>,
    incoming_uni: Pending<quinn::RecvStream>,
    opener: Opener,
}

impl Connection {
    /// Wraps an established quinn connection; bodies offered to `bodies` are sent
    /// without copying, and every stream is held to `limits`.
    pub fn new(quinn: quinn::Connection, bodies: BodyHandoff, limits: StreamLimits) -> Self {
        Self {
            incoming_bi: accept_bi(quinn.clone()),
            incoming_uni: accept_uni(quinn.clone()),
            opener: Opener::new(quinn.clone(), bodies, limits),
            quinn,
        }
    }
}

fn accept_bi(quinn: quinn::Connection) -> Pending<(quinn::SendStream, quinn::RecvStream)> {
    Box::pin(async move { quinn.accept_bi().await })
}

fn accept_uni(quinn: quinn::Connection) -> Pending<quinn::RecvStream> {
    Box::pin(async move { quinn.accept_uni().await })
}

impl quic::Connection<Bytes> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = Opener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let accepted = ready!(self.incoming_uni.as_mut().poll(cx));
        self.incoming_uni = accept_uni(self.quinn.clone());
        let limits = self.opener.limits;
        Poll::Ready(
            accepted
                .map(|stream| {
                    RecvStream::new(stream, StreamKind::Unidirectional, limits, &self.quinn)
                })
                .map_err(connection_error),
        )
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        let accepted = ready!(self.incoming_bi.as_mut().poll(cx));
        self.incoming_bi = accept_bi(self.quinn.clone());
        let (send, recv) = accepted.map_err(connection_error)?;
        let limits = self.opener.limits;
        Poll::Ready(Ok(BidiStream {
            send: SendStream::new(send, self.opener.bodies.clone(), limits, true),
            recv: RecvStream::new(recv, StreamKind::Request, limits, &self.quinn),
        }))
    }

    fn opener(&self) -> Opener {
        Opener::new(
            self.quinn.clone(),
            self.opener.bodies.clone(),
            self.opener.limits,
        )
    }
}

impl quic::OpenStreams<Bytes> for Connection {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        self.opener.poll_open_bidi(cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        self.opener.poll_open_send(cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.opener.close(code, reason);
    }
}

/// Polls the open in progress in `slot`, starting one with `start` if there is none.
fn poll_opening<T>(
    slot: &mut Option<Pending<T>>,
    cx: &mut Context<'_>,
    start: impl FnOnce() -> Pending<T>,
) -> Poll<Result<T, quinn::ConnectionError>> {
    let opened = ready!(slot.get_or_insert_with(start).as_mut().poll(cx));
    *slot = None;
    Poll::Ready(opened)
}

/// Opens the server's own streams (HTTP/3's control and QPACK streams).
pub struct Opener {
    quinn: quinn::Connection,
    opening_bi: Option<Pending<(quinn::SendStream, quinn::RecvStream)>>,
    opening_uni: Option<Pending<quinn::SendStream>>,
    bodies: BodyHandoff,
    limits: StreamLimits,
}

impl Opener {
    fn new(quinn: quinn::Connection, bodies: BodyHandoff, limits: StreamLimits) -> Self {
        Self {
            quinn,
            opening_bi: None,
            opening_uni: None,
            bodies,
            limits,
        }
    }
}

impl quic::OpenStreams<Bytes> for Opener {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let quinn = &self.quinn;
        let opened = ready!(poll_opening(&mut self.opening_bi, cx, || {
            let quinn = quinn.clone();
            Box::pin(async move { quinn.open_bi().await })
        }));
        let (send, recv) = opened.map_err(stream_connection_error)?;
        Poll::Ready(Ok(BidiStream {
            send: SendStream::new(send, self.bodies.clone(), self.limits, true),
            recv: RecvStream::new(recv, StreamKind::Request, self.limits, &self.quinn),
        }))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        let quinn = &self.quinn;
        let opened = ready!(poll_opening(&mut self.opening_uni, cx, || {
            let quinn = quinn.clone();
            Box::pin(async move { quinn.open_uni().await })
        }));
        let send = opened.map_err(stream_connection_error)?;
        // The server's own control and QPACK streams: they end with the connection.
        Poll::Ready(Ok(SendStream::new(
            send,
            self.bodies.clone(),
            self.limits,
            false,
        )))
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.quinn.close(varint(code.value()), reason);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    // The load generator's client, a dev-dependency: a real HTTP/3 peer.
    use mirror_loadgen::client::H3Client;

    #[test]
    fn handoff_is_taken_once() {
        let bodies = BodyHandoff::default();
        let id = StreamId::try_from(4u64).unwrap();
        let chunk = Bytes::from_static(b"part");
        bodies.offer(id, &chunk);
        assert_eq!(bodies.take(id), Some(chunk));
        assert_eq!(bodies.take(id), None);
    }

    /// Over a real loopback connection, with a body larger than the client's stream
    /// window (so quinn takes it in pieces and the stream waits for credit): an offered
    /// body is sent by reference, one not offered is copied, and both arrive whole.
    #[tokio::test]
    async fn offered_body_is_sent_uncopied_and_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::load_or_generate(None, None, dir.path()).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
            crate::tls::server_config(&tls, &[b"h3"], true).unwrap(),
        )
        .unwrap();
        let endpoint = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let body = Bytes::from(
            (0..3_000_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let bodies = BodyHandoff::default();
        let server = tokio::spawn({
            let (bodies, body) = (bodies.clone(), body.clone());
            async move {
                let connection = endpoint.accept().await.unwrap().await.unwrap();
                let mut h3 = h3::server::builder()
                    .build::<_, Bytes>(Connection::new(
                        connection,
                        bodies.clone(),
                        StreamLimits::default(),
                    ))
                    .await
                    .unwrap();
                for offer in [true, false] {
                    let resolver = h3.accept().await.unwrap().unwrap();
                    let (_request, mut stream) = resolver.resolve_request().await.unwrap();
                    stream.send_response(http::Response::new(())).await.unwrap();
                    if offer {
                        bodies.offer(stream.id(), &body);
                    }
                    stream.send_data(body.clone()).await.unwrap();
                    stream.finish().await.unwrap();
                }
                // Held until the client has read everything.
                h3
            }
        });
        let client_tls = crate::tls::client_config_trusting(&tls, &[b"h3"]).unwrap();
        let client = H3Client::connect(addr, "localhost", client_tls)
            .await
            .unwrap();

        let offered = client.get("/offered").await.unwrap();
        assert_eq!(offered.status(), 200);
        assert!(offered.body == body, "offered body arrived changed");
        assert_eq!(bodies.shared_chunks(), 1);

        let copied = client.get("/copied").await.unwrap();
        assert!(copied.body == body, "copied body arrived changed");
        assert_eq!(bodies.shared_chunks(), 1);
        drop(server.await.unwrap());
    }
}
