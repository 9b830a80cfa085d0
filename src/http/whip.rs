//! WHIP's HTTP side (RFC 9725): `POST /whip/{stream}` with an SDP offer and the
//! stream's publish key as bearer token → 201 with the answer and the session's
//! Location; `DELETE` on that Location, with the same token, ends the session; `OPTIONS` answers CORS
//! pre-flights, so that a page on another origin can publish. Never over plain HTTP
//! (the key would cross the network in the clear). The WebRTC side is
//! [`crate::ingest::push::whip`]; this module only translates.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};

use super::admin::{BodyError, RequestBody};
use super::headers::cache_control;
use super::peer::Peer;
use super::rejection::Rejection;
use super::reply::Reply;
use super::{AppState, Body};
use crate::ingest::push::whip::WhipRefusal;
use crate::llhls::delivery::CacheRule;

/// The page a browser publishes its camera and microphone from.
const PAGE: &str = include_str!("../web/publish.html");

/// `GET /publish`: the publish page (it works where WHIP is on).
pub(super) fn page() -> Reply {
    Reply::new(
        StatusCode::OK,
        Body::Full(Bytes::from_static(PAGE.as_bytes())),
    )
    .with(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    )
    .with(
        header::CACHE_CONTROL,
        cache_control(CacheRule::NoStore, Duration::from_secs(1)),
    )
}

/// What WHIP resources allow: a stream's endpoint takes offers, a session's URL ends it.
const ENDPOINT_METHODS: &str = "POST, OPTIONS";
const SESSION_METHODS: &str = "DELETE, OPTIONS";

/// Whether the front end should read this request's body for WHIP: a POST of an
/// offer with a bearer token, over an encrypted connection, WHIP being on.
pub(super) fn wants_body(state: &AppState, request: &Request<()>, peer: &Peer) -> bool {
    peer.encrypted()
        && state.whip.is_some()
        && *request.method() == Method::POST
        && request.uri().path().starts_with("/whip/")
        && bearer(request).is_some()
}

/// The bearer token of `request`'s Authorization header.
fn bearer(request: &Request<()>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `request` carries an SDP body.
fn is_sdp(request: &Request<()>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/sdp"))
}

/// Answers a request under `/whip/` (`path` is what follows it).
pub(super) async fn route(
    state: &AppState,
    request: &Request<()>,
    path: &str,
    body: RequestBody,
    peer: &Peer,
) -> Reply {
    let one_second = Duration::from_secs(1);
    let Some(whip) = state.whip.as_ref().filter(|_| peer.encrypted()) else {
        return Reply::reject(&Rejection::NotFound, one_second);
    };
    let (stream, session) = match path.split_once('/') {
        Some((stream, session)) => (stream, Some(session)),
        None => (path, None),
    };
    if stream.is_empty() || session.is_some_and(str::is_empty) {
        return Reply::reject(&Rejection::NotFound, one_second);
    }
    let allowed = if session.is_some() {
        SESSION_METHODS
    } else {
        ENDPOINT_METHODS
    };
    let reply = match (request.method(), session) {
        (&Method::OPTIONS, _) => Ok(options(allowed, session.is_none())),
        (&Method::POST, None) => offer(whip, request, stream, body, peer).await,
        (&Method::DELETE, Some(session)) => match bearer(request) {
            None => Err(Rejection::Whip(WhipRefusal::MissingKey)),
            Some(key) => whip
                .end(stream, session, key)
                .await
                .map(|()| Reply::new(StatusCode::OK, Body::Empty))
                .map_err(Rejection::Whip),
        },
        // RFC 9725 4.3.1: a session without trickle ICE or ICE restarts answers PATCH
        // with 405, as any other method.
        _ => Err(Rejection::NotAllowedHere(allowed)),
    };
    let reply = reply.unwrap_or_else(|rejection| {
        if let Rejection::Whip(refusal) = &rejection {
            tracing::info!(stream, remote = %peer.remote(), %refusal, "WHIP request refused");
        }
        Reply::reject(&rejection, one_second)
    });
    // Every response allows any origin already (`headers::common`): a second
    // Access-Control-Allow-Origin would make browsers refuse it. Exposed headers are a
    // list, so a second line adds the session's URL to them.
    reply.with(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("location"),
    )
}

/// The answer to OPTIONS (a CORS pre-flight, or a client asking what is accepted):
/// the methods `allowed`, and at the endpoint (`endpoint`) the offer's type.
fn options(allowed: &'static str, endpoint: bool) -> Reply {
    let reply = Reply::new(StatusCode::NO_CONTENT, Body::Empty)
        .with(header::ALLOW, HeaderValue::from_static(allowed))
        .with(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(allowed),
        )
        .with(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        )
        .with(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    if endpoint {
        reply.with(
            http::HeaderName::from_static("accept-post"),
            HeaderValue::from_static("application/sdp"),
        )
    } else {
        reply
    }
}

/// `POST /whip/{stream}`: the offer answered, the session started.
async fn offer(
    whip: &crate::ingest::push::whip::Whip,
    request: &Request<()>,
    stream: &str,
    body: RequestBody,
    peer: &Peer,
) -> Result<Reply, Rejection> {
    let key = bearer(request).ok_or(Rejection::Whip(WhipRefusal::MissingKey))?;
    if !is_sdp(request) {
        return Err(Rejection::UnsupportedMediaType("application/sdp"));
    }
    let offer = match body {
        Some(Ok(body)) => body,
        Some(Err(BodyError::TooLarge)) => return Err(Rejection::PayloadTooLarge),
        Some(Err(BodyError::Incomplete)) | None => {
            return Err(Rejection::Whip(WhipRefusal::BadOffer(
                "the body did not arrive whole".into(),
            )));
        }
    };
    let offer = std::str::from_utf8(&offer)
        .map_err(|_| Rejection::Whip(WhipRefusal::BadOffer("not UTF-8".into())))?;
    let created = whip
        .publish(stream, key, offer, peer.remote())
        .await
        .map_err(Rejection::Whip)?;
    let location = format!("/whip/{stream}/{}", created.session);
    Ok(
        Reply::new(StatusCode::CREATED, Body::Full(Bytes::from(created.answer)))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            )
            .with(
                header::LOCATION,
                HeaderValue::from_str(&location).map_err(|_| Rejection::NotFound)?,
            )
            .with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::NoStore, Duration::from_secs(1)),
            ),
    )
}
