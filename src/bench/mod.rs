//! Load generation and measurement (`mirror bench`): emulated LL-HLS viewers over
//! HTTP/3 against any server. It owns an HTTP/3 client, a reader of the playlists the
//! viewers follow, and the report; it never touches the server's internals, so the same
//! figures can be taken of Mirror and of anything else.

pub mod client;
pub mod h2client;
pub mod quic_bulk;
pub mod viewers;
