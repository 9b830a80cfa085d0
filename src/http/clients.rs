//! The bookkeeping behind [`Limits`], shared by both front ends: connections per
//! listener and per address (permits released when their task ends, however it ends),
//! requests per second per address (a token bucket, `governor`), and requests held
//! waiting for the live edge, per connection and per address.
//!
//! Never imports the handler's routes or anything of media: it counts, it does not
//! decide what a request is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limits::Limits;

/// What the server knows of every client address it is serving, shared by both
/// listeners: connections and held requests per address, and each address's token
/// bucket. An address's entry goes when its last connection does.
pub struct Clients {
    limits: Limits,
    addresses: Mutex<HashMap<IpAddr, AddressUse>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Requests since idle token buckets were last dropped.
    since_sweep: AtomicU64,
    /// True once the server is shutting down: connections say GOAWAY and close when
    /// done, held requests are answered 503.
    draining: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressUse {
    connections: usize,
    held: usize,
}

/// How many rate checks between sweeps of idle token buckets: often enough that the
/// table stays near the number of active addresses, rarely enough to cost nothing.
const SWEEP_EVERY: u64 = 4096;

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("limits", &self.limits)
            .field("addresses", &self.table().len())
            .finish_non_exhaustive()
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The listener is full.
    #[error("connection limit reached")]
    ListenerFull,
    /// This address has its share of connections.
    #[error("connection limit per address reached")]
    AddressFull,
    /// This address has used its request rate.
    #[error("request rate per address exceeded")]
    RateExceeded,
    /// This connection or address has its share of held requests.
    #[error("too many held requests")]
    TooManyHeld,
}

impl Clients {
    /// A registry enforcing `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        let rate = NonZeroU32::new(limits.requests_per_second_per_address).map(|rate| {
            let burst = NonZeroU32::new(limits.request_burst_per_address).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Self {
            limits,
            addresses: Mutex::new(HashMap::new()),
            rate,
            since_sweep: AtomicU64::new(0),
            draining: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The server is shutting down (see [`Clients::draining`]).
    pub fn begin_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Whether the server is shutting down, and a way to wait for it.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, AddressUse>> {
        // Counts stay consistent whatever a panicking holder did: each change is one
        // integer step.
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `remote` if its address has room; the permit releases
    /// it when dropped.
    pub fn admit_connection(
        self: &Arc<Self>,
        remote: SocketAddr,
    ) -> Result<AddressPermit, Refusal> {
        let ip = canonical(remote.ip());
        let mut table = self.table();
        let entry = table.entry(ip).or_default();
        if entry.connections >= self.limits.max_connections_per_address {
            if entry.connections == 0 && entry.held == 0 {
                table.remove(&ip);
            }
            return Err(Refusal::AddressFull);
        }
        entry.connections += 1;
        Ok(AddressPermit {
            clients: self.clone(),
            ip,
        })
    }

    /// Whether `ip` has used its whole connection budget: a new handshake from it would
    /// only be refused once it completed.
    pub fn address_full(&self, ip: IpAddr) -> bool {
        self.table()
            .get(&canonical(ip))
            .is_some_and(|entry| entry.connections >= self.limits.max_connections_per_address)
    }

    /// Takes one request from `ip`'s token bucket.
    pub fn admit_request(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Buckets that have refilled completely carry no state worth keeping.
            rate.retain_recent();
        }
        rate.check_key(&canonical(ip))
            .map_err(|_| Refusal::RateExceeded)
    }

    /// Addresses with at least one connection.
    pub fn addresses(&self) -> usize {
        self.table().len()
    }

    fn release_connection(&self, ip: IpAddr) {
        let mut table = self.table();
        if let Some(entry) = table.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && entry.held == 0 {
                table.remove(&ip);
            }
        }
    }

    fn release_held(&self, ip: IpAddr) {
        let mut table = self.table();
        if let Some(entry) = table.get_mut(&ip) {
            entry.held = entry.held.saturating_sub(1);
            if entry.connections == 0 && entry.held == 0 {
                table.remove(&ip);
            }
        }
    }
}

/// The client an address stands for. An IPv4 client seen on a dual-stack socket
/// (`::ffff:a.b.c.d`) is the same client as on an IPv4 socket; an IPv6 client is its
/// /64, the smallest prefix a site is given (RFC 6177), since anyone with one can use
/// 2^64 addresses.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// One admitted connection of an address; dropping it releases the place.
#[derive(Debug)]
pub struct AddressPermit {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        self.clients.release_connection(self.ip);
    }
}

/// A listener's admission: its own connection budget plus the shared per-address one.
#[derive(Debug, Clone)]
pub struct Admission {
    listener: Arc<Semaphore>,
    clients: Arc<Clients>,
}

/// An admitted connection: both places, released together when the connection's task
/// ends, whichever way it ends (a failed handshake, a panic, a timeout).
#[derive(Debug)]
pub struct ConnectionPermit {
    _listener: OwnedSemaphorePermit,
    _address: AddressPermit,
}

impl Admission {
    /// A listener of at most `clients.limits().max_connections` connections.
    pub fn new(clients: Arc<Clients>) -> Self {
        Self {
            listener: Arc::new(Semaphore::new(clients.limits.max_connections)),
            clients,
        }
    }

    /// Admits a connection from `remote`, or says why not.
    pub fn admit(&self, remote: SocketAddr) -> Result<ConnectionPermit, Refusal> {
        let listener = self
            .listener
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ListenerFull)?;
        let address = self.clients.admit_connection(remote)?;
        Ok(ConnectionPermit {
            _listener: listener,
            _address: address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.clients.limits.max_connections - self.listener.available_permits()
    }

    /// The shared per-address registry.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }
}

/// The client a request came from: its address, its connection's count of held
/// requests, and the registry. The handler asks it before it holds a request.
#[derive(Debug, Clone)]
pub struct Peer {
    remote: SocketAddr,
    held_on_connection: Arc<AtomicUsize>,
    clients: Arc<Clients>,
}

impl Peer {
    /// A new connection's peer.
    pub fn new(remote: SocketAddr, clients: Arc<Clients>) -> Self {
        Self {
            remote,
            held_on_connection: Arc::default(),
            clients,
        }
    }

    /// Where the connection comes from.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The limits it is held to.
    pub fn limits(&self) -> &Limits {
        &self.clients.limits
    }

    /// Whether the server is shutting down, and a way to wait for it.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.clients.draining()
    }

    /// Takes one request from this address's rate.
    pub fn admit_request(&self) -> Result<(), Refusal> {
        self.clients.admit_request(self.remote.ip())
    }

    /// A place for one more held request on this connection and address.
    pub fn hold(&self) -> Result<HoldPermit, Refusal> {
        let limits = &self.clients.limits;
        let on_connection = self.held_on_connection.fetch_add(1, Ordering::AcqRel);
        if on_connection >= limits.max_held_per_connection {
            self.held_on_connection.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyHeld);
        }
        let ip = canonical(self.remote.ip());
        {
            let mut table = self.clients.table();
            let entry = table.entry(ip).or_default();
            if entry.held >= limits.max_held_per_address {
                drop(table);
                self.held_on_connection.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::TooManyHeld);
            }
            entry.held += 1;
        }
        Ok(HoldPermit {
            held_on_connection: self.held_on_connection.clone(),
            clients: self.clients.clone(),
            ip,
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
    fn permits_return_when_dropped() {
        let clients = Clients::new(Limits {
            max_connections: 2,
            max_connections_per_address: 1,
            ..Limits::default()
        });
        let admission = Admission::new(clients.clone());
        let first = admission.admit(addr(1, 1)).unwrap();
        assert_eq!(
            admission.admit(addr(1, 2)).unwrap_err(),
            Refusal::AddressFull
        );
        let second = admission.admit(addr(2, 1)).unwrap();
        assert_eq!(
            admission.admit(addr(3, 1)).unwrap_err(),
            Refusal::ListenerFull
        );
        assert_eq!(admission.open(), 2);
        drop((first, second));
        assert_eq!(admission.open(), 0);
        assert_eq!(
            clients.addresses(),
            0,
            "entries of gone addresses are removed"
        );
        admission.admit(addr(1, 3)).unwrap();
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_address() {
        let clients = Clients::new(Limits {
            max_connections_per_address: 1,
            ..Limits::default()
        });
        let _v4 = clients.admit_connection(addr(1, 1)).unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5".parse().unwrap();
        assert!(clients.admit_connection(mapped).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let clients = Clients::new(Limits {
            max_connections_per_address: 1,
            ..Limits::default()
        });
        let _one = clients
            .admit_connection("[2001:db8:1:2::1]:5".parse().unwrap())
            .unwrap();
        assert!(
            clients
                .admit_connection("[2001:db8:1:2:ffff::9]:5".parse().unwrap())
                .is_err(),
            "another address of the same /64"
        );
        clients
            .admit_connection("[2001:db8:1:3::1]:5".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn held_requests_are_capped_per_connection_and_per_address() {
        let clients = Clients::new(Limits {
            max_held_per_connection: 2,
            max_held_per_address: 3,
            ..Limits::default()
        });
        let one = Peer::new(addr(1, 1), clients.clone());
        let two = Peer::new(addr(1, 2), clients.clone());
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

    #[test]
    fn the_rate_is_per_address() {
        let clients = Clients::new(Limits {
            requests_per_second_per_address: 1,
            request_burst_per_address: 3,
            ..Limits::default()
        });
        let ip = addr(1, 1).ip();
        for _ in 0..3 {
            clients.admit_request(ip).unwrap();
        }
        assert_eq!(
            clients.admit_request(ip).unwrap_err(),
            Refusal::RateExceeded
        );
        clients.admit_request(addr(2, 1).ip()).unwrap();
    }
}
