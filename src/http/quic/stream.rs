//! The streams under h3: each sends h3's frames to quinn (an offered body chunk by
//! reference), fails a write that makes no progress for the send timeout, is reset
//! rather than finished when dropped unfinished, and bounds what h3 may buffer of what
//! it receives ([`FrameLimit`]). Imports nothing of the handler.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;
use tokio::time::Sleep;

use super::{BodyHandoff, StreamLimits};
use crate::http::frame_limit::{FrameLimit, StreamKind};

/// The sending side of a stream.
pub struct SendStream {
    stream: quinn::SendStream,
    id: StreamId,
    /// What the last frame left to write: its header (copied) and its payload (shared
    /// when it was offered, else copied).
    unwritten: Vec<Bytes>,
    bodies: BodyHandoff,
    send_timeout: Duration,
    /// Armed while a write waits for the peer.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Finished or reset: nothing more to do when dropped.
    closed: bool,
    /// A frame has been sent (a response has begun).
    started: bool,
}

impl SendStream {
    /// `request`: a request stream, reset when dropped unfinished (the server's own
    /// control and QPACK streams end with their connection instead).
    pub(super) fn new(
        stream: quinn::SendStream,
        bodies: BodyHandoff,
        limits: StreamLimits,
        request: bool,
    ) -> Self {
        Self {
            id: stream_id(stream.id()),
            stream,
            unwritten: Vec::with_capacity(2),
            bodies,
            send_timeout: limits.send_timeout,
            stalled: None,
            closed: !request,
            started: false,
        }
    }

    /// Fails once the current write has waited the send timeout without progress.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<StreamErrorIncoming> {
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        self.stalled = None;
        quic::SendStream::reset(self, REQUEST_CANCELLED);
        Poll::Ready(StreamErrorIncoming::Unknown(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took no response bytes within the send timeout",
        ))))
    }

    /// Splits `frame` into the chunks to write: the header and `offered` itself when
    /// the frame's payload is exactly `offered`'s memory, else one copy of everything.
    fn queue(&mut self, mut frame: WriteBuf<Bytes>, offered: Option<Bytes>) {
        if let Some(body) = offered {
            let header_len = frame.chunk().len();
            if header_len + body.len() == frame.remaining() {
                let header = Bytes::copy_from_slice(frame.chunk());
                frame.advance(header_len);
                let payload = frame.chunk();
                if payload.as_ptr() == body.as_ptr() && payload.len() == body.len() {
                    frame.advance(body.len());
                    self.unwritten.push(header);
                    self.unwritten.push(body);
                    self.bodies.0.shared.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.unwritten.push(header);
            }
            // h3 framed something else than the chunk offered: correct, only slower.
            tracing::debug!(stream = %self.id, "offered body chunk not in the frame; copied");
        }
        let mut copy = Vec::with_capacity(frame.remaining());
        while frame.has_remaining() {
            let chunk = frame.chunk();
            copy.extend_from_slice(chunk);
            let n = chunk.len();
            frame.advance(n);
        }
        if !copy.is_empty() {
            self.unwritten.push(Bytes::from(copy));
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        // A chunk offered for a frame that never came (the request ended early).
        self.bodies.take(self.id);
        // quinn finishes a stream dropped unfinished, which would make a response cut
        // short look whole: reset it instead (RFC 9114 4.1.1), as rejected when no
        // response had begun (the client may retry it), else as cancelled.
        if !self.closed {
            let code = if self.started {
                REQUEST_CANCELLED
            } else {
                REQUEST_REJECTED
            };
            let _ = self.stream.reset(varint(code));
        }
    }
}

/// H3_REQUEST_CANCELLED (RFC 9114 8.1): the response will not be completed.
const REQUEST_CANCELLED: u64 = 0x010c;
/// H3_REQUEST_REJECTED: the request was not processed at all.
const REQUEST_REJECTED: u64 = 0x010b;
/// H3_EXCESSIVE_LOAD: the peer sent more than the server will hold.
const EXCESSIVE_LOAD: u64 = 0x0107;

impl quic::SendStream<Bytes> for SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while !self.unwritten.is_empty() {
            // `write_chunks` is cancel-safe and leaves its waker with the connection,
            // so a future made for one poll is enough.
            let Poll::Ready(written) = pin!(self.stream.write_chunks(&mut self.unwritten)).poll(cx)
            else {
                return self.poll_stall(cx).map(Err);
            };
            self.stalled = None;
            let written = written.map_err(write_error)?;
            // A partly written chunk has been advanced in place; whole ones are done.
            self.unwritten.drain(..written.chunks);
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if !self.unwritten.is_empty() {
            // h3 waits for poll_ready before the next frame; anything else is a bug there.
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "a frame was sent before the previous one was written".into(),
                ),
            });
        }
        let offered = self.bodies.take(self.id);
        self.started = true;
        self.queue(data.into(), offered);
        Ok(())
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        ready!(self.poll_ready(cx))?;
        self.closed = true;
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        self.unwritten.clear();
        self.closed = true;
        let _ = self.stream.reset(varint(reset_code));
    }

    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// The receiving side of a stream.
pub struct RecvStream {
    stream: quinn::RecvStream,
    id: StreamId,
    limit: FrameLimit,
    /// A unidirectional stream's connection: too much on one of those (control, QPACK)
    /// is a connection error.
    critical: Option<quinn::Connection>,
}

impl RecvStream {
    pub(super) fn new(
        stream: quinn::RecvStream,
        kind: StreamKind,
        limits: StreamLimits,
        connection: &quinn::Connection,
    ) -> Self {
        Self {
            id: stream_id(stream.id()),
            stream,
            limit: FrameLimit::new(kind, limits.max_frame),
            critical: (kind == StreamKind::Unidirectional).then(|| connection.clone()),
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        // `read_chunk` is cancel-safe and leaves its waker with the connection.
        let chunk =
            ready!(pin!(self.stream.read_chunk(usize::MAX, true)).poll(cx)).map_err(read_error)?;
        if let Some(chunk) = &chunk
            && let Err(too_large) = self.limit.feed(&chunk.bytes)
        {
            // h3 would buffer this frame whole: refuse the stream, and on a control or
            // QPACK stream the connection (h3 would take the refusal of a stream whose
            // type it has not read yet for a stream that ended, and carry on).
            let _ = self.stream.stop(varint(EXCESSIVE_LOAD));
            if let Some(connection) = &self.critical {
                connection.close(varint(EXCESSIVE_LOAD), b"frame too large");
            }
            return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(too_large))));
        }
        Poll::Ready(Ok(chunk.map(|c| c.bytes)))
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self.stream.stop(varint(error_code));
    }

    fn recv_id(&self) -> StreamId {
        self.id
    }
}

/// A request stream.
pub struct BidiStream {
    pub(super) send: SendStream,
    pub(super) recv: RecvStream,
}

impl quic::SendStream<Bytes> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl quic::BidiStream<Bytes> for BidiStream {
    type SendStream = SendStream;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

/// An HTTP/3 error code as QUIC sends it; codes beyond 2^62 (none are defined) saturate.
pub(super) fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    StreamId::try_from(u64::from(id)).expect("QUIC stream ids are varints, below 2^62")
}

pub(super) fn connection_error(error: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: close.error_code.into_inner(),
            }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

pub(super) fn stream_connection_error(error: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: connection_error(error),
    }
}

fn write_error(error: quinn::WriteError) -> StreamErrorIncoming {
    match error {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(error) => stream_connection_error(error),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn read_error(error: quinn::ReadError) -> StreamErrorIncoming {
    match error {
        quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::ReadError::ConnectionLost(error) => stream_connection_error(error),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}
