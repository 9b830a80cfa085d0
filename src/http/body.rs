//! Response bodies, as both front ends send them.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// No body (errors, HEAD, 304).
    Empty,
    /// One buffer.
    Full(Bytes),
    /// Buffers sent one after another: a segment as its parts, never concatenated.
    Chunks(Arc<[Bytes]>),
    /// Chunks that do not exist yet: a segment still being produced, sent part by part
    /// as each completes. The producer ends it with [`LiveChunk::Complete`]; a channel
    /// that closes without it is a body cut short ([`BodyCut`]).
    Live(mpsc::Receiver<LiveChunk>),
}

/// What the producer of a live body sends.
#[derive(Debug)]
pub enum LiveChunk {
    /// The next bytes.
    Bytes(Bytes),
    /// The body is whole: nothing follows.
    Complete,
}

/// A body that ended before it was whole (its segment stopped being produced). The
/// front ends end such a response as an error, so that no cache keeps the short bytes
/// under the name the whole segment gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the response was cut short: its segment stopped before it was complete")]
pub struct BodyCut;

impl Body {
    /// The length, when known before sending.
    pub fn len(&self) -> Option<usize> {
        match self {
            Body::Empty => Some(0),
            Body::Full(b) => Some(b.len()),
            Body::Chunks(c) => Some(c.iter().map(Bytes::len).sum()),
            Body::Live(_) => None,
        }
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Turns the body into a reader of its chunks.
    pub fn into_chunks(self) -> BodyChunks {
        BodyChunks {
            body: self,
            next: 0,
            done: false,
        }
    }
}

/// Yields a [`Body`]'s chunks in order.
#[derive(Debug)]
pub struct BodyChunks {
    body: Body,
    next: usize,
    /// A live body ended (whole or cut).
    done: bool,
}

impl BodyChunks {
    /// The next chunk, waiting for it if the body is live; `None` at the end, and
    /// [`BodyCut`] once, instead of the end, for a live body that stopped short.
    pub async fn next(&mut self) -> Option<Result<Bytes, BodyCut>> {
        match &mut self.body {
            Body::Empty => None,
            Body::Full(b) => {
                let b = std::mem::take(b);
                self.body = Body::Empty;
                (!b.is_empty()).then_some(Ok(b))
            }
            Body::Chunks(chunks) => {
                let chunk = chunks.get(self.next).cloned();
                self.next += 1;
                chunk.map(Ok)
            }
            Body::Live(_) if self.done => None,
            Body::Live(receiver) => match receiver.recv().await {
                Some(LiveChunk::Bytes(b)) => Some(Ok(b)),
                Some(LiveChunk::Complete) => {
                    self.done = true;
                    None
                }
                None => {
                    self.done = true;
                    Some(Err(BodyCut))
                }
            },
        }
    }
}
