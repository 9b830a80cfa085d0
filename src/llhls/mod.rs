//! LL-HLS playlists, sans-IO: the media playlist model and its renderer, and the
//! multivariant playlist. Rules are cited to RFC 8216bis (draft-pantos-hls-rfc8216bis)
//! at the line that enforces them.
//!
//! This module knows segments, parts and URIs; it never sees MP4 boxes or codecs
//! beyond the `CODECS` string it is handed.

pub mod multivariant;
pub mod playlist;

pub use multivariant::{Variant, render_multivariant};
pub mod blocking;
pub mod delivery;
pub mod live;
pub mod names;
pub mod parse;

pub use playlist::{
    LiveEdge, MediaPlaylist, PlaylistPart, PlaylistSegment, RenditionReport, Skip,
    format_program_date_time,
};
