//! The admin API under `/admin/`: list the streams with their status, add one (the
//! schema of `[[streams]]`, as JSON), replace one, delete one, reload the config file.
//! It exists only when a bearer token is configured (`[admin] token`, `token_file`, or
//! `MIRROR_ADMIN_TOKEN`); without one every `/admin/` path is 404, as if it were not
//! there. The OpenAPI document of it is `openapi/admin.json`, served at
//! `/admin/openapi.json`.
//!
//! This module parses requests, checks the token (in constant time) and maps every
//! [`AdminError`] to its status and JSON body; what a change does to the running streams
//! is the server's ([`StreamControl`]). It never imports the configuration: a stream's
//! settings arrive as the JSON the client sent and are checked by the control.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Body;
use super::handler::AppState;
use super::headers::cache_control;
use super::rejection::Rejection;
use super::reply::Reply;
use crate::llhls::delivery::CacheRule;

/// The OpenAPI 3 document of this API (kept in the repository, served as is).
pub const OPENAPI: &str = include_str!("../../openapi/admin.json");

/// The most bytes a request body may have (a stream's settings are a few hundred).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The environment variable that can hold the token instead of the config file.
pub const TOKEN_ENV: &str = "MIRROR_ADMIN_TOKEN";

/// Tokens shorter than this are refused at start-up: the API starts and stops streams.
pub const MIN_TOKEN_BYTES: usize = 16;

/// A secret that never shows in `Debug` output (the settings are logged in debugging).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[admin]`: the admin API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// The bearer token the API asks for. Default none (with no `token_file` and no
    /// `MIRROR_ADMIN_TOKEN` either, the API is off). At least 16 bytes.
    pub token: Option<Secret>,
    /// A file holding the token (its first line), for secrets mounted as files.
    pub token_file: Option<PathBuf>,
    /// The most streams the API lets run at once, config file's included. Default 32.
    pub max_streams: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            max_streams: 32,
        }
    }
}

impl AdminSettings {
    /// The token in force: `token`, else `token_file`'s first line, else the
    /// environment's `MIRROR_ADMIN_TOKEN`; none turns the API off. Errors name the field.
    pub fn resolve_token(&self) -> Result<Option<Secret>, (&'static str, String)> {
        let (field, token) = if let Some(token) = &self.token {
            ("admin.token", token.0.clone())
        } else if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("admin.token_file", format!("{}: {e}", path.display())))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            ("admin.token_file", line)
        } else {
            match std::env::var(TOKEN_ENV) {
                Ok(token) => ("admin.token", token.trim().to_string()),
                Err(_) => return Ok(None),
            }
        };
        if token.len() < MIN_TOKEN_BYTES {
            return Err((
                field,
                format!("the admin token is shorter than {MIN_TOKEN_BYTES} bytes"),
            ));
        }
        Ok(Some(Secret(token)))
    }

    /// Checks the values; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1000).contains(&self.max_streams) {
            return Err((
                "admin.max_streams",
                format!("{} is not in 1..=1000", self.max_streams),
            ));
        }
        self.resolve_token().map(|_| ())
    }
}

/// Why an admin request was refused: each variant has one status and one JSON body
/// (`{"error": kind, "field": …, "message": …}`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    /// No token, or the wrong one.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The body is not valid JSON for the schema, or a value is out of range.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field, dotted as in the schema (`source`, `renditions.0.width`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body did not arrive whole within the header timeout, or its stream broke.
    #[error("the request body did not arrive whole")]
    BodyIncomplete,
    /// No stream of that name.
    #[error("no stream named {0:?}")]
    NoSuchStream(String),
    /// `POST` of a name that is taken (`PUT` replaces).
    #[error("a stream named {0:?} exists already (PUT replaces it)")]
    Exists(String),
    /// As many streams run as `admin.max_streams` allows.
    #[error("{0} streams run already (admin.max_streams)")]
    TooManyStreams(usize),
    /// The stream could not start with these settings (a file that cannot be read, an
    /// encoder that does not open).
    #[error("the stream cannot start: {reason}")]
    CannotStart {
        /// The field at fault, when known.
        field: Option<String>,
        /// Why (secrets redacted).
        reason: String,
    },
    /// `POST /admin/reload` on a server started without a config file.
    #[error("the server was started without a config file")]
    NoConfigFile,
    /// The config file could not be read or is invalid: the running config stays.
    #[error("the config file was not applied: {0}")]
    BadConfigFile(String),
    /// Another method; the methods this resource allows.
    #[error("method not allowed here (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// Another path under `/admin/`.
    #[error("no such admin resource")]
    NotFound,
}

impl AdminError {
    /// Its status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Invalid { .. }
            | Self::CannotStart { .. }
            | Self::BadConfigFile(_)
            | Self::BodyIncomplete => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoSuchStream(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::Exists(_) | Self::TooManyStreams(_) | Self::NoConfigFile => StatusCode::CONFLICT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Its `error` kind in the body.
    fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Invalid { .. } => "invalid",
            Self::TooLarge => "too_large",
            Self::BodyIncomplete => "body_incomplete",
            Self::NoSuchStream(_) => "no_such_stream",
            Self::Exists(_) => "exists",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::CannotStart { .. } => "cannot_start",
            Self::NoConfigFile => "no_config_file",
            Self::BadConfigFile(_) => "bad_config_file",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::NotFound => "not_found",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::CannotStart { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    fn reply(&self) -> Reply {
        let mut body = serde_json::json!({ "error": self.kind(), "message": self.to_string() });
        if let Some(field) = self.field() {
            body["field"] = field.into();
        }
        let mut reply = Reply::json(self.status(), &body);
        match self {
            Self::Unauthorized => {
                reply = reply.with(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"mirror-admin\""),
                );
            }
            Self::MethodNotAllowed(allowed) => {
                reply = reply.with(header::ALLOW, HeaderValue::from_static(allowed));
            }
            _ => {}
        }
        reply
    }
}

/// What the admin API asks of the server. Every change is serialised by the server;
/// a future resolves once the change is in force (a stream added is being served).
pub trait StreamControl: Send + Sync {
    /// Every stream as JSON: its settings (secrets redacted), where they came from, its
    /// URL and status. Sorted by name.
    fn list(&self) -> Vec<serde_json::Value>;
    /// One stream, as [`StreamControl::list`] gives it.
    fn get(&self, name: &str) -> Option<serde_json::Value>;
    /// Adds the stream whose settings are `body` (JSON).
    fn add(&self, body: Bytes) -> ControlFuture<'_, serde_json::Value>;
    /// Replaces (or adds) stream `name` with `body`; true when it was added.
    fn replace(&self, name: String, body: Bytes) -> ControlFuture<'_, (bool, serde_json::Value)>;
    /// Stops and removes stream `name`.
    fn delete(&self, name: String) -> ControlFuture<'_, ()>;
    /// Reads the config file again and applies it, as SIGHUP does.
    fn reload(&self) -> ControlFuture<'_, serde_json::Value>;
}

/// What [`StreamControl`]'s changes return.
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AdminError>> + Send + 'a>>;

/// The admin API of a server: its token and the control it drives.
#[derive(Clone)]
pub struct Admin {
    token: Secret,
    control: Arc<dyn StreamControl>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// The API, asking for `token`, driving `control`.
    pub fn new(token: Secret, control: Arc<dyn StreamControl>) -> Self {
        Self { token, control }
    }

    /// Whether `request` carries the token. Both sides are hashed first, so the
    /// comparison takes the same time whatever the guess and whatever its length.
    pub fn authorised(&self, request: &Request<()>) -> bool {
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let (given, expected) = (
            Sha256::digest(given.trim().as_bytes()),
            Sha256::digest(self.token.0.as_bytes()),
        );
        given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Why the front end has no body to hand over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not whole within the header timeout, or its stream broke.
    Incomplete,
}

/// A request body as the front end read it: `None` when it read none.
pub type RequestBody = Option<Result<Bytes, BodyError>>;

/// Whether the front end should read the body of `request` from `peer` for the admin
/// API: only when the API is on, over an encrypted connection, and the request carries
/// the token. Nobody else is sent a body's worth of reading.
pub fn wants_body(state: &AppState, request: &Request<()>, peer: &super::peer::Peer) -> bool {
    peer.encrypted()
        && matches!(*request.method(), Method::POST | Method::PUT)
        && request.uri().path().starts_with("/admin/")
        && state.admin.as_ref().is_some_and(|a| a.authorised(request))
}

/// Answers a request under `/admin/` (`path` is what follows it). `body` is what the
/// front end read of the request's body.
pub(super) async fn route(
    state: &AppState,
    request: &Request<()>,
    path: &str,
    body: RequestBody,
) -> Reply {
    let Some(admin) = &state.admin else {
        return Reply::reject(&Rejection::NotFound, Duration::from_secs(1));
    };
    if path == "openapi.json" && matches!(*request.method(), Method::GET | Method::HEAD) {
        return Reply::new(
            StatusCode::OK,
            Body::Full(Bytes::from_static(OPENAPI.as_bytes())),
        )
        .with(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .with(
            header::CACHE_CONTROL,
            cache_control(CacheRule::NoStore, Duration::from_secs(1)),
        );
    }
    if !admin.authorised(request) {
        return AdminError::Unauthorized.reply();
    }
    match answer(admin.control.as_ref(), request.method(), path, body).await {
        Ok((status, value)) => match value {
            Some(value) => {
                let reply = Reply::json(status, &value);
                let created = value["name"]
                    .as_str()
                    .filter(|_| status == StatusCode::CREATED)
                    .and_then(|name| HeaderValue::from_str(&location(name)).ok());
                match created {
                    Some(location) => reply.with(header::LOCATION, location),
                    None => reply,
                }
            }
            None => Reply::new(status, Body::Empty).with(
                header::CACHE_CONTROL,
                cache_control(CacheRule::NoStore, Duration::from_secs(1)),
            ),
        },
        Err(error) => {
            tracing::info!(%error, method = %request.method(), path, "admin request refused");
            error.reply()
        }
    }
}

type Answer = Result<(StatusCode, Option<serde_json::Value>), AdminError>;

async fn answer(
    control: &dyn StreamControl,
    method: &Method,
    path: &str,
    body: RequestBody,
) -> Answer {
    let body = || match body.clone() {
        Some(Ok(body)) => Ok(body),
        Some(Err(BodyError::TooLarge)) => Err(AdminError::TooLarge),
        Some(Err(BodyError::Incomplete)) | None => Err(AdminError::BodyIncomplete),
    };
    let stream = path
        .strip_prefix("streams/")
        .filter(|name| !name.is_empty() && !name.contains('/'));
    match (path, stream) {
        ("streams", _) => match *method {
            Method::GET | Method::HEAD => Ok((
                StatusCode::OK,
                Some(serde_json::json!({ "streams": control.list() })),
            )),
            Method::POST => {
                let added = control.add(body()?).await?;
                tracing::info!(stream = %added["name"], "admin: stream added");
                Ok((StatusCode::CREATED, Some(added)))
            }
            _ => Err(AdminError::MethodNotAllowed("GET, HEAD, POST")),
        },
        (_, Some(name)) => match *method {
            Method::GET | Method::HEAD => control
                .get(name)
                .map(|s| (StatusCode::OK, Some(s)))
                .ok_or_else(|| AdminError::NoSuchStream(name.to_string())),
            Method::PUT => {
                let (added, stream) = control.replace(name.to_string(), body()?).await?;
                tracing::info!(stream = name, added, "admin: stream replaced");
                let status = if added {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, Some(stream)))
            }
            Method::DELETE => {
                control.delete(name.to_string()).await?;
                tracing::info!(stream = name, "admin: stream deleted");
                Ok((StatusCode::NO_CONTENT, None))
            }
            _ => Err(AdminError::MethodNotAllowed("GET, HEAD, PUT, DELETE")),
        },
        ("reload", _) => match *method {
            Method::POST => Ok((StatusCode::OK, Some(control.reload().await?))),
            _ => Err(AdminError::MethodNotAllowed("POST")),
        },
        _ => Err(AdminError::NotFound),
    }
}

/// The `Location` of stream `name` (the created resource of a `POST`).
pub fn location(name: &str) -> String {
    format!("/admin/streams/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().expect("paths");
        for path in ["/admin/streams", "/admin/streams/{name}", "/admin/reload"] {
            assert!(paths.contains_key(path), "{path} missing");
        }
    }

    #[test]
    fn a_short_token_is_refused_with_its_field() {
        let settings = AdminSettings {
            token: Some(Secret("short".into())),
            ..AdminSettings::default()
        };
        let (field, _) = settings.check().expect_err("too short");
        assert_eq!(field, "admin.token");
        assert_eq!(format!("{:?}", settings.token), "Some(\"***\")");
    }
}
