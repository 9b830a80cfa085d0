//! HTTP: one transport-agnostic handler ([`handler`]) and the two front ends that adapt
//! it, HTTP/3 over QUIC ([`h3`], quinn + h3 on Mirror's own transport adapter
//! [`quic`]) and HTTP/1.1 + HTTP/2 over TCP ([`tcp`], hyper), each holding every client to
//! the `[limits]` ([`limits`], enforced by [`clients`], [`peer`] and [`watchdog`]), and
//! the operator's endpoints (`ops`, [`admin`]), and who may watch ([`auth`]). This module
//! knows playlists, names and bytes; nothing about codecs.

pub mod access;
pub mod admin;
pub mod auth;
pub mod body;
pub mod clients;
pub mod frame_limit;
pub mod h3;
pub mod handler;
pub mod headers;
pub mod limits;
mod media;
mod ops;
pub mod peer;
pub mod quic;
pub mod rejection;
mod reply;
pub mod tcp;
pub mod watchdog;
mod whip;

pub use body::Body;
pub use handler::{AppState, handle, handle_with_body};
pub use limits::Limits;
pub use rejection::Rejection;
