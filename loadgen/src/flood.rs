//! `mirror bench flood`: one hostile client address holding as many blocking playlist
//! reloads as it can. Each of `held` slots asks for the next part (`_HLS_msn`,
//! `_HLS_part`), and asks again as soon as it is answered, or when a refusal's
//! Retry-After is up (at once with `ignore_retry_after`: a request flood); the
//! connections come from one local address (`bind`, e.g. 127.0.0.2), so the server
//! counts them all as one client. Run beside `mirror bench viewers` from another
//! address, it shows whether such a client delays anyone else's announcements.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{H3Client, client_endpoint_at};
use super::viewers::{ViewersError, target};
use mirror::llhls::parse::parse_media_playlist;

/// Most UDP sockets the connections spread over (as in `viewers`).
const MAX_CLIENT_SOCKETS: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// A media playlist URL.
    pub url: String,
    /// Blocking reloads kept outstanding, in all.
    pub held: usize,
    /// Connections they spread over.
    pub connections: usize,
    /// How long.
    pub duration: Duration,
    /// The local address every connection comes from.
    pub bind: IpAddr,
    /// Certificate to trust.
    pub ca: PathBuf,
    /// Allow a host that is not loopback.
    pub remote_ok: bool,
    /// Ask again at once after a 429 too (a request flood), instead of after its
    /// Retry-After.
    pub ignore_retry_after: bool,
}

/// What the flood got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodReport {
    /// Slots asked for.
    pub held: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Connections made, reconnections included (a connection the server refused or
    /// closed is tried again a second later).
    pub connects: u64,
    /// Seconds it ran.
    pub seconds: f64,
    /// Requests answered, by status (`200`, `429`, ...).
    pub statuses: BTreeMap<u16, u64>,
    /// Connections refused (`connect`) and requests that failed without an answer, by
    /// kind.
    pub errors: BTreeMap<String, u64>,
    /// Answers per second.
    pub answers_per_s: f64,
}

impl FloodReport {
    /// One line for people.
    pub fn summary(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "flood: {} slots on {} connections ({} made) for {:.1} s: {:.0} answers/s; \
             statuses {}; errors {}",
            self.held,
            self.connections,
            self.connects,
            self.seconds,
            self.answers_per_s,
            statuses.join(" "),
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(" ")
            },
        )
    }
}

/// The next part any slot has seen announced, shared, so that refused slots need not
/// read playlists to know what to ask for.
struct NextPart(AtomicU64);

impl NextPart {
    fn get(&self) -> (u64, u32) {
        let v = self.0.load(Ordering::Relaxed);
        (v >> 16, (v & 0xffff) as u32)
    }

    fn pack((msn, part): (u64, u32)) -> u64 {
        (msn << 16) | u64::from(part.min(0xffff))
    }

    fn raise(&self, next: (u64, u32)) {
        self.0.fetch_max(Self::pack(next), Ordering::Relaxed);
    }

    /// After a 400 (the stream restarted lower, say): what the playlist says now.
    fn reset(&self, next: (u64, u32)) {
        self.0.store(Self::pack(next), Ordering::Relaxed);
    }
}

/// What to ask for and how: shared by every slot.
struct Plan {
    media: String,
    next: NextPart,
    ignore_retry_after: bool,
    until: Instant,
}

#[derive(Default)]
struct Tally {
    connects: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.connects += other.connects;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// One blocking reload after another on `client`, until the run ends or a request
/// fails (the connection closed, most often: the server refused it a place).
async fn slot(client: H3Client, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < plan.until {
        let (msn, part) = plan.next.get();
        let reload = format!("{}?_HLS_msn={msn}&_HLS_part={part}", plan.media);
        match tokio::time::timeout_at(plan.until.into(), client.get(&reload)).await {
            Err(_) => break,
            Ok(Ok(fetched)) => {
                *tally.statuses.entry(fetched.status()).or_default() += 1;
                if fetched.status() == 200
                    && let Some(playlist) = parse_media_playlist(&fetched.text())
                {
                    plan.next.raise(playlist.next_part());
                }
                if fetched.status() == 400
                    && let Ok(Ok(plain)) =
                        tokio::time::timeout_at(plan.until.into(), client.get(&plan.media)).await
                    && let Some(playlist) = parse_media_playlist(&plain.text())
                {
                    plan.next.reset(playlist.next_part());
                }
                let retry_after = fetched
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if let (Some(seconds), false) = (retry_after, plan.ignore_retry_after) {
                    let wake = Instant::now() + Duration::from_secs(seconds.min(10));
                    tokio::time::sleep_until(wake.min(plan.until).into()).await;
                }
            }
            Ok(Err(e)) => {
                *tally.errors.entry(e.kind().to_string()).or_default() += 1;
                break;
            }
        }
    }
    tally
}

/// A connection carrying `slots` slots; when they have all failed it connects again a
/// second later, as a client that wants its requests held would.
async fn connection(
    endpoint: quinn::Endpoint,
    (addr, server_name): (SocketAddr, Arc<str>),
    slots: usize,
    plan: Arc<Plan>,
) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < plan.until {
        let connect = H3Client::connect_on(&endpoint, addr, &server_name);
        let Ok(connected) = tokio::time::timeout_at(plan.until.into(), connect).await else {
            break;
        };
        match connected {
            Ok(client) => {
                tally.connects += 1;
                let runs = (0..slots).map(|_| slot(client.clone(), plan.clone()));
                for run in futures_util::future::join_all(runs).await {
                    tally.add(run);
                }
            }
            Err(e) => *tally.errors.entry(e.kind().to_string()).or_default() += 1,
        }
        tokio::time::sleep_until(
            plan.until
                .min(Instant::now() + Duration::from_secs(1))
                .into(),
        )
        .await;
    }
    tally
}

/// Runs the flood and reports.
pub async fn run(options: &FloodOptions) -> Result<FloodReport, ViewersError> {
    if options.held == 0 || options.held > 100_000 {
        return Err(ViewersError::Bounds("--held must be in 1..=100000"));
    }
    if options.connections == 0 || options.connections > options.held {
        return Err(ViewersError::Bounds("--connections must be in 1..=held"));
    }
    if options.duration.is_zero() || options.duration > Duration::from_secs(3600) {
        return Err(ViewersError::Bounds("--seconds must be in 1..=3600"));
    }
    let (addr, server_name, path) = target(&options.url, options.remote_ok)?;
    if addr.is_ipv4() != options.bind.is_ipv4() {
        return Err(ViewersError::Bounds(
            "--bind and the URL's host are not of one family",
        ));
    }
    let tls = mirror::tls::client_config_from_pem(Path::new(&options.ca))?;
    let endpoints = (0..options.connections.min(MAX_CLIENT_SOCKETS))
        .map(|_| client_endpoint_at(SocketAddr::new(options.bind, 0), tls.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ViewersError::Stream(e.to_string()))?;
    // Where the live edge is, if the server will say: an address it has cut off (from
    // an earlier run) learns it from its first answer instead, since a reload for MSN 0
    // is answered at once.
    let first = match H3Client::connect_on(&endpoints[0], addr, &server_name).await {
        Ok(client) => client.get(&path).await.ok(),
        // A wrong CA can only fail the run; a refusal is what a flood expects.
        Err(error) if error.to_string().contains("certificate") || error.kind() == "tls" => {
            return Err(ViewersError::Stream(error.to_string()));
        }
        Err(_) => None,
    };
    let started = Instant::now();
    let plan = Arc::new(Plan {
        media: path,
        next: NextPart(AtomicU64::new(0)),
        ignore_retry_after: options.ignore_retry_after,
        until: started + options.duration,
    });
    if let Some(playlist) = first
        .filter(|f| f.status() == 200)
        .and_then(|f| parse_media_playlist(&f.text()))
    {
        plan.next.raise(playlist.next_part());
    }
    let server: Arc<str> = server_name.into();
    let tasks: Vec<_> = (0..options.connections)
        .map(|i| {
            // The slots spread evenly: the first `held % connections` carry one more.
            let slots = options.held / options.connections
                + usize::from(i < options.held % options.connections);
            tokio::spawn(connection(
                endpoints[i % endpoints.len()].clone(),
                (addr, server.clone()),
                slots,
                plan.clone(),
            ))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.add(tally);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Closed, and the closes sent, before the process exits: otherwise the server keeps
    // the connections (and their held requests) until its idle timeout.
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"done");
    }
    for endpoint in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    }
    Ok(FloodReport {
        held: options.held,
        connections: options.connections,
        connects: total.connects,
        seconds,
        answers_per_s: total.statuses.values().sum::<u64>() as f64 / seconds,
        statuses: total.statuses,
        errors: total.errors,
    })
}
