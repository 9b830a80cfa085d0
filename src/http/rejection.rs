//! Every way the handler refuses a request, each with exactly one status, one
//! Cache-Control rule and one body, so that the same refusal looks the same on every
//! path, to players and to the caches in front of them.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};

use super::auth::Denial;
use super::clients::Refusal;
use crate::ingest::push::whip::WhipRefusal;
use crate::llhls::blocking::QueryError;
use crate::llhls::delivery::CacheRule;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No such stream, rendition or resource, or a media name that is neither listed
    /// nor hinted (RFC 8216bis 6.2.6 only holds requests for the hinted part).
    #[error("not found")]
    NotFound,
    /// A playlist query the server cannot honour (6.2.5.2: `_HLS_part` without
    /// `_HLS_msn`, or a directive that is not a number).
    #[error("bad delivery directive: {0}")]
    BadDirective(QueryError),
    /// 6.2.5.2: `_HLS_msn` more than two past the last segment, or `_HLS_part` past
    /// the Advance Part Limit: Bad Request at once, never held. This is the one "too
    /// far ahead" of the spec; a media name too far ahead is [`Rejection::NotFound`],
    /// since the spec gives names no limit and only the hinted part is held.
    #[error("delivery directive too far ahead of the live edge")]
    DirectiveTooFarAhead,
    /// 6.2.5.2: held longer than three target durations without what was asked for.
    #[error("not available within three target durations")]
    HoldTimedOut,
    /// The stream stopped while the request was held.
    #[error("the stream stopped")]
    StreamStopped,
    /// The source has not opened yet: no codecs for the multivariant playlist, no init
    /// segment.
    #[error("the stream is starting")]
    NotStarted,
    /// A Range that does not fit the resource (RFC 9110 15.5.17).
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The resource's length, for `Content-Range: bytes */len`.
        length: usize,
    },
    /// A method other than GET, HEAD and OPTIONS.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A media name of the live rendition that is ahead of what may be held: it will
    /// exist soon, so the refusal must not be cached past that moment.
    #[error("not produced yet")]
    NotYet,
    /// This client has used its request rate, or its share of held requests.
    #[error("too many requests: {0}")]
    TooManyRequests(Refusal),
    /// More header fields, or more bytes of them, than `[limits]` allow.
    #[error("request header fields too large")]
    HeaderFieldsTooLarge,
    /// The server is shutting down: a held request is answered now, to be retried
    /// elsewhere or after the restart.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The stream's policy does not admit this request.
    #[error("{0}")]
    Denied(Denial),
    /// A method this resource (a WHIP endpoint or session) does not allow; it allows
    /// the ones named.
    #[error("method not allowed")]
    NotAllowedHere(&'static str),
    /// A body of another type than the one named.
    #[error("the body must be {0}")]
    UnsupportedMediaType(&'static str),
    /// A body larger than the server reads.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// A WHIP publisher refused.
    #[error("{0}")]
    Whip(WhipRefusal),
}

/// The methods every resource allows.
pub const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

impl Rejection {
    /// Its status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::BadDirective(_) | Rejection::DirectiveTooFarAhead => StatusCode::BAD_REQUEST,
            Rejection::HoldTimedOut
            | Rejection::StreamStopped
            | Rejection::NotStarted
            | Rejection::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::NotYet => StatusCode::NOT_FOUND,
            Rejection::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Rejection::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            // No credential where the scheme (a bearer token) allows one: 401.
            Rejection::Denied(Denial::TokenMissing | Denial::OperatorOnly) => {
                StatusCode::UNAUTHORIZED
            }
            Rejection::Denied(_) => StatusCode::FORBIDDEN,
            Rejection::NotAllowedHere(_) => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Whip(refusal) => match refusal {
                WhipRefusal::MissingKey | WhipRefusal::UnknownKey => StatusCode::UNAUTHORIZED,
                WhipRefusal::Busy(_) => StatusCode::CONFLICT,
                WhipRefusal::BadOffer(_) => StatusCode::BAD_REQUEST,
                WhipRefusal::Full | WhipRefusal::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                WhipRefusal::UnknownSession => StatusCode::NOT_FOUND,
            },
        }
    }

    /// How long caches may keep it. A malformed directive will never be valid for
    /// that URL (Appendix B: four target durations). A directive or a name too far
    /// ahead names something that will exist within a few target durations, when
    /// players ask for it: never stored, since `max-age` counts whole seconds and a
    /// PART-TARGET is less. Refusals of one client (its rate, its header size) are that
    /// client's, never a cache's. Everything else is short, so that a cache collapses a
    /// burst of the same refusal into one request without keeping it past the moment it
    /// changes.
    pub fn cache_rule(&self) -> CacheRule {
        match self {
            Rejection::BadDirective(_) => CacheRule::BlockingPlaylistError,
            Rejection::DirectiveTooFarAhead
            | Rejection::NotYet
            | Rejection::TooManyRequests(_)
            | Rejection::HeaderFieldsTooLarge
            | Rejection::ShuttingDown => CacheRule::NoStore,
            // A refusal depends on headers (a bearer token, the CDN's secret), the
            // client's address and the time: never a cache's to share.
            Rejection::Denied(_) => CacheRule::NoStore,
            // A publisher's, answered to it alone.
            Rejection::NotAllowedHere(_)
            | Rejection::UnsupportedMediaType(_)
            | Rejection::PayloadTooLarge
            | Rejection::Whip(_) => CacheRule::NoStore,
            _ => CacheRule::Error,
        }
    }

    /// The body: one line saying why, for a person with curl.
    pub fn body(&self) -> Bytes {
        Bytes::from(format!("{self}\n"))
    }

    /// Headers it adds besides Cache-Control and the body's.
    pub fn extra_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            // 503s say when to come back: a part takes a fraction of a second.
            Rejection::HoldTimedOut
            | Rejection::StreamStopped
            | Rejection::NotStarted
            | Rejection::ShuttingDown
            | Rejection::TooManyRequests(_)
            | Rejection::Whip(WhipRefusal::Full | WhipRefusal::Stopped) => {
                vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))]
            }
            Rejection::NotAllowedHere(allowed) => {
                vec![(header::ALLOW, HeaderValue::from_static(allowed))]
            }
            Rejection::Whip(WhipRefusal::MissingKey) => vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mirror\""),
            )],
            Rejection::Whip(WhipRefusal::UnknownKey) => vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mirror\", error=\"invalid_token\""),
            )],
            Rejection::RangeNotSatisfiable { length } => vec![(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{length}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            )],
            Rejection::MethodNotAllowed => {
                vec![(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS))]
            }
            Rejection::Denied(Denial::TokenMissing | Denial::OperatorOnly) => vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mirror\""),
            )],
            _ => Vec::new(),
        }
    }

    /// Its Cache-Control for a stream of target duration `target`.
    pub fn cache_control(&self, target: Duration) -> HeaderValue {
        super::headers::cache_control(self.cache_rule(), target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::token::TokenError;

    #[test]
    fn each_refusal_has_one_status_caching_and_body() {
        let td = Duration::from_secs(1);
        let cases = [
            (Rejection::NotFound, 404, "public, max-age=1"),
            (
                Rejection::BadDirective(QueryError::PartWithoutMsn),
                400,
                "public, max-age=4",
            ),
            (Rejection::DirectiveTooFarAhead, 400, "no-store"),
            (Rejection::NotYet, 404, "no-store"),
            (
                Rejection::TooManyRequests(Refusal::RateExceeded),
                429,
                "no-store",
            ),
            (Rejection::HeaderFieldsTooLarge, 431, "no-store"),
            (Rejection::ShuttingDown, 503, "no-store"),
            (Rejection::HoldTimedOut, 503, "public, max-age=1"),
            (Rejection::StreamStopped, 503, "public, max-age=1"),
            (Rejection::NotStarted, 503, "public, max-age=1"),
            (
                Rejection::RangeNotSatisfiable { length: 10 },
                416,
                "public, max-age=1",
            ),
            (Rejection::MethodNotAllowed, 405, "public, max-age=1"),
            (Rejection::Denied(Denial::TokenMissing), 401, "no-store"),
            (
                Rejection::Denied(Denial::Token(TokenError::Expired)),
                403,
                "no-store",
            ),
            (Rejection::Denied(Denial::CdnOnly), 403, "no-store"),
        ];
        for (rejection, status, caching) in cases {
            assert_eq!(rejection.status().as_u16(), status, "{rejection:?}");
            assert_eq!(rejection.cache_control(td), caching, "{rejection:?}");
            assert!(rejection.body().ends_with(b"\n"));
        }
        assert_eq!(
            Rejection::RangeNotSatisfiable { length: 10 }.extra_headers()[0].1,
            "bytes */10"
        );
        assert_eq!(
            Rejection::Denied(Denial::TokenMissing).extra_headers()[0].0,
            header::WWW_AUTHENTICATE
        );
    }
}
