//! Mirror: a low-latency live edge server. Live video in (built-in test pattern, files,
//! RTSP), CMAF packaged here, Low-Latency HLS out.
//!
//! The media path, stage by stage: [`ingest`] produces raw or encoded frames with their
//! capture time, [`pipeline`] encodes them into [`cmaf::Sample`]s, [`cmaf`] cuts those
//! into init segments, parts and segments, and [`llhls`] describes them in playlists.
//! [`record`] drives the whole path to disk; [`server`] serves it live over HTTP/3
//! (and HTTP/1.1 + HTTP/2) from [`stream`]s and the [`store`].

pub mod cmaf;
pub mod config;
pub mod http;
pub mod ingest;
pub mod libav;
pub mod llhls;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod server;
pub mod store;
pub mod stream;
pub mod tls;
