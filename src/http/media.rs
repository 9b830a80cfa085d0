//! Init segments, parts and segments by the names a playlist gives. The hinted part is
//! held until complete and sent whole (RFC 8216bis 6.2.6); a segment still being
//! produced is sent part by part, each as soon as it is complete; a complete resource
//! comes from the store, with Range.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use tokio::sync::mpsc;

use super::Body;
use super::body::LiveChunk;
use super::handler::{hold_deadline, wait_for};
use super::headers::{INIT_TYPE, SEGMENT_TYPE, Urgency, cache_control, http_date};
use super::peer::Peer;
use super::rejection::Rejection;
use super::reply::Reply;
use crate::llhls::blocking::Readiness;
use crate::llhls::delivery::CacheRule;
use crate::llhls::live::MediaName;
use crate::store::{self, Store, StoredMedia};
use crate::stream::{Rendition, Snapshot};

/// How far past the last listed part a media request may be and still be held: the
/// hinted part is one past it; one more tolerates a player whose playlist is one update
/// behind. Anything further is a name the server does not know yet: 404 (6.2.6).
const HOLDABLE_PARTS_AHEAD: u32 = 2;

/// A request for one media resource of a rendition.
pub(super) struct MediaRequest<'a> {
    pub(super) store: &'a Store,
    pub(super) stream: &'a str,
    pub(super) rendition: &'a Rendition,
    pub(super) snapshot: &'a Snapshot,
    pub(super) name: &'a str,
    pub(super) kind: MediaName,
    /// Who asks: a held request takes one of its places.
    pub(super) peer: &'a Peer,
}

impl MediaRequest<'_> {
    /// The response: the resource, or why not.
    pub(super) async fn serve(
        &self,
        request: &Request<()>,
    ) -> Result<Reply, (Rejection, Duration)> {
        let target = self.snapshot.target_duration;
        let reject = |rejection| (rejection, target);
        let key = store::key(self.stream, self.name);
        let (content_type, urgency) = match self.kind {
            MediaName::Init(_) => (INIT_TYPE, Urgency::Init),
            MediaName::Part(..) => (SEGMENT_TYPE, Urgency::Part),
            MediaName::Segment(_) => (SEGMENT_TYPE, Urgency::Segment),
        };
        let stored = match (self.store.get(&key), self.kind) {
            (_, MediaName::Init(generation)) => {
                match self.snapshot.inits.get(generation as usize) {
                    Some(init) => init.clone(),
                    // Before the source first opens there is none yet.
                    None if self.snapshot.inits.is_empty() => {
                        return Err(reject(Rejection::NotStarted));
                    }
                    None => return Err(reject(Rejection::NotFound)),
                }
            }
            (Some(stored), _) => stored,
            (None, MediaName::Part(msn, index)) => {
                self.hold_part(&key, msn, index).await.map_err(reject)?
            }
            (None, MediaName::Segment(msn)) if msn == self.snapshot.position.open_msn => {
                // HEAD gets the headers without holding anything.
                let body = if request.method() == http::Method::HEAD {
                    Body::Empty
                } else {
                    self.live_segment(msn).map_err(reject)?
                };
                return Ok(Reply::new(StatusCode::OK, body)
                    .with(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
                    .with(
                        header::CACHE_CONTROL,
                        cache_control(CacheRule::Immutable, target),
                    )
                    .with(HeaderName::from_static("priority"), urgency.header()));
            }
            (None, MediaName::Segment(msn)) if msn > self.snapshot.position.open_msn => {
                return Err(reject(Rejection::NotYet));
            }
            (None, _) => return Err(reject(Rejection::NotFound)),
        };
        let etag = HeaderValue::from_str(&format!("\"{}\"", self.name)).ok();
        let reply = match request.headers().get(header::RANGE) {
            Some(range) => ranged(&stored, range).map_err(reject)?,
            None => Reply::new(StatusCode::OK, Body::Chunks(stored.chunks.clone())),
        };
        let mut reply = reply
            .with(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
            .with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::Immutable, target),
            )
            .with(header::LAST_MODIFIED, http_date(stored.modified))
            .with(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
            .with(HeaderName::from_static("priority"), urgency.header());
        if let Some(etag) = etag {
            reply = reply.with(header::ETAG, etag);
        }
        Ok(reply)
    }

    /// RFC 8216bis 6.2.6: a request for the part the preload hint names is held until
    /// the part is complete, then answered whole (no byte of a part goes before all of
    /// it can, since players measure bandwidth from parts). A hint that was abandoned,
    /// or a name further ahead, is 404.
    async fn hold_part(&self, key: &str, msn: u64, index: u32) -> Result<StoredMedia, Rejection> {
        let mut receiver = self.rendition.subscribe();
        let deadline = hold_deadline(&receiver.borrow());
        let waited = wait_for(&mut receiver, deadline, Some(self.peer), |s| {
            s.position.readiness(msn, Some(index), HOLDABLE_PARTS_AHEAD)
        })
        .await;
        match waited {
            // Listed now, or passed over (a part index past the segment's end): the
            // store has it or it never existed.
            Ok(_) => self.store.get(key).ok_or(Rejection::NotFound),
            Err(Rejection::DirectiveTooFarAhead) => Err(Rejection::NotYet),
            Err(other) => Err(other),
        }
    }

    /// A segment still being produced: its parts, each sent as soon as it is complete.
    /// The request is held until the segment is: it takes one place for that whole time.
    fn live_segment(&self, msn: u64) -> Result<Body, Rejection> {
        let held = self.peer.hold().map_err(Rejection::TooManyRequests)?;
        let (sender, receiver) = mpsc::channel(8);
        let mut snapshots = self.rendition.subscribe();
        let store = self.store.clone();
        let stream = self.stream.to_string();
        tokio::spawn(async move {
            let _held = held;
            let mut index = 0u32;
            loop {
                let deadline = hold_deadline(&snapshots.borrow());
                let waited = wait_for(&mut snapshots, deadline, None, |s| {
                    let p = &s.position;
                    let done = p.open_msn > msn || p.ended;
                    if done || (p.open_msn == msn && p.open_parts > index) {
                        Readiness::Ready
                    } else {
                        Readiness::Wait
                    }
                });
                // A client that went away frees its place now, not at the next part.
                let listed = tokio::select! {
                    listed = waited => listed,
                    () = sender.closed() => return,
                };
                // A hold that timed out or a stream that stopped: the channel closes
                // without `Complete`, and the front end ends the response as cut.
                let Ok(snapshot) = listed else { return };
                let name = snapshot.names.part(msn, index);
                match store.get(&store::key(&stream, &name)) {
                    Some(part) => {
                        for chunk in part.chunks.iter() {
                            if sender.send(LiveChunk::Bytes(chunk.clone())).await.is_err() {
                                return; // the client went away
                            }
                        }
                        index += 1;
                    }
                    // The segment is complete and every one of its parts has been sent.
                    None if parts_of(&snapshot.position, msn) == Some(index) => {
                        let _ = sender.send(LiveChunk::Complete).await;
                        return;
                    }
                    // The stream ended with this segment unfinished, or its part left
                    // the store: what was sent is not the segment.
                    None => return,
                }
            }
        });
        Ok(Body::Live(receiver))
    }
}

/// How many parts segment `msn` has, once it is complete and still listed.
fn parts_of(position: &crate::llhls::blocking::Position, msn: u64) -> Option<u32> {
    if msn >= position.open_msn {
        return None;
    }
    let offset = usize::try_from(msn.checked_sub(position.first_msn)?).ok()?;
    position.complete_part_counts.get(offset).copied()
}

/// What a Range header asks of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// Ignore it and send the whole resource (RFC 9110 14.2): a unit other than bytes,
    /// which a server MUST ignore, several ranges (players ask for one, and a multipart
    /// body would copy what is otherwise shared), or a ranges-specifier that is not
    /// valid (a last position before the first, bad syntax), which a server MAY ignore.
    Whole,
    /// These bytes, inclusive.
    Bytes(usize, usize),
    /// A valid range that selects nothing of the resource: 416 (15.5.17).
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 14.1.2) against a resource of `len`
/// bytes: the syntax parsed by `http-range-header`, satisfiability decided here, since
/// its check refuses a suffix longer than the resource, which RFC 9110 14.1.1 says
/// selects all of it.
fn byte_range(value: &str, len: usize) -> RangeAsk {
    use http_range_header::{EndPosition, StartPosition};
    let value = value.trim();
    let Some((unit, ranges)) = value.split_once('=') else {
        return RangeAsk::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || ranges.contains(',') {
        return RangeAsk::Whole;
    }
    // 14.1.1: a suffix range is satisfiable only if its length is not zero (the parser
    // calls `-0` invalid, which would be ignored).
    if ranges
        .trim()
        .strip_prefix('-')
        .and_then(|n| n.parse::<u64>().ok())
        == Some(0)
    {
        return RangeAsk::Unsatisfiable;
    }
    // Range units are case-insensitive (14.1); the parser knows only `bytes=`.
    let Ok(parsed) = http_range_header::parse_range_header(&format!("bytes={}", ranges.trim()))
    else {
        return RangeAsk::Whole;
    };
    let [range] = parsed.ranges.as_slice() else {
        return RangeAsk::Whole;
    };
    let len = len as u64;
    let Some(last) = len.checked_sub(1) else {
        return RangeAsk::Unsatisfiable;
    };
    let (start, end) = match (range.start, range.end) {
        (StartPosition::Index(start), EndPosition::Index(end)) if end < start => {
            return RangeAsk::Whole;
        }
        (StartPosition::Index(start), EndPosition::Index(end)) => (start, end.min(last)),
        (StartPosition::Index(start), EndPosition::LastByte) => (start, last),
        (StartPosition::FromLast(suffix), _) => (len - suffix.min(len), last),
    };
    if start > end {
        return RangeAsk::Unsatisfiable;
    }
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(start), Ok(end)) => RangeAsk::Bytes(start, end),
        _ => RangeAsk::Unsatisfiable,
    }
}

/// A stored resource for a request with a Range header: one byte range of it (206),
/// all of it when the header is to be ignored (200), or 416.
fn ranged(stored: &StoredMedia, range: &HeaderValue) -> Result<Reply, Rejection> {
    let len = stored.len();
    let ask = range
        .to_str()
        .map_or(RangeAsk::Whole, |r| byte_range(r, len));
    let (start, end) = match ask {
        RangeAsk::Whole => {
            return Ok(Reply::new(
                StatusCode::OK,
                Body::Chunks(stored.chunks.clone()),
            ));
        }
        RangeAsk::Bytes(start, end) => (start, end),
        RangeAsk::Unsatisfiable => return Err(Rejection::RangeNotSatisfiable { length: len }),
    };
    let mut out = bytes::BytesMut::with_capacity(end - start + 1);
    let mut offset = 0;
    for chunk in stored.chunks.iter() {
        let (chunk_start, chunk_end) = (offset, offset + chunk.len());
        offset = chunk_end;
        if chunk_end <= start || chunk_start > end {
            continue;
        }
        let from = start.saturating_sub(chunk_start);
        let to = (end + 1 - chunk_start).min(chunk.len());
        out.extend_from_slice(&chunk[from..to]);
    }
    Ok(
        Reply::new(StatusCode::PARTIAL_CONTENT, Body::Full(out.freeze())).with(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                .unwrap_or(HeaderValue::from_static("bytes */0")),
        ),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn range_of(stored: &StoredMedia, value: &'static str) -> Result<(u16, Vec<u8>), Rejection> {
        let reply = ranged(stored, &HeaderValue::from_static(value))?;
        let bytes = match reply.body {
            Body::Full(bytes) => bytes.to_vec(),
            Body::Chunks(chunks) => chunks.concat(),
            _ => panic!("a stored body"),
        };
        Ok((reply.status.as_u16(), bytes))
    }

    #[test]
    fn ranges_cross_part_boundaries_bad_ones_are_416_and_others_ignored() {
        let stored = StoredMedia {
            chunks: vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")].into(),
            modified: std::time::SystemTime::now(),
        };
        let part = |bytes: &[u8]| Ok((206, bytes.to_vec()));
        assert_eq!(range_of(&stored, "bytes=2-5"), part(b"cdef"));
        assert_eq!(range_of(&stored, "bytes=6-"), part(b"gh"));
        assert_eq!(range_of(&stored, "bytes=-3"), part(b"fgh"));
        assert_eq!(range_of(&stored, "bytes=5-500"), part(b"fgh"));
        // RFC 9110 14.1.1: a suffix longer than the resource selects all of it.
        assert_eq!(range_of(&stored, "bytes=-100"), part(b"abcdefgh"));
        assert_eq!(range_of(&stored, " bytes=0-0 "), part(b"a"));
        assert_eq!(range_of(&stored, "Bytes=1-1"), part(b"b"));
        for unsatisfiable in ["bytes=8-", "bytes=100-200", "bytes=-0"] {
            assert_eq!(
                range_of(&stored, unsatisfiable),
                Err(Rejection::RangeNotSatisfiable { length: 8 }),
                "{unsatisfiable}"
            );
        }
        // RFC 9110 14.2: an unknown unit is ignored, and so (a server's choice) are
        // several ranges and invalid ones: the whole resource, 200.
        for ignored in [
            "items=0-1",
            "bytes=0-1,4-5",
            "bytes=5-2",
            "bytes=abc",
            "bytes",
            "",
        ] {
            assert_eq!(
                range_of(&stored, ignored),
                Ok((200, b"abcdefgh".to_vec())),
                "{ignored}"
            );
        }
        assert_eq!(
            byte_range("bytes=0-", 0),
            RangeAsk::Unsatisfiable,
            "nothing to send of an empty resource"
        );
    }
}
