//! The bookkeeping behind [`Limits`], shared by both front ends: connections per
//! listener and per address (permits released when their task ends, however it ends),
//! requests per second per address (a token bucket, `governor`), and requests held
//! waiting for the live edge per address; and the addresses cut off for a while because
//! they kept asking after being refused. A connection's own side of it is
//! [`super::peer`].
//!
//! Never imports the handler's routes or anything of media: it counts, it does not
//! decide what a request is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limits::Limits;

/// What the server knows of every client address it is serving, shared by both
/// listeners: connections and held requests per address, and each address's token
/// bucket. An address's entry goes when its last connection does (or, for one cut off,
/// once its record of offences has lapsed).
pub struct Clients {
    limits: Limits,
    addresses: Mutex<HashMap<IpAddr, AddressUse>>,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Requests since idle token buckets were last dropped.
    since_sweep: AtomicU64,
    /// True once the server is shutting down: connections say GOAWAY and close when
    /// done, held requests are answered 503.
    draining: tokio::sync::watch::Sender<bool>,
    /// Counts the addresses ever cut off: each connection watches it, and closes when
    /// its own address is the one.
    cut_offs: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressUse {
    connections: usize,
    held: usize,
    /// Requests refused 429 since `window` began (a one-second window).
    refusals: u32,
    window: Option<Instant>,
    /// Cut off until then: no connection, no request.
    cut_off_until: Option<Instant>,
    /// Times cut off, each twice as long as the one before; forgotten once the last
    /// one is long over (see [`AddressUse::remembered`]).
    offences: u32,
}

/// A cut-off doubles with each offence up to 2^this times `cut_off_ms`.
const MOST_DOUBLINGS: u32 = 6;

impl AddressUse {
    fn cut_off(&self, now: Instant) -> bool {
        self.cut_off_until.is_some_and(|until| now < until)
    }

    /// Whether its last cut-off is recent enough to count toward the next one: within
    /// the longest cut-off of its end.
    fn remembered(&self, now: Instant, limits: &Limits) -> bool {
        self.cut_off_until
            .is_some_and(|until| now < until + limits.cut_off() * (1 << MOST_DOUBLINGS))
    }

    /// Nothing left to count: the entry can go.
    fn unused(&self, now: Instant, limits: &Limits) -> bool {
        self.connections == 0 && self.held == 0 && !self.remembered(now, limits)
    }
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
    /// This address kept asking after being refused and is cut off for a while.
    #[error("address cut off for asking after being refused")]
    CutOff,
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
            cut_offs: tokio::sync::watch::Sender::new(0),
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
        let now = Instant::now();
        let mut table = self.table();
        let entry = table.entry(ip).or_default();
        if entry.cut_off(now) {
            return Err(Refusal::CutOff);
        }
        if entry.connections >= self.limits.max_connections_per_address {
            if entry.unused(now, &self.limits) {
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

    /// Whether a new connection from `ip` would be refused (its whole connection budget
    /// used, or cut off): a handshake from it would only end in a refusal.
    pub fn refuses_connections(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.table().get(&canonical(ip)).is_some_and(|entry| {
            entry.cut_off(now) || entry.connections >= self.limits.max_connections_per_address
        })
    }

    /// Whether `ip` is cut off now.
    pub fn cut_off(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.table()
            .get(&canonical(ip))
            .is_some_and(|entry| entry.cut_off(now))
    }

    /// Counts one request from `ip` refused 429. Past `refusals_before_cut_off` within a
    /// second, the address is cut off: its connections are closed (each watches
    /// [`Clients::cut_offs`]) and new ones refused, for `cut_off_ms`, doubling with each
    /// offence. A 429 is cheap but not free: thousands a second from one address cost
    /// every other viewer's announcements on the core they land on.
    pub fn refused(&self, ip: IpAddr) {
        let threshold = self.limits.refusals_before_cut_off;
        if threshold == 0 {
            return;
        }
        let ip = canonical(ip);
        let now = Instant::now();
        let mut table = self.table();
        let entry = table.entry(ip).or_default();
        match entry.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                entry.refusals = entry.refusals.saturating_add(1);
            }
            _ => {
                entry.window = Some(now);
                entry.refusals = 1;
            }
        }
        if entry.refusals <= threshold || entry.cut_off(now) {
            return;
        }
        if !entry.remembered(now, &self.limits) {
            entry.offences = 0;
        }
        let length = self.limits.cut_off() * (1 << entry.offences.min(MOST_DOUBLINGS));
        entry.cut_off_until = Some(now + length);
        entry.offences += 1;
        entry.window = None;
        let offences = entry.offences;
        drop(table);
        tracing::warn!(
            %ip,
            seconds = length.as_secs(),
            offences,
            "address cut off: more than {threshold} requests refused within a second"
        );
        self.cut_offs.send_modify(|count| *count += 1);
    }

    /// Changes each time an address is cut off.
    pub fn cut_offs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cut_offs.subscribe()
    }

    /// Takes one request from `ip`'s token bucket.
    pub fn admit_request(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Buckets that have refilled completely carry no state worth keeping; nor do
            // the entries of addresses cut off long ago that never came back.
            rate.retain_recent();
            let now = Instant::now();
            self.table()
                .retain(|_, entry| !entry.unused(now, &self.limits));
        }
        rate.check_key(&canonical(ip))
            .map_err(|_| Refusal::RateExceeded)
    }

    /// Addresses with at least one connection or held request, or cut off lately.
    pub fn addresses(&self) -> usize {
        self.table().len()
    }

    /// Takes a place for one more held request of `ip`'s, or refuses it (a refusal
    /// that counts toward a cut-off).
    pub(super) fn hold(&self, ip: IpAddr) -> Result<(), Refusal> {
        let mut table = self.table();
        let entry = table.entry(ip).or_default();
        if entry.held >= self.limits.max_held_per_address {
            drop(table);
            self.refused(ip);
            return Err(Refusal::TooManyHeld);
        }
        entry.held += 1;
        Ok(())
    }

    fn release_connection(&self, ip: IpAddr) {
        self.release(ip, |entry| {
            entry.connections = entry.connections.saturating_sub(1);
        });
    }

    pub(super) fn release_held(&self, ip: IpAddr) {
        self.release(ip, |entry| entry.held = entry.held.saturating_sub(1));
    }

    fn release(&self, ip: IpAddr, change: impl FnOnce(&mut AddressUse)) {
        let mut table = self.table();
        if let Some(entry) = table.get_mut(&ip) {
            change(entry);
            if entry.unused(Instant::now(), &self.limits) {
                table.remove(&ip);
            }
        }
    }
}

/// The client an address stands for. An IPv4 client seen on a dual-stack socket
/// (`::ffff:a.b.c.d`) is the same client as on an IPv4 socket; an IPv6 client is its
/// /64, the smallest prefix a site is given (RFC 6177), since anyone with one can use
/// 2^64 addresses.
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
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
    fn an_address_refused_too_often_is_cut_off_for_longer_each_time() {
        let clients = Clients::new(Limits {
            refusals_before_cut_off: 3,
            cut_off_ms: 300,
            ..Limits::default()
        });
        let (ip, other) = (addr(1, 1), addr(2, 1));
        let cut_offs = clients.cut_offs();
        let offend = || (0..4).for_each(|_| clients.refused(ip.ip()));
        (0..3).for_each(|_| clients.refused(ip.ip()));
        assert!(!clients.cut_off(ip.ip()), "at the threshold");
        clients.refused(ip.ip());
        assert!(clients.cut_off(ip.ip()) && clients.refuses_connections(ip.ip()));
        assert!(cut_offs.has_changed().unwrap(), "the connections are told");
        assert_eq!(clients.admit_connection(ip).unwrap_err(), Refusal::CutOff);
        assert!(!clients.refuses_connections(other.ip()));
        clients.admit_connection(other).unwrap();
        std::thread::sleep(Duration::from_millis(350));
        assert!(!clients.cut_off(ip.ip()), "over after 300 ms");
        let _back = clients.admit_connection(ip).unwrap();
        // A second offence soon after: twice as long.
        offend();
        std::thread::sleep(Duration::from_millis(400));
        assert!(clients.cut_off(ip.ip()), "600 ms the second time");
        std::thread::sleep(Duration::from_millis(300));
        assert!(!clients.cut_off(ip.ip()));
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
