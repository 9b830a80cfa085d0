//! A response under construction ([`Reply`]): its status, headers (built per request,
//! or shared per snapshot and form), body and route, and how it becomes the response
//! the front ends send ([`finish`]). Imports nothing of streams or media.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::Body;
use super::headers::{self, cache_control, date_now};
use super::rejection::Rejection;
use crate::llhls::delivery::CacheRule;
use crate::metrics::Route;

/// A response under construction.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Complete headers built beforehand (shared playlist responses); `headers` and Date
    /// are added to them.
    pub(super) prebuilt: Option<HeaderMap>,
    pub(super) body: Body,
    /// What was asked for, as `/metrics` counts it.
    pub(super) route: Route,
    /// For one viewer only (admitted by a token in its Authorization header, which a
    /// shared cache would otherwise reuse for anyone: RFC 9111 3.5).
    pub(super) private: bool,
}

impl Reply {
    pub(super) fn new(status: StatusCode, body: Body) -> Self {
        Self {
            status,
            headers: Vec::with_capacity(10),
            prebuilt: None,
            private: false,
            body,
            route: Route::Other,
        }
    }

    /// Counted under `route`.
    pub(super) fn for_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// The response to `rejection`, for a stream of target duration `target`.
    pub(super) fn reject(rejection: &Rejection, target: Duration) -> Self {
        let mut reply = Self::new(rejection.status(), Body::Full(rejection.body()))
            .with(header::CACHE_CONTROL, rejection.cache_control(target))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        reply.headers.extend(rejection.extra_headers());
        reply
    }

    pub(super) fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// `value` as a JSON answer no cache keeps (the operator's endpoints).
    pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, Body::Full(Bytes::from(value.to_string())))
            .with(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::NoStore, Duration::from_secs(1)),
            )
    }
}

impl From<Result<Reply, (Rejection, Duration)>> for Reply {
    fn from(result: Result<Reply, (Rejection, Duration)>) -> Self {
        result.unwrap_or_else(|(rejection, target)| Reply::reject(&rejection, target))
    }
}

pub(super) fn finish(reply: Reply, head: bool) -> Response<Body> {
    let mut headers = match reply.prebuilt {
        Some(headers) => headers,
        None => headers::common(reply.body.len()),
    };
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    if reply.private {
        let public = headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("public"))
            .and_then(|rest| HeaderValue::from_str(&format!("private{rest}")).ok());
        if let Some(private) = public {
            headers.insert(header::CACHE_CONTROL, private);
        }
    }
    headers.insert(header::DATE, date_now());
    let body = if head { Body::Empty } else { reply.body };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    *response.headers_mut() = headers;
    response
}
