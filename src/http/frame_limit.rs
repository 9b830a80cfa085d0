//! A bound on what h3 may buffer for one stream. h3 0.0.8 reads a whole frame into
//! memory before it looks at it (HEADERS, SETTINGS, and unknown frames it then
//! discards), so a peer that declares a frame of gigabytes and sends it slowly parks
//! that much memory per stream. This reads the frame headers of the bytes as they pass
//! from quinn to h3 and refuses a stream whose frame, other than DATA (which h3 streams
//! and Mirror does not read), is longer than the limit, or a unidirectional stream that
//! is not a control stream and carries more than that in total (QPACK streams: Mirror
//! advertises no dynamic table, so they carry next to nothing).
//!
//! Byte parsing only; never imports h3 or quinn.

/// Which stream the bytes are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A client-initiated bidirectional stream: a request, frames from the first byte.
    Request,
    /// A unidirectional stream: a stream type, then frames (control) or opaque bytes.
    Unidirectional,
}

/// What is being read.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// A unidirectional stream's type.
    StreamType,
    /// A frame's type.
    FrameType,
    /// A frame's length, for a frame of type `ty`.
    FrameLength { ty: u64 },
    /// A frame's payload: this many bytes more.
    Payload { remaining: u64 },
    /// A unidirectional stream that is not a control stream: this many bytes more are
    /// allowed.
    Opaque { allowed: u64 },
}

/// A QUIC variable-length integer read a byte at a time (RFC 9000 16).
#[derive(Debug, Clone, Copy, Default)]
struct Varint {
    value: u64,
    /// Bytes still to read; 0 before the first.
    left: u8,
    started: bool,
}

impl Varint {
    /// Takes one byte; the value once it is complete.
    fn push(&mut self, byte: u8) -> Option<u64> {
        if !self.started {
            self.started = true;
            self.left = (1u8 << (byte >> 6)) - 1;
            self.value = u64::from(byte & 0x3f);
        } else {
            self.value = (self.value << 8) | u64::from(byte);
            self.left -= 1;
        }
        (self.left == 0).then_some(self.value)
    }
}

/// HTTP/3's DATA frame type: its payload is streamed, not buffered.
const DATA: u64 = 0x00;
/// The control stream's type.
const CONTROL_STREAM: u64 = 0x00;

/// A frame or stream larger than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/3 frame or stream of {declared} bytes is over the limit of {limit}")]
pub struct TooLarge {
    /// What the peer declared (or had sent).
    pub declared: u64,
    /// The limit.
    pub limit: u64,
}

/// The frame reader of one stream.
#[derive(Debug, Clone)]
pub struct FrameLimit {
    limit: u64,
    reading: Reading,
    varint: Varint,
}

impl FrameLimit {
    /// A reader allowing frames of at most `limit` payload bytes on a stream of `kind`.
    pub fn new(kind: StreamKind, limit: u64) -> Self {
        Self {
            limit,
            reading: match kind {
                StreamKind::Request => Reading::FrameType,
                StreamKind::Unidirectional => Reading::StreamType,
            },
            varint: Varint::default(),
        }
    }

    /// Reads `bytes`, the next ones of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            match &mut self.reading {
                Reading::Payload { remaining } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.reading = Reading::FrameType;
                    }
                }
                Reading::Opaque { allowed } => {
                    let n = bytes.len() as u64;
                    if n > *allowed {
                        return Err(TooLarge {
                            declared: self.limit - *allowed + n,
                            limit: self.limit,
                        });
                    }
                    *allowed -= n;
                    bytes = &[];
                }
                _ => {
                    let byte = bytes[0];
                    bytes = &bytes[1..];
                    if let Some(value) = self.varint.push(byte) {
                        self.varint = Varint::default();
                        self.complete(value)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A varint of the current header field is complete.
    fn complete(&mut self, value: u64) -> Result<(), TooLarge> {
        self.reading = match self.reading {
            Reading::StreamType if value == CONTROL_STREAM => Reading::FrameType,
            Reading::StreamType => Reading::Opaque {
                allowed: self.limit,
            },
            Reading::FrameType => Reading::FrameLength { ty: value },
            Reading::FrameLength { ty } => {
                if ty != DATA && value > self.limit {
                    return Err(TooLarge {
                        declared: value,
                        limit: self.limit,
                    });
                }
                if value == 0 {
                    Reading::FrameType
                } else {
                    Reading::Payload { remaining: value }
                }
            }
            other => other,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A frame header: type and length as varints.
    fn frame(ty: u8, len: u64) -> Vec<u8> {
        let mut out = vec![ty];
        match len {
            0..=63 => out.push(len as u8),
            64..=16383 => out.extend_from_slice(&(0x4000 | len as u16).to_be_bytes()),
            _ => out.extend_from_slice(&(0x8000_0000 | len as u32).to_be_bytes()),
        }
        out
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut stream = frame(0x01, 100);
        stream.extend(vec![7; 100]);
        stream.extend(frame(0x00, 1_000_000)); // DATA: not buffered, any length
        stream.extend(vec![0; 1000]);
        for split in [1, 3, 7, 64, stream.len()] {
            let mut limit = FrameLimit::new(StreamKind::Request, 1024);
            for piece in stream.chunks(split) {
                limit.feed(piece).unwrap();
            }
        }
    }

    #[test]
    fn a_large_headers_frame_is_refused_at_its_header() {
        let mut limit = FrameLimit::new(StreamKind::Request, 16 << 10);
        let header = frame(0x01, 64 << 10);
        assert_eq!(
            limit.feed(&header).unwrap_err(),
            TooLarge {
                declared: 64 << 10,
                limit: 16 << 10
            }
        );
    }

    #[test]
    fn a_large_unknown_frame_on_the_control_stream_is_refused() {
        let mut limit = FrameLimit::new(StreamKind::Unidirectional, 1024);
        let mut stream = vec![0x00]; // control stream
        stream.extend(frame(0x04, 6)); // SETTINGS
        stream.extend([0x01, 0x00, 0x06, 0x00, 0x07, 0x00]);
        limit.feed(&stream).unwrap();
        assert!(limit.feed(&frame(0x21, 10 << 20)).is_err());
    }

    #[test]
    fn other_unidirectional_streams_are_bounded_in_total() {
        let mut limit = FrameLimit::new(StreamKind::Unidirectional, 1024);
        limit.feed(&[0x02]).unwrap(); // QPACK encoder stream
        limit.feed(&[0; 1000]).unwrap();
        assert!(limit.feed(&[0; 100]).is_err());
    }
}
