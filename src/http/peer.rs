//! One connection's client as the handler sees it ([`Peer`]): its address, the
//! protocol its connection speaks and whether it is encrypted, its connection's count
//! of held requests, and the shared registry ([`super::clients`])
//! it asks before it serves or holds a request; and the places it holds.
//!
//! Never imports the handler's routes or anything of media.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::clients::{Clients, Refusal, canonical};
use super::limits::Limits;
use crate::metrics::{GaugeGuard, Metrics, Protocol};

/// Numbers each connection's peer; the viewers estimate counts distinct ones.
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The client a request came from: its address, its connection's count of held
/// requests, and the registry. The handler asks it before it holds a request.
#[derive(Debug, Clone)]
pub struct Peer {
    remote: SocketAddr,
    connection: u64,
    held_on_connection: Arc<AtomicUsize>,
    clients: Arc<Clients>,
    metrics: Arc<Metrics>,
    protocol: Protocol,
    encrypted: bool,
    /// Playback tokens this connection presented while they were valid, with the
    /// stream each was for (a few: a connection plays one stream, or a handful).
    tokens: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Peer {
    /// A new connection's peer, counted in `metrics`.
    pub fn new(remote: SocketAddr, clients: Arc<Clients>, metrics: Arc<Metrics>) -> Self {
        Self {
            remote,
            connection: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            held_on_connection: Arc::default(),
            clients,
            metrics,
            protocol: "h1",
            encrypted: true,
            tokens: Arc::default(),
        }
    }

    /// Whether this connection presented `token` for `stream` before, while it was
    /// valid.
    pub fn has_admitted(&self, token: &str, stream: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|(t, s)| t == token && s == stream)
    }

    /// This connection presented `token` for `stream` while it was valid: its viewer is
    /// watching.
    pub fn admitted(&self, token: &str, stream: &str) {
        const KEPT: usize = 4;
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() == KEPT {
            tokens.remove(0);
        }
        tokens.push((token.to_string(), stream.to_string()));
    }

    /// The same peer, on a connection without TLS (the plain listener for a cache
    /// tier): the admin API is not served to it.
    #[must_use]
    pub fn unencrypted(mut self) -> Self {
        self.encrypted = false;
        self
    }

    /// Whether its connection is encrypted (TLS or QUIC).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The same peer, speaking `protocol` (known once ALPN has chosen; HTTP/1.1 until).
    #[must_use]
    pub fn speaking(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The HTTP version its connection speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// This connection's number, unique in the process.
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// What it is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where the connection comes from.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The limits it is held to.
    pub fn limits(&self) -> &Limits {
        self.clients.limits()
    }

    /// Whether the server is shutting down, and a way to wait for it.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.clients.draining()
    }

    /// Takes one request from this address's rate.
    pub fn admit_request(&self) -> Result<(), Refusal> {
        self.clients
            .admit_request(self.remote.ip())
            .inspect_err(|_| self.clients.refused(self.remote.ip()))
    }

    /// Returns once this peer's address has been cut off (never, if it is not).
    pub async fn until_cut_off(&self) {
        let mut cut_offs = self.clients.cut_offs();
        loop {
            if self.clients.cut_off(self.remote.ip()) {
                return;
            }
            if cut_offs.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// A place for one more held request on this connection and address.
    pub fn hold(&self) -> Result<HoldPermit, Refusal> {
        let limits = self.clients.limits();
        let on_connection = self.held_on_connection.fetch_add(1, Ordering::AcqRel);
        if on_connection >= limits.max_held_per_connection {
            self.held_on_connection.fetch_sub(1, Ordering::AcqRel);
            self.clients.refused(self.remote.ip());
            return Err(Refusal::TooManyHeld);
        }
        let ip = canonical(self.remote.ip());
        if let Err(refusal) = self.clients.hold(ip) {
            self.held_on_connection.fetch_sub(1, Ordering::AcqRel);
            return Err(refusal);
        }
        Ok(HoldPermit {
            held_on_connection: self.held_on_connection.clone(),
            clients: self.clients.clone(),
            ip,
            _counted: self.metrics.http.held(),
        })
    }
}

/// Returns once `draining` says the server is shutting down.
pub async fn until_draining(draining: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so no caller holds it over an await.
    let _ = draining.wait_for(|draining| *draining).await;
}

/// One held request; dropping it (answered, timed out or cancelled) frees the place.
#[derive(Debug)]
pub struct HoldPermit {
    held_on_connection: Arc<AtomicUsize>,
    clients: Arc<Clients>,
    ip: IpAddr,
    _counted: GaugeGuard,
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        self.held_on_connection.fetch_sub(1, Ordering::AcqRel);
        self.clients.release_held(self.ip);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], port))
    }

    #[test]
    fn held_requests_are_capped_per_connection_and_per_address() {
        let clients = Clients::new(Limits {
            max_held_per_connection: 2,
            max_held_per_address: 3,
            ..Limits::default()
        });
        let metrics = Arc::new(Metrics::unregistered());
        let one = Peer::new(addr(1, 1), clients.clone(), metrics.clone());
        let two = Peer::new(addr(1, 2), clients.clone(), metrics);
        let a = one.hold().unwrap();
        let _b = one.hold().unwrap();
        assert_eq!(one.hold().unwrap_err(), Refusal::TooManyHeld);
        let _c = two.hold().unwrap();
        assert_eq!(
            two.hold().unwrap_err(),
            Refusal::TooManyHeld,
            "address full"
        );
        drop(a);
        two.hold().unwrap();
    }
}
