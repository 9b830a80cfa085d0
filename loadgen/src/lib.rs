//! Load generation and measurement (`mirror bench`): emulated LL-HLS viewers over
//! HTTP/3 (or HTTP/2) against any server, a hostile client flooding held reloads, and
//! a raw QUIC bulk pair as the transport's ceiling. It owns an HTTP/3 client, an
//! HTTP/2 client and the reports; it reads playlists with the server library's one
//! reader (`mirror::llhls::parse`) and never touches a server's internals, so the same
//! figures can be taken of Mirror and of anything else. The server library never links it.

pub mod client;
pub mod cpu;
pub mod flood;
pub mod h2client;
pub mod quic_bulk;
pub mod report;
pub mod viewers;
