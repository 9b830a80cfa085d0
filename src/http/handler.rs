//! The request handler, written once for both transports: a request in, a response
//! with a [`Body`] out. Routes:
//!
//! - `/` the player page, `/hls.js` its player, `/streams` the list of streams;
//! - `/{stream}/index.m3u8` the multivariant playlist;
//! - `/{stream}/{rendition}.m3u8` a rendition's media playlist (`video.m3u8` for a
//!   stream without a ladder), with blocking reload and delta updates (RFC 8216bis
//!   6.2.5);
//! - `/{stream}/{name}` init segments, parts and segments by the names the playlist
//!   gives; the hinted part is held until complete (6.2.6), a segment still being
//!   produced is sent part by part.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Body;
use super::headers::{
    self, Caching, INIT_TYPE, PLAYLIST_TYPE, SEGMENT_TYPE, Urgency, date_now, http_date,
};
use crate::llhls::blocking::{Readiness, parse_query};
use crate::llhls::live::MediaName;
use crate::store::{self, Store, StoredMedia};
use crate::stream::{LiveStream, MULTIVARIANT_PLAYLIST, Rendition, Snapshot};

/// How far past the last listed part a media request may be and still be held: the
/// hinted part is one past it; one more tolerates a player whose playlist is one update
/// behind. Anything further is a name the server does not know yet: 404 (6.2.6).
const HOLDABLE_PARTS_AHEAD: u32 = 2;

/// Everything the handler serves from.
pub struct AppState {
    /// Live streams by name.
    pub streams: HashMap<String, Arc<LiveStream>>,
    /// Media bytes.
    pub store: Store,
    /// The player page.
    pub page: Bytes,
    /// hls.js, when it was installed (`npm install` in the set-up).
    pub hls_js: Option<Bytes>,
}

/// A response under construction.
struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Complete headers built beforehand (shared playlist responses); `headers` and Date
    /// are added to them.
    prebuilt: Option<HeaderMap>,
    body: Body,
}

impl Reply {
    fn new(status: StatusCode, body: Body) -> Self {
        Self {
            status,
            headers: Vec::with_capacity(10),
            prebuilt: None,
            body,
        }
    }

    fn error(status: StatusCode, target: Duration, caching: Caching) -> Self {
        Self::new(status, Body::Empty).with(header::CACHE_CONTROL, caching.header(target))
    }

    fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Handles one request.
pub async fn handle(state: &AppState, request: &Request<()>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let reply = match *request.method() {
        Method::GET | Method::HEAD => route(state, request).await,
        Method::OPTIONS => Reply::new(StatusCode::NO_CONTENT, Body::Empty)
            .with(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            )
            .with(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("range, if-none-match"),
            )
            .with(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            ),
        _ => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            Duration::from_secs(1),
            Caching::Error,
        )
        .with(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        ),
    };
    finish(reply, head)
}

fn finish(reply: Reply, head: bool) -> Response<Body> {
    let mut headers = match reply.prebuilt {
        Some(headers) => headers,
        None => headers::common(reply.body.len()),
    };
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    headers.insert(header::DATE, date_now());
    let body = if head { Body::Empty } else { reply.body };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    *response.headers_mut() = headers;
    response
}

async fn route(state: &AppState, request: &Request<()>) -> Reply {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    let one_second = Duration::from_secs(1);
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = segments.next().unwrap_or("");
    let rest = segments.next();
    match (first, rest) {
        ("", None) => Reply::new(StatusCode::OK, Body::Full(state.page.clone()))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )
            .with(header::CACHE_CONTROL, Caching::NoStore.header(one_second)),
        ("hls.js", None) => match &state.hls_js {
            Some(js) => Reply::new(StatusCode::OK, Body::Full(js.clone()))
                .with(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript"),
                )
                .with(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
            None => Reply::error(StatusCode::NOT_FOUND, one_second, Caching::Error),
        },
        ("streams", None) => streams_json(state),
        (name, Some(resource)) => match state.streams.get(name) {
            Some(stream) => stream_resource(state, stream, resource, query, request).await,
            None => Reply::error(StatusCode::NOT_FOUND, one_second, Caching::Error),
        },
        _ => Reply::error(StatusCode::NOT_FOUND, one_second, Caching::Error),
    }
}

fn streams_json(state: &AppState) -> Reply {
    let mut names: Vec<&String> = state.streams.keys().collect();
    names.sort();
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let stream = &state.streams[*n];
            serde_json::json!({
                "name": n,
                "url": format!("/{n}/{MULTIVARIANT_PLAYLIST}"),
                "renditions": stream
                    .renditions()
                    .iter()
                    .map(|r| format!("/{n}/{}.m3u8", r.id()))
                    .collect::<Vec<_>>(),
                "status": stream.status(),
            })
        })
        .collect();
    Reply::new(
        StatusCode::OK,
        Body::Full(Bytes::from(
            serde_json::json!({ "streams": list }).to_string(),
        )),
    )
    .with(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
    .with(
        header::CACHE_CONTROL,
        Caching::NoStore.header(Duration::from_secs(1)),
    )
}

async fn stream_resource(
    state: &AppState,
    stream: &LiveStream,
    resource: &str,
    query: &str,
    request: &Request<()>,
) -> Reply {
    let target = stream.current().target_duration;
    if resource == MULTIVARIANT_PLAYLIST {
        // Before the source first opens, the codecs are not known yet.
        let Some(multivariant) = stream.multivariant() else {
            return Reply::error(StatusCode::SERVICE_UNAVAILABLE, target, Caching::Error)
                .with(header::RETRY_AFTER, HeaderValue::from_static("1"));
        };
        return Reply::new(StatusCode::OK, Body::Full(multivariant))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_TYPE),
            )
            .with(header::CACHE_CONTROL, Caching::Playlist.header(target))
            .with(
                HeaderName::from_static("priority"),
                Urgency::Playlist.header(),
            );
    }
    if let Some(rendition) = stream.rendition_by_playlist(resource) {
        return media_playlist(rendition, query, accepts_gzip(request)).await;
    }
    match stream.rendition_of_media(resource) {
        Some((rendition, snapshot, kind)) => {
            media(
                state,
                stream.name(),
                rendition,
                &snapshot,
                resource,
                kind,
                request,
            )
            .await
        }
        None => Reply::error(StatusCode::NOT_FOUND, target, Caching::Error),
    }
}

fn accepts_gzip(request: &Request<()>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Why waiting for a snapshot ended without one.
enum WaitError {
    /// Answer 400 at once.
    TooFarAhead,
    /// Held longer than allowed: 503.
    TimedOut,
    /// The stream stopped.
    Closed,
}

/// Waits until `ready` says the snapshot will do, or `deadline`.
async fn wait_for(
    receiver: &mut watch::Receiver<Arc<Snapshot>>,
    deadline: Instant,
    ready: impl Fn(&Snapshot) -> Readiness,
) -> Result<Arc<Snapshot>, WaitError> {
    loop {
        let snapshot = receiver.borrow_and_update().clone();
        match ready(&snapshot) {
            Readiness::Ready => return Ok(snapshot),
            Readiness::TooFarAhead => return Err(WaitError::TooFarAhead),
            Readiness::Wait => {}
        }
        match tokio::time::timeout_at(deadline, receiver.changed()).await {
            Err(_) => return Err(WaitError::TimedOut),
            Ok(Err(_)) => return Err(WaitError::Closed),
            Ok(Ok(())) => {}
        }
    }
}

/// 6.2.5.2: "A Server that cannot provide the requested Playlist after blocking for
/// more than three Target Durations SHOULD return Service Unavailable".
fn hold_deadline(snapshot: &Snapshot) -> Instant {
    Instant::now() + snapshot.target_duration * 3
}

async fn media_playlist(stream: &Rendition, query: &str, gzip: bool) -> Reply {
    let current = stream.current();
    let target = current.target_duration;
    let query = match parse_query(query) {
        Ok(q) => q,
        Err(error) => {
            tracing::debug!(%error, "bad playlist query");
            return Reply::error(
                StatusCode::BAD_REQUEST,
                target,
                Caching::BlockingPlaylistError,
            );
        }
    };
    let mut receiver = stream.subscribe();
    let deadline = hold_deadline(&current);
    let blocking = query.msn.is_some();
    let waited = match query.msn {
        Some(msn) => {
            wait_for(&mut receiver, deadline, |s| {
                s.position.readiness(msn, query.part, s.advance_part_limit)
            })
            .await
        }
        // A plain request before the first part is held too, rather than answered with
        // a playlist that lists nothing.
        None => {
            wait_for(&mut receiver, deadline, |s| {
                if s.has_media {
                    Readiness::Ready
                } else {
                    Readiness::Wait
                }
            })
            .await
        }
    };
    let snapshot = match waited {
        Ok(s) => s,
        Err(WaitError::TooFarAhead) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                target,
                Caching::BlockingPlaylistError,
            );
        }
        Err(WaitError::TimedOut | WaitError::Closed) => {
            return Reply::error(StatusCode::SERVICE_UNAVAILABLE, target, Caching::Error)
                .with(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
    };
    let rendered = snapshot.playlist(query.skip);
    let body = if gzip {
        rendered.gzip.clone()
    } else {
        rendered.identity.clone()
    };
    let mut reply = Reply::new(StatusCode::OK, Body::Full(body));
    reply.prebuilt = Some(
        snapshot
            .response_headers(blocking, query.skip, gzip)
            .clone(),
    );
    reply
}

impl AppState {
    /// Builds an `AppState`.
    pub fn new(
        streams: HashMap<String, Arc<LiveStream>>,
        store: Store,
        page: Bytes,
        hls_js: Option<Bytes>,
    ) -> Self {
        Self {
            streams,
            store,
            page,
            hls_js,
        }
    }
}

async fn media(
    state: &AppState,
    stream_name: &str,
    rendition: &Rendition,
    snapshot: &Snapshot,
    name: &str,
    kind: MediaName,
    request: &Request<()>,
) -> Reply {
    let target = snapshot.target_duration;
    let key = store::key(stream_name, name);
    let (content_type, urgency) = match kind {
        MediaName::Init(_) => (INIT_TYPE, Urgency::Init),
        MediaName::Part(..) => (SEGMENT_TYPE, Urgency::Part),
        MediaName::Segment(_) => (SEGMENT_TYPE, Urgency::Segment),
    };
    let stored = match (state.store.get(&key), kind) {
        (_, MediaName::Init(generation)) => match snapshot.inits.get(generation as usize) {
            Some(init) => init.clone(),
            // Before the source first opens there is none yet.
            None if snapshot.inits.is_empty() => {
                return Reply::error(StatusCode::SERVICE_UNAVAILABLE, target, Caching::Error)
                    .with(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            None => return Reply::error(StatusCode::NOT_FOUND, target, Caching::Error),
        },
        (Some(stored), _) => stored,
        (None, MediaName::Part(msn, index)) => {
            match hold_part(state, rendition, &key, msn, index).await {
                Ok(stored) => stored,
                Err(status) => return Reply::error(status, target, Caching::Error),
            }
        }
        (None, MediaName::Segment(msn)) if msn == snapshot.position.open_msn => {
            return Reply::new(
                StatusCode::OK,
                live_segment(state, stream_name, rendition, msn),
            )
            .with(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
            .with(header::CACHE_CONTROL, Caching::Immutable.header(target))
            .with(HeaderName::from_static("priority"), urgency.header());
        }
        (None, _) => return Reply::error(StatusCode::NOT_FOUND, target, Caching::Error),
    };
    let etag = HeaderValue::from_str(&format!("\"{name}\"")).ok();
    let reply = match request.headers().get(header::RANGE) {
        Some(range) => ranged(&stored, range, target),
        None => Reply::new(StatusCode::OK, Body::Chunks(stored.chunks.clone())),
    };
    let mut reply = reply
        .with(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
        .with(header::CACHE_CONTROL, Caching::Immutable.header(target))
        .with(header::LAST_MODIFIED, http_date(stored.modified))
        .with(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"))
        .with(HeaderName::from_static("priority"), urgency.header());
    if let Some(etag) = etag {
        reply = reply.with(header::ETAG, etag);
    }
    reply
}

/// RFC 8216bis 6.2.6: a request for the part the preload hint names is held until the
/// part is complete, then answered whole (no byte of a part goes before all of it can,
/// since players measure bandwidth from parts). A hint that was abandoned, or a name
/// further ahead, is 404.
async fn hold_part(
    state: &AppState,
    stream: &Rendition,
    key: &str,
    msn: u64,
    index: u32,
) -> Result<StoredMedia, StatusCode> {
    let mut receiver = stream.subscribe();
    let deadline = hold_deadline(&receiver.borrow());
    let waited = wait_for(&mut receiver, deadline, |s| {
        s.position.readiness(msn, Some(index), HOLDABLE_PARTS_AHEAD)
    })
    .await;
    match waited {
        // Listed now, or passed over (a part index past the segment's end): the store
        // has it or it never existed.
        Ok(_) => state.store.get(key).ok_or(StatusCode::NOT_FOUND),
        Err(WaitError::TooFarAhead) => Err(StatusCode::NOT_FOUND),
        Err(WaitError::TimedOut | WaitError::Closed) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// A segment still being produced: its parts, each sent as soon as it is complete.
fn live_segment(state: &AppState, stream_name: &str, rendition: &Rendition, msn: u64) -> Body {
    let (sender, receiver) = mpsc::channel(8);
    let mut snapshots = rendition.subscribe();
    let store = state.store.clone();
    let stream_name = stream_name.to_string();
    tokio::spawn(async move {
        let mut index = 0u32;
        loop {
            let deadline = hold_deadline(&snapshots.borrow());
            let listed = wait_for(&mut snapshots, deadline, |s| {
                let p = &s.position;
                let done = p.open_msn > msn || p.ended;
                if done || (p.open_msn == msn && p.open_parts > index) {
                    Readiness::Ready
                } else {
                    Readiness::Wait
                }
            })
            .await;
            let Ok(snapshot) = listed else { break };
            let name = snapshot.names.part(msn, index);
            match store.get(&store::key(&stream_name, &name)) {
                Some(part) => {
                    for chunk in part.chunks.iter() {
                        if sender.send(chunk.clone()).await.is_err() {
                            return; // the client went away
                        }
                    }
                    index += 1;
                }
                // The segment is complete and this index is past its last part.
                None => break,
            }
        }
    });
    Body::Live(receiver)
}

/// A single byte range (RFC 9110 14.1.2) of a stored resource; 416 when unsatisfiable.
fn ranged(stored: &StoredMedia, range: &HeaderValue, target: Duration) -> Reply {
    let len = stored.len();
    let unsatisfiable = || {
        Reply::error(StatusCode::RANGE_NOT_SATISFIABLE, target, Caching::Error).with(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{len}"))
                .unwrap_or(HeaderValue::from_static("bytes */0")),
        )
    };
    let Some((start, end)) = range.to_str().ok().and_then(|r| parse_range(r, len)) else {
        return unsatisfiable();
    };
    let mut out = BytesMut::with_capacity(end - start + 1);
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
    Reply::new(StatusCode::PARTIAL_CONTENT, Body::Full(out.freeze())).with(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
            .unwrap_or(HeaderValue::from_static("bytes */0")),
    )
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a resource of `len` bytes, as an
/// inclusive range; `None` when malformed, multiple or unsatisfiable.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let suffix: usize = b.parse().ok()?;
            if suffix == 0 {
                return None;
            }
            (len.saturating_sub(suffix), len - 1)
        }
        (false, true) => (a.parse().ok()?, len - 1),
        (false, false) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(len - 1)),
        (true, true) => return None,
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-0", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=-0", 100), None);
    }

    #[test]
    fn ranges_cross_part_boundaries() {
        let stored = StoredMedia {
            chunks: vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")].into(),
            modified: std::time::SystemTime::now(),
        };
        let reply = ranged(
            &stored,
            &HeaderValue::from_static("bytes=2-5"),
            Duration::from_secs(1),
        );
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        let Body::Full(bytes) = reply.body else {
            panic!("full body")
        };
        assert_eq!(&bytes[..], b"cdef");
        let reply = ranged(
            &stored,
            &HeaderValue::from_static("bytes=8-"),
            Duration::from_secs(1),
        );
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }
}
