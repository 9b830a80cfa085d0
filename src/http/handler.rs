//! The request handler, written once for both transports: a request in, a response
//! with a [`Body`] out. Routes:
//!
//! - `/` the player page (`/status` the same page with the operator's status view),
//!   `/hls.js` its player, `/streams` the list of streams, `/metrics`, `/healthz`,
//!   `/readyz` ([`super::ops`]);
//! - `/publish` the page a browser publishes its camera from, `/whip/…` WHIP
//!   ([`super::whip`]);
//! - `/admin/…` the admin API when a token is configured, never over plain HTTP
//!   ([`super::admin`]);
//! - `/{stream}/index.m3u8` the multivariant playlist;
//! - `/{stream}/{rendition}.m3u8` a rendition's media playlist (`video.m3u8` for a
//!   stream without a ladder), with blocking reload and delta updates (RFC 8216bis
//!   6.2.5);
//! - `/{stream}/{name}` init segments, parts and segments by the names the playlist
//!   gives ([`super::media`]).
//!
//! It serves from [`AppState`]: the streams' handles (their snapshot receivers) and the
//! store, so tests drive it with hand-published snapshots, no source and no socket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Body;
use super::access::{AccessLog, AccessRecord};
use super::clients::Clients;
use super::headers::{self, PLAYLIST_TYPE, Urgency, accepts_gzip, cache_control};
use super::limits::Limits;
use super::peer::{HoldPermit, Peer};
use super::rejection::{ALLOWED_METHODS, Rejection};
use super::reply::{Reply, finish};
use crate::llhls::blocking::{Readiness, parse_query};
use crate::llhls::delivery::{CacheRule, DeliveryForm, Encoding, Reload};
use crate::llhls::live::MediaName;
use crate::metrics::{Metrics, Route};
use crate::store::Store;
use crate::stream::{MULTIVARIANT_PLAYLIST, Rendition, Snapshot, StreamHandle, StreamRegistry};

/// Everything the handler serves from.
pub struct AppState {
    /// The streams served, by name (added, replaced and removed while serving).
    pub streams: Arc<StreamRegistry>,
    /// Media bytes.
    pub store: Store,
    /// The player page.
    pub page: Bytes,
    /// hls.js, when it was installed (`npm install` in the set-up).
    pub hls_js: Option<Bytes>,
    /// Every client's share: connections, request rate, held requests.
    pub clients: Arc<Clients>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// Which responses the access log writes.
    pub access: AccessLog,
    /// The admin API, when a token is configured.
    pub admin: Option<super::admin::Admin>,
    /// Who may watch each stream.
    pub auth: Arc<super::auth::Access>,
    /// WHIP publishing, when `[push] whip_listen` is set.
    pub whip: Option<crate::ingest::push::whip::Whip>,
}

impl AppState {
    /// Builds an `AppState` serving `streams`, with the default `[limits]`.
    pub fn new(
        streams: impl IntoIterator<Item = StreamHandle>,
        store: Store,
        page: Bytes,
        hls_js: Option<Bytes>,
    ) -> Self {
        let streams = StreamRegistry::new(streams);
        let metrics = Arc::new(Metrics::new(&streams, &store));
        Self {
            streams,
            store,
            page,
            hls_js,
            clients: Clients::new(Limits::default()),
            metrics,
            access: AccessLog::new(1),
            admin: None,
            auth: Arc::default(),
            whip: None,
        }
    }

    /// The same, taking WHIP publishers through `whip`.
    pub fn with_whip(mut self, whip: crate::ingest::push::whip::Whip) -> Self {
        self.whip = Some(whip);
        self
    }

    /// The same, admitting viewers by `auth`'s rules.
    pub fn with_auth(mut self, auth: Arc<super::auth::Access>) -> Self {
        self.auth = auth;
        self
    }

    /// The same, with the admin API on.
    pub fn with_admin(mut self, admin: super::admin::Admin) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The same, logging one response in `every` (0: none).
    pub fn with_access_log(mut self, every: u64) -> Self {
        self.access = AccessLog::new(every);
        self
    }

    /// The same, enforcing `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.clients = Clients::new(limits);
        self
    }

    /// The peer of a new connection from `remote`.
    pub fn peer(&self, remote: std::net::SocketAddr) -> Peer {
        Peer::new(remote, self.clients.clone(), self.metrics.clone())
    }
}

/// Whether the front end should read the body of `request` from `peer`: an admin
/// API call or a WHIP offer by someone with credentials, nobody else.
pub fn wants_body(state: &AppState, request: &Request<()>, peer: &Peer) -> bool {
    super::admin::wants_body(state, request, peer) || super::whip::wants_body(state, request, peer)
}

/// Handles one request from `peer`.
pub async fn handle(state: &AppState, request: &Request<()>, peer: &Peer) -> Response<Body> {
    handle_with_body(state, request, None, peer).await
}

/// Handles one request from `peer` whose body the front end read because
/// [`wants_body`] said so (`None`: not read).
pub async fn handle_with_body(
    state: &AppState,
    request: &Request<()>,
    body: super::admin::RequestBody,
    peer: &Peer,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let head = request.method() == Method::HEAD;
    let one_second = Duration::from_secs(1);
    let reply = if let Err(refusal) = peer.admit_request() {
        Reply::reject(&Rejection::TooManyRequests(refusal), one_second)
    } else if headers_too_large(request.headers(), peer.limits()) {
        Reply::reject(&Rejection::HeaderFieldsTooLarge, one_second)
    } else if let Some(path) = request.uri().path().strip_prefix("/whip/") {
        super::whip::route(state, request, path, body, peer).await
    } else {
        let admin = request.uri().path().strip_prefix("/admin/");
        match (request.method(), admin) {
            // Never over plain HTTP (the cache tier's listener): the token would cross
            // the network in the clear.
            (_, Some(path)) if peer.encrypted() => {
                super::admin::route(state, request, path, body).await
            }
            (_, Some(_)) => Reply::reject(&Rejection::NotFound, one_second),
            (&Method::GET | &Method::HEAD, None) => route(state, request, peer).await,
            (&Method::OPTIONS, None) => Reply::new(StatusCode::NO_CONTENT, Body::Empty)
                .with(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(ALLOWED_METHODS),
                )
                .with(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("range, if-none-match"),
                )
                .with(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                ),
            _ => Reply::reject(&Rejection::MethodNotAllowed, one_second),
        }
    };
    let status = reply.status.as_u16();
    state
        .metrics
        .http
        .request(protocol(request), reply.route, status);
    let mut response = finish(reply, head);
    if state.access.sampled() {
        response
            .extensions_mut()
            .insert(access_record(state, request, peer, status, started));
    }
    response
}

/// What the access log says of this request; the front end adds the bytes it sends.
fn access_record(
    state: &AppState,
    request: &Request<()>,
    peer: &Peer,
    status: u16,
    started: std::time::Instant,
) -> AccessRecord {
    let (_, path) = super::auth::split_token(request.uri().path());
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, resource) = (parts.next().unwrap_or(""), parts.next());
    let stream = resource.and_then(|_| state.streams.get(first));
    let rendition = stream
        .as_ref()
        .zip(resource)
        .and_then(
            |(stream, resource)| match stream.rendition_by_playlist(resource) {
                Some(rendition) => Some(rendition.id().to_string()),
                None => stream
                    .rendition_of_media(resource)
                    .map(|(rendition, ..)| rendition.id().to_string()),
            },
        );
    AccessRecord {
        started,
        remote: peer.remote(),
        protocol: protocol(request),
        method: request.method().clone(),
        // A playback token is a credential: the log shows where it was, not what.
        target: super::auth::redacted_target(request.uri().path(), request.uri().query()),
        stream: stream.map(|s| s.name().to_string()),
        rendition,
        status,
        ready_after: started.elapsed(),
        bytes: 0,
        complete: false,
    }
}

/// The label of the HTTP version `request` came over.
pub(super) fn protocol(request: &Request<()>) -> crate::metrics::Protocol {
    match request.version() {
        http::Version::HTTP_3 => "h3",
        http::Version::HTTP_2 => "h2",
        _ => "h1",
    }
}

/// More fields, or more bytes of them, than `limits` allow, counted as RFC 9114 4.2.2
/// and RFC 9113 6.5.2 do (name, value and 32 bytes each). HTTP/1.1 is held to the same
/// by hyper before it gets here, HTTP/3's size by h3; this makes all three agree.
fn headers_too_large(headers: &HeaderMap, limits: &Limits) -> bool {
    if headers.len() > limits.max_headers {
        return true;
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    bytes > limits.max_header_bytes
}

async fn route(state: &AppState, request: &Request<()>, peer: &Peer) -> Reply {
    // `/t/TOKEN/…`: the same resource, with a playback token (see `super::auth`).
    let (token, path) = super::auth::split_token(request.uri().path());
    let query = request.uri().query().unwrap_or("");
    let one_second = Duration::from_secs(1);
    // The plain-HTTP listener, with a CDN secret configured, serves the CDN only (its
    // health checks aside): `/streams` and `/metrics` name every stream.
    if !matches!(path, "/healthz" | "/readyz")
        && let Err(denial) = state.auth.check_listener(request, peer)
    {
        peer.metrics().http.denied(denial.as_str());
        return Reply::reject(&Rejection::Denied(denial), one_second);
    }
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = segments.next().unwrap_or("");
    let rest = segments.next();
    match (first, rest) {
        // The status view is the same page: it polls `/streams` and `/metrics` only when
        // opened as `/status`, so viewers of `/` never load the origin with them.
        ("" | "status", None) => Reply::new(StatusCode::OK, Body::Full(state.page.clone()))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )
            .with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::NoStore, one_second),
            ),
        ("publish", None) => super::whip::page(),
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
            None => Reply::reject(&Rejection::NotFound, one_second),
        },
        ("streams" | "metrics", None) => {
            let operator = state.auth.carries_cdn_secret(request)
                || state.admin.as_ref().is_some_and(|a| a.authorised(request));
            match state.auth.check_ops(operator) {
                Err(denial) => {
                    peer.metrics().http.denied(denial.as_str());
                    Reply::reject(&Rejection::Denied(denial), one_second)
                }
                Ok(()) if first == "streams" => {
                    super::ops::streams(state, |name| state.auth.lists(name, operator))
                }
                Ok(()) => super::ops::metrics(state, request),
            }
        }
        ("healthz", None) => super::ops::healthz(),
        ("readyz", None) => super::ops::readyz(state),
        (name, Some(super::auth::PREFLIGHT)) => {
            match state.auth.preflight(name, token, request, peer) {
                Ok((admission, keep)) => {
                    let scope = if admission == super::auth::Admission::BearerToken {
                        "private"
                    } else {
                        "public"
                    };
                    Reply::new(StatusCode::NO_CONTENT, Body::Empty).with(
                        header::CACHE_CONTROL,
                        HeaderValue::from_str(&format!("{scope}, max-age={keep}"))
                            .unwrap_or(HeaderValue::from_static("no-store")),
                    )
                }
                Err(denial) => {
                    peer.metrics().http.denied(denial.as_str());
                    Reply::reject(&Rejection::Denied(denial), one_second)
                }
            }
        }
        (name, Some(resource)) => {
            let admission = match state.auth.check(name, token, request, peer) {
                Ok(admission) => admission,
                Err(denial) => {
                    peer.metrics().http.denied(denial.as_str());
                    return Reply::reject(&Rejection::Denied(denial), one_second);
                }
            };
            let mut reply =
                live_or_retiring(state, name, token, resource, query, request, peer).await;
            reply.private |= admission == super::auth::Admission::BearerToken;
            reply
        }
        _ => Reply::reject(&Rejection::NotFound, one_second),
    }
}

/// A resource of stream `name`, or of the stream that held the name lately (deleted,
/// or replaced under its name): its names are served until it retires.
async fn live_or_retiring(
    state: &AppState,
    name: &str,
    token: Option<&str>,
    resource: &str,
    query: &str,
    request: &Request<()>,
    peer: &Peer,
) -> Reply {
    let live = match state.streams.get(name) {
        Some(stream) => {
            let reply = stream_resource(state, &stream, resource, query, request, peer).await;
            if reply.status != StatusCode::NOT_FOUND {
                return reply;
            }
            Some(reply)
        }
        None => None,
    };
    match state.streams.retiring(name) {
        // Under the policy it had: a token stream replaced by a public one keeps its
        // old names closed.
        Some(old) => match state.auth.check_retiring(name, token, request, peer) {
            Ok(admission) => {
                let mut reply = stream_resource(state, &old, resource, query, request, peer).await;
                reply.private = admission == super::auth::Admission::BearerToken;
                reply
            }
            Err(denial) => {
                peer.metrics().http.denied(denial.as_str());
                Reply::reject(&Rejection::Denied(denial), Duration::from_secs(1))
            }
        },
        None => live.unwrap_or_else(|| Reply::reject(&Rejection::NotFound, Duration::from_secs(1))),
    }
}

async fn stream_resource(
    state: &AppState,
    stream: &StreamHandle,
    resource: &str,
    query: &str,
    request: &Request<()>,
    peer: &Peer,
) -> Reply {
    let target = stream.current().target_duration;
    if resource == MULTIVARIANT_PLAYLIST {
        // Before the source first opens, the codecs are not known yet.
        let Some(multivariant) = stream.multivariant() else {
            return Reply::reject(&Rejection::NotStarted, target).for_route(Route::Multivariant);
        };
        return Reply::new(StatusCode::OK, Body::Full(multivariant))
            .for_route(Route::Multivariant)
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PLAYLIST_TYPE),
            )
            .with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::Playlist, target),
            )
            .with(
                HeaderName::from_static("priority"),
                Urgency::Playlist.header(),
            );
    }
    if let Some(rendition) = stream.rendition_by_playlist(resource) {
        let encoding = if accepts_gzip(request.headers()) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        };
        let route = if query.contains("_HLS_msn") {
            Route::BlockingPlaylist
        } else {
            Route::Playlist
        };
        return Reply::from(media_playlist(rendition, query, encoding, peer).await)
            .for_route(route);
    }
    match stream.rendition_of_media(resource) {
        Some((rendition, snapshot, kind)) => {
            let route = match kind {
                MediaName::Init(_) => Route::Init,
                MediaName::Part(..) => Route::Part,
                MediaName::Segment(_) => Route::Segment,
            };
            if route != Route::Init {
                state
                    .metrics
                    .viewer(stream.name(), rendition.id(), peer.connection());
            }
            // A hint asked for with its last character cut off is stored, and tagged,
            // under its whole name.
            let whole_name = match kind {
                MediaName::Part(msn, index) if !resource.ends_with(".m4s") => {
                    std::borrow::Cow::Owned(snapshot.names.part(msn, index))
                }
                _ => std::borrow::Cow::Borrowed(resource),
            };
            let media = super::media::MediaRequest {
                store: &state.store,
                stream: stream.name(),
                rendition,
                snapshot: &snapshot,
                name: &whole_name,
                kind,
                peer,
            };
            Reply::from(media.serve(request).await).for_route(route)
        }
        None => Reply::reject(&Rejection::NotFound, target),
    }
}

/// Waits until `ready` says the snapshot will do, or `deadline`. A request that has to
/// wait takes one of `holder`'s places for held requests first (none: the caller holds
/// one already), and is refused 429 when there is none.
pub(super) async fn wait_for(
    receiver: &mut watch::Receiver<Arc<Snapshot>>,
    deadline: Instant,
    holder: Option<&Peer>,
    ready: impl Fn(&Snapshot) -> Readiness,
) -> Result<Arc<Snapshot>, Rejection> {
    let mut held: Option<HoldPermit> = None;
    let mut draining = holder.map(Peer::draining);
    loop {
        let snapshot = receiver.borrow_and_update().clone();
        match ready(&snapshot) {
            Readiness::Ready => {
                if let (Some(_), Some(peer)) = (&held, holder) {
                    let since = SystemTime::now().duration_since(snapshot.updated_at);
                    peer.metrics()
                        .http
                        .woke(peer.protocol(), since.unwrap_or_default());
                }
                return Ok(snapshot);
            }
            Readiness::TooFarAhead => return Err(Rejection::DirectiveTooFarAhead),
            Readiness::Wait => {}
        }
        if held.is_none()
            && let Some(peer) = holder
        {
            held = Some(peer.hold().map_err(Rejection::TooManyRequests)?);
        }
        let shutting_down = async {
            match draining.as_mut() {
                Some(draining) => super::peer::until_draining(draining).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, receiver.changed()) => match changed {
                Err(_) => return Err(Rejection::HoldTimedOut),
                Ok(Err(_)) => return Err(Rejection::StreamStopped),
                Ok(Ok(())) => {}
            },
            () = shutting_down => return Err(Rejection::ShuttingDown),
        }
    }
}

/// 6.2.5.2: "A Server that cannot provide the requested Playlist after blocking for
/// more than three Target Durations SHOULD return Service Unavailable".
pub(super) fn hold_deadline(snapshot: &Snapshot) -> Instant {
    Instant::now() + snapshot.target_duration * 3
}

async fn media_playlist(
    rendition: &Rendition,
    query: &str,
    encoding: Encoding,
    peer: &Peer,
) -> Result<Reply, (Rejection, Duration)> {
    let current = rendition.current();
    let target = current.target_duration;
    let query = parse_query(query).map_err(|error| (Rejection::BadDirective(error), target))?;
    let mut receiver = rendition.subscribe();
    let deadline = hold_deadline(&current);
    let waited = match query.msn {
        Some(msn) => {
            wait_for(&mut receiver, deadline, Some(peer), |s| {
                s.position.readiness(msn, query.part, s.advance_part_limit)
            })
            .await
        }
        // A plain request before the first part is held too, rather than answered with
        // a playlist that lists nothing.
        None => {
            wait_for(&mut receiver, deadline, Some(peer), |s| {
                if s.has_media {
                    Readiness::Ready
                } else {
                    Readiness::Wait
                }
            })
            .await
        }
    };
    let snapshot = waited.map_err(|rejection| (rejection, target))?;
    let (body, encoding) = snapshot.playlist.rendered(query.skip).body(encoding);
    let form = DeliveryForm {
        reload: if query.msn.is_some() {
            Reload::Blocking
        } else {
            Reload::Plain
        },
        skip: query.skip,
        encoding,
    };
    let prebuilt = snapshot.per_form[form.index()].get_or_init(|| {
        let etag_prefix = format!(
            "{}-{}",
            snapshot.names.init().trim_end_matches("-init.mp4"),
            snapshot.sequence
        );
        headers::playlist_response(
            body.len(),
            form,
            snapshot.position.ends_at_segment_boundary(),
            snapshot.target_duration,
            snapshot.updated_at,
            &etag_prefix,
        )
    });
    let mut reply = Reply::new(StatusCode::OK, Body::Full(body.clone()));
    reply.prebuilt = Some(prebuilt.clone());
    Ok(reply)
}
