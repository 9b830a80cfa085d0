//! The operator's endpoints: `/streams` (what each stream is doing, as JSON),
//! `/metrics` (Prometheus), `/healthz` (the process serves) and `/readyz` (every
//! stream has published lately). Served by the handler; reads [`AppState`], never a
//! transport.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};

use super::Body;
use super::handler::AppState;
use super::headers::cache_control;
use super::reply::Reply;
use crate::llhls::delivery::CacheRule;
use crate::stream::MULTIVARIANT_PLAYLIST;

/// The process as the soak test samples it: tokio tasks alive (a leak of held requests
/// or connections shows here first) and client addresses being served.
fn server_json(state: &AppState) -> serde_json::Value {
    let tasks = tokio::runtime::Handle::try_current()
        .map(|runtime| runtime.metrics().num_alive_tasks())
        .ok();
    serde_json::json!({ "tasks": tasks, "client_addresses": state.clients.addresses() })
}

/// `/streams`: the streams `listed` names (see [`super::auth::Access::lists`]).
pub(super) fn streams(state: &AppState, listed: impl Fn(&str) -> bool) -> Reply {
    let streams = state.streams.all();
    let mut names: Vec<&String> = streams.keys().filter(|n| listed(n)).collect();
    names.sort();
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let stream = &streams[*n];
            serde_json::json!({
                "name": n,
                "url": format!("/{n}/{MULTIVARIANT_PLAYLIST}"),
                "renditions": stream
                    .renditions()
                    .iter()
                    .map(|r| format!("/{n}/{}", r.playlist_name()))
                    .collect::<Vec<_>>(),
                "status": stream.status(),
            })
        })
        .collect();
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({ "streams": list, "server": server_json(state) }),
    )
}

/// `/metrics`: OpenMetrics to a scraper that asks for it (Prometheus does), else the
/// Prometheus text format (0.0.4), which `promtool check metrics` reads.
pub(super) fn metrics(state: &AppState, request: &Request<()>) -> Reply {
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Reply::new(
        StatusCode::OK,
        Body::Full(Bytes::from(state.metrics.encode(openmetrics))),
    )
    .with(header::CONTENT_TYPE, HeaderValue::from_static(content_type))
    .with(
        header::CACHE_CONTROL,
        cache_control(CacheRule::NoStore, Duration::from_secs(1)),
    )
}

/// `/healthz`: the process serves requests.
pub(super) fn healthz() -> Reply {
    Reply::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: 200 once every stream has published a part within three target
/// durations, else 503 naming those that have not.
pub(super) fn readyz(state: &AppState) -> Reply {
    let late = crate::metrics::not_ready(&state.streams);
    if late.is_empty() {
        Reply::json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
    } else {
        Reply::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not ready", "streams_not_publishing": late }),
        )
    }
}
