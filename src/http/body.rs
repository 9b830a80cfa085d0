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
    /// as each completes. The channel closes when the segment is complete.
    Live(mpsc::Receiver<Bytes>),
}

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
        }
    }
}

/// Yields a [`Body`]'s chunks in order.
#[derive(Debug)]
pub struct BodyChunks {
    body: Body,
    next: usize,
}

impl BodyChunks {
    /// The next chunk, waiting for it if the body is live; `None` at the end.
    pub async fn next(&mut self) -> Option<Bytes> {
        match &mut self.body {
            Body::Empty => None,
            Body::Full(b) => {
                let b = std::mem::take(b);
                self.body = Body::Empty;
                (!b.is_empty()).then_some(b)
            }
            Body::Chunks(chunks) => {
                let chunk = chunks.get(self.next).cloned();
                self.next += 1;
                chunk
            }
            Body::Live(receiver) => receiver.recv().await,
        }
    }
}
