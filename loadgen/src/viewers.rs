//! `mirror bench viewers`: N emulated LL-HLS viewers over HTTP/3, each on its own QUIC
//! connection, doing what hls.js does at the live edge: a blocking reload for the next
//! part, then fetching the parts it newly lists. Any LL-HLS server will do.
//!
//! Announce delay: for each part, the arrival of the first playlist that lists it minus
//! the part's media end time (its segment's EXT-X-PROGRAM-DATE-TIME plus the durations
//! of the parts before it and its own). Mirror stamps PDT with capture time and emits a
//! part when its last frame is captured, which is one frame before the part's media end:
//! a value of about minus one frame (−33 ms at 30 fps) is an instant announce.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::client::{ClientError, Fetched, H3Client, client_endpoint};
use super::h2client::H2Client;
pub use crate::report::{Percentiles, ViewersReport};
use mirror::llhls::parse::{ListedPlaylist, parse_media_playlist};

/// Most newly listed parts a viewer fetches after one reload; beyond that it re-syncs.
const MAX_CATCH_UP_PARTS: usize = 3;

/// Most UDP sockets the viewers spread over. Real players each have their own; viewers
/// sharing one socket share its one quinn endpoint driver, whose receive queue then
/// holds one viewer's playlist behind the others' parts: at 100 viewers of 720p on one
/// socket that queue was a 75 ms announce-delay tail of the load generator's own. 256
/// stays well under the open-file limit.
const MAX_CLIENT_SOCKETS: usize = 256;

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ViewersError {
    /// The URL is not `https://host:port/path`.
    #[error("URL {0:?} is not https://host:port/path")]
    Url(String),
    /// The host resolves to an address that is not loopback.
    #[error("{0} is not a loopback address; pass --remote-ok to load a host you run")]
    NotLoopback(SocketAddr),
    /// Counts out of bounds.
    #[error("{0}")]
    Bounds(&'static str),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] mirror::tls::TlsError),
    /// The first viewer could not even read the playlist.
    #[error("cannot follow the stream: {0}")]
    Stream(String),
}

/// What each viewer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Follow the live edge like hls.js: blocking reload for the next part, then the
    /// parts it lists.
    #[default]
    Live,
    /// Fetch the parts the playlist lists, round robin, as fast as answers come: an
    /// egress measurement that any static server (Caddy serving a recording) can take
    /// part in too.
    Parts,
}

/// The transport the viewers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// HTTP/3 over QUIC.
    #[default]
    Http3,
    /// HTTP/2 over TLS over TCP.
    Http2,
}

/// One viewer's connection, over either transport.
#[derive(Clone)]
enum Connection {
    H3(H3Client),
    H2(H2Client),
}

impl Connection {
    async fn get(&self, path: &str) -> Result<Fetched, ClientError> {
        match self {
            Connection::H3(c) => c.get(path).await,
            Connection::H2(c) => c.get(path).await,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ViewersOptions {
    /// What each viewer does.
    pub mode: LoadMode,
    /// Over which transport.
    pub transport: Transport,
    /// Multivariant or media playlist URL.
    pub url: String,
    /// Number of viewers (connections).
    pub viewers: usize,
    /// How long they watch.
    pub duration: Duration,
    /// Certificate to trust (the server's self-signed one, or its CA).
    pub ca: PathBuf,
    /// The server's process, whose CPU time is reported.
    pub server_pid: Option<u32>,
    /// Allow a host that is not loopback.
    pub remote_ok: bool,
    /// Live viewers switch to the next rendition this often (as hls.js does on a
    /// bandwidth change: the new playlist asked for at the position the old one's
    /// EXT-X-RENDITION-REPORT gives). `None`: they stay on their rendition.
    pub switch_every: Option<Duration>,
}

#[derive(Default)]
struct ViewerTally {
    requests: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    announce_ms: Vec<f64>,
    reload_ms: Vec<f64>,
    switches: u64,
    switch_ms: Vec<f64>,
}

impl ViewerTally {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

pub(crate) fn target(
    url: &str,
    remote_ok: bool,
) -> Result<(SocketAddr, String, String), ViewersError> {
    let uri: http::Uri = url.parse().map_err(|_| ViewersError::Url(url.into()))?;
    if uri.scheme_str() != Some("https") {
        return Err(ViewersError::Url(url.into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| ViewersError::Url(url.into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|_| ViewersError::Url(url.into()))?
        .next()
        .ok_or_else(|| ViewersError::Url(url.into()))?;
    if !addr.ip().is_loopback() && !remote_ok {
        return Err(ViewersError::NotLoopback(addr));
    }
    // Certificates name localhost, not 127.0.0.1's reverse: use the name the URL gave.
    let server_name = if host == "127.0.0.1" || host == "::1" {
        "localhost".to_string()
    } else {
        host
    };
    Ok((addr, server_name, uri.path().to_string()))
}

fn sibling(path: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_string();
    }
    match path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{uri}"),
        None => format!("/{uri}"),
    }
}

/// The media playlist paths behind `path`: itself, or every variant of a
/// multivariant playlist.
async fn media_paths(client: &Connection, path: &str) -> Result<Vec<String>, String> {
    let fetched = client.get(path).await.map_err(|e| e.to_string())?;
    if fetched.status() != 200 {
        return Err(format!("{path}: status {}", fetched.status()));
    }
    match m3u8_rs::parse_playlist_res(&fetched.body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) if !master.variants.is_empty() => Ok(master
            .variants
            .iter()
            .map(|v| sibling(path, &v.uri))
            .collect()),
        Ok(m3u8_rs::Playlist::MasterPlaylist(_)) => {
            Err("multivariant playlist lists no variant".to_string())
        }
        Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => Ok(vec![path.to_string()]),
        Err(_) => parse_media_playlist(&fetched.text())
            .map(|_| vec![path.to_string()])
            .ok_or_else(|| format!("{path}: not a playlist")),
    }
}

/// `client.get(path)`, abandoned at `until` (`None` then): a run ends on time even when
/// responses are slow.
async fn get_until(
    client: &Connection,
    path: &str,
    until: Instant,
) -> Option<Result<Fetched, ClientError>> {
    tokio::time::timeout_at(until.into(), client.get(path))
        .await
        .ok()
}

/// The media playlist as a viewer first loads it (counted in `tally`); `None`, with the
/// error counted, when it cannot.
async fn first_playlist(
    client: &Connection,
    media: &str,
    tally: &mut ViewerTally,
) -> Option<ListedPlaylist> {
    match client.get(media).await {
        Ok(f) if f.status() == 200 => {
            tally.requests += 1;
            tally.bytes += f.body.len() as u64;
            Some(parse_media_playlist(&f.text()).unwrap_or_default())
        }
        Ok(f) => {
            tally.error(format!("status-{}", f.status()));
            None
        }
        Err(e) => {
            tally.error(e.kind().to_string());
            None
        }
    }
}

/// Where a live viewer is going next: the next part of its rendition, or another
/// rendition at the position its report gives.
struct Switch {
    variants: Arc<Vec<String>>,
    current: usize,
    every: Option<Duration>,
    next_at: Instant,
    /// When the switch under way was decided.
    started: Option<Instant>,
}

async fn viewer(client: Connection, mut switch: Switch, until: Instant) -> ViewerTally {
    let mut tally = ViewerTally::default();
    let mut media = switch.variants[switch.current].clone();
    let Some(mut playlist) = first_playlist(&client, &media, &mut tally).await else {
        return tally;
    };
    let mut seen: HashSet<String> = playlist.parts().map(|p| p.uri.clone()).collect();
    while Instant::now() < until && !playlist.ended {
        let (mut msn, mut part) = playlist.next_part();
        if let Some(every) = switch.every
            && switch.variants.len() > 1
            && Instant::now() >= switch.next_at
        {
            // hls.js on a level switch: the new level's playlist, asked for at the part
            // after the one the old playlist's rendition report names.
            let target = (switch.current + 1) % switch.variants.len();
            let name = switch.variants[target].rsplit('/').next().unwrap_or("");
            match playlist.rendition_reports.iter().find(|r| r.uri == name) {
                Some(report) => {
                    msn = report.last_msn;
                    part = report.last_part.map_or(0, |p| p + 1);
                    switch.current = target;
                    switch.started = Some(Instant::now());
                    media = switch.variants[target].clone();
                    tally.switches += 1;
                }
                None => tally.error("no-rendition-report".into()),
            }
            switch.next_at = Instant::now() + every;
        }
        let started = Instant::now();
        let reload = format!("{media}?_HLS_msn={msn}&_HLS_part={part}");
        let fetched = match get_until(&client, &reload, until).await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tally.error(e.kind().to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let arrived = SystemTime::now();
        tally.requests += 1;
        tally.bytes += fetched.body.len() as u64;
        if fetched.status() != 200 {
            tally.error(format!("status-{}", fetched.status()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tally
            .reload_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        let Some(next) = parse_media_playlist(&fetched.text()) else {
            tally.error("unreadable-playlist".into());
            continue;
        };
        if switch.started.is_some() {
            // A new rendition: only its newest part is fetched; what it listed before
            // is what the viewer already has from the old one.
            let newest = next.parts().last().map(|p| p.uri.clone());
            seen = next.parts().map(|p| p.uri.clone()).collect();
            if let Some(uri) = newest {
                seen.remove(&uri);
            }
        }
        let media_ends: HashMap<&str, SystemTime> = next.part_media_ends().into_iter().collect();
        let mut new_parts = Vec::new();
        for part in next.parts() {
            // A gap part (the source was down) has no media; players do not load it.
            if !seen.insert(part.uri.clone()) || part.gap {
                continue;
            }
            // Parts listed before any PROGRAM-DATE-TIME have no media time to compare.
            if let Some(media_end) = media_ends.get(part.uri.as_str()) {
                let delay = match arrived.duration_since(*media_end) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                tally.announce_ms.push(delay * 1000.0);
            }
            new_parts.push(part.uri.clone());
        }
        // A player that has fallen more than a few parts behind jumps to the live edge
        // rather than fetching everything it missed (hls.js re-syncs past its maximum
        // latency); so does this viewer, and counts it.
        if new_parts.len() > MAX_CATCH_UP_PARTS {
            tally.error("resync".into());
            new_parts.drain(..new_parts.len() - MAX_CATCH_UP_PARTS);
        }
        for uri in new_parts {
            match get_until(&client, &sibling(&media, &uri), until).await {
                None => break,
                Some(Ok(f)) if f.status() == 200 => {
                    tally.requests += 1;
                    tally.bytes += f.body.len() as u64;
                    if let Some(at) = switch.started.take() {
                        tally.switch_ms.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Some(Ok(f)) => {
                    tally.requests += 1;
                    tally.error(format!("status-{}", f.status()));
                }
                Some(Err(e)) => tally.error(e.kind().to_string()),
            }
        }
        playlist = next;
    }
    tally
}

/// A viewer in [`LoadMode::Parts`]: the parts listed in the playlist, fetched round
/// robin until `until`.
async fn part_fetcher(client: Connection, media: String, until: Instant) -> ViewerTally {
    let mut tally = ViewerTally::default();
    let Some(playlist) = first_playlist(&client, &media, &mut tally).await else {
        return tally;
    };
    let uris: Vec<String> = playlist
        .parts()
        .filter(|p| !p.gap)
        .map(|p| sibling(&media, &p.uri))
        .collect();
    if uris.is_empty() {
        tally.error("no-parts-listed".into());
        return tally;
    }
    let mut i = 0;
    while Instant::now() < until {
        let Some(fetched) = get_until(&client, &uris[i % uris.len()], until).await else {
            break;
        };
        match fetched {
            Ok(f) => {
                tally.requests += 1;
                tally.bytes += f.body.len() as u64;
                if f.status() != 200 {
                    tally.error(format!("status-{}", f.status()));
                }
            }
            Err(e) => tally.error(e.kind().to_string()),
        }
        i += 1;
    }
    tally
}

/// Runs the viewers and reports.
pub async fn run(options: &ViewersOptions) -> Result<ViewersReport, ViewersError> {
    if options.viewers == 0 || options.viewers > 20_000 {
        return Err(ViewersError::Bounds("--viewers must be in 1..=20000"));
    }
    if options.duration.is_zero() || options.duration > Duration::from_secs(86_400) {
        return Err(ViewersError::Bounds(
            "--seconds must be in 1..=86400 (a day)",
        ));
    }
    let (addr, server_name, path) = target(&options.url, options.remote_ok)?;
    let tls = mirror::tls::client_config_from_pem(Path::new(&options.ca))?;
    let viewers_per_socket = options.viewers.div_ceil(MAX_CLIENT_SOCKETS);
    let endpoints = (0..options.viewers.div_ceil(viewers_per_socket))
        .map(|_| client_endpoint(addr, tls.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ViewersError::Stream(e.to_string()))?;
    let connect = |i: usize| {
        let (endpoint, tls, server_name) = (
            &endpoints[i / viewers_per_socket],
            tls.clone(),
            server_name.clone(),
        );
        async move {
            match options.transport {
                Transport::Http3 => H3Client::connect_on(endpoint, addr, &server_name)
                    .await
                    .map(Connection::H3),
                Transport::Http2 => H2Client::connect(addr, &server_name, tls)
                    .await
                    .map(Connection::H2),
            }
        }
    };
    let first = connect(0)
        .await
        .map_err(|e| ViewersError::Stream(e.to_string()))?;
    let variants = Arc::new(
        media_paths(&first, &path)
            .await
            .map_err(ViewersError::Stream)?,
    );
    let media = variants[0].clone();

    let mut clients = vec![first];
    let mut connect_errors = 0u64;
    for i in 1..options.viewers {
        match connect(i).await {
            Ok(c) => clients.push(c),
            Err(_) => connect_errors += 1,
        }
    }
    let cpu_before = options.server_pid.and_then(crate::cpu::process_cpu_seconds);
    let started = Instant::now();
    let until = started + options.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| match options.mode {
            LoadMode::Live => {
                // Viewers spread over the renditions and switch at staggered times.
                let every = options.switch_every;
                let switch = Switch {
                    variants: variants.clone(),
                    current: i % variants.len(),
                    every,
                    next_at: started
                        + every.map_or(Duration::ZERO, |e| e.mul_f64(1.0 + (i % 10) as f64 / 10.0)),
                    started: None,
                };
                tokio::spawn(viewer(c, switch, until))
            }
            LoadMode::Parts => tokio::spawn(part_fetcher(c, media.clone(), until)),
        })
        .collect();
    let mut total = ViewerTally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            total.requests += t.requests;
            total.bytes += t.bytes;
            total.announce_ms.extend(t.announce_ms);
            total.reload_ms.extend(t.reload_ms);
            total.switches += t.switches;
            total.switch_ms.extend(t.switch_ms);
            for (kind, n) in t.errors {
                *total.errors.entry(kind).or_default() += n;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if connect_errors > 0 {
        total.errors.insert("connect".into(), connect_errors);
    }
    let cpu = match (
        cpu_before,
        options.server_pid.and_then(crate::cpu::process_cpu_seconds),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let gb = total.bytes as f64 / 1e9;
    Ok(ViewersReport {
        viewers: options.viewers,
        seconds,
        requests: total.requests,
        requests_per_s: total.requests as f64 / seconds,
        bytes: total.bytes,
        egress_bits_per_s: total.bytes as f64 * 8.0 / seconds,
        server_cpu_s: cpu,
        server_cpu_s_per_gb: cpu.filter(|_| gb > 0.0).map(|c| c / gb),
        errors: total.errors,
        announce_delay_ms: Percentiles::of(total.announce_ms),
        reload_wait_ms: Percentiles::of(total.reload_ms),
        switches: total.switches,
        switch_ms: Percentiles::of(total.switch_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_told() {
        assert!(target("https://127.0.0.1:4443/test/index.m3u8", false).is_ok());
        assert!(target("https://[::1]:4443/test/index.m3u8", false).is_ok());
        assert!(matches!(
            target("https://10.1.2.3:4443/x.m3u8", false),
            Err(ViewersError::NotLoopback(_))
        ));
        assert!(matches!(
            target("http://127.0.0.1:4443/x.m3u8", false),
            Err(ViewersError::Url(_))
        ));
        assert_eq!(
            sibling("/test/index.m3u8", "video.m3u8"),
            "/test/video.m3u8"
        );
        assert_eq!(Percentiles::of(vec![3.0, 1.0, 2.0]).p50, 2.0);
    }
}
