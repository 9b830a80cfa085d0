//! `mirror serve`: the live streams, the store, and both front ends, started together
//! and stopped together; the streams changed while it runs ([`streams`]: admin API,
//! config reload) and the certificate reloaded when its files change.

mod push;
pub mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Settings, StreamSettings};
use crate::http::admin::Admin;
use crate::http::clients::Admission;
use crate::http::{AppState, h3, tcp};
use crate::ingest::SourceSpec;
use crate::ingest::push::PushPoints;
use crate::pipeline::RenditionSpec;
use crate::store::Store;
use crate::stream::{LiveStream, StreamError};
use crate::tls::{self, CertificateResolver, TlsError, TlsMaterial};

pub use streams::{ConfigFile, Origin, ReloadError, ReloadSummary, StreamSet};

/// The built-in player page.
const PAGE: &str = include_str!("../web/index.html");

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A stream.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// UDP or TCP.
        transport: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The QUIC configuration was refused.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// How often the certificate's files are looked at (an ACME client renews them in
/// place; SIGHUP looks at once).
const CERTIFICATE_POLL: Duration = Duration::from_secs(2);

/// How often the config file is looked at, with `server.watch_config`.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// A running server. Dropping it stops everything.
pub struct RunningServer {
    /// Where HTTP/3 listens (UDP).
    pub h3_addr: SocketAddr,
    /// Where HTTP/1.1 + HTTP/2 listen (TCP).
    pub tcp_addr: SocketAddr,
    /// Where plain HTTP/1.1 listens for a cache tier (`server.http_listen`), if it does.
    pub http_addr: Option<SocketAddr>,
    /// Where RTMP publishers connect (`[push] rtmp_listen`), if anywhere.
    pub rtmp_addr: Option<SocketAddr>,
    /// Where SRT publishers call (`[push] srt_listen`), if anywhere.
    pub srt_addr: Option<SocketAddr>,
    /// The ICE candidate WHIP publishers send media to (`[push] whip_listen`), if any.
    pub whip_addr: Option<SocketAddr>,
    /// The certificate it started with.
    pub tls: TlsMaterial,
    /// The certificate presented now (replaced when its files change).
    pub certificate: Arc<CertificateResolver>,
    /// Asks the certificate watcher to look at the files now (SIGHUP).
    certificate_nudge: Arc<tokio::sync::Notify>,
    /// What the front ends serve from: the streams' handles, by name.
    pub state: Arc<AppState>,
    /// The running streams and the one way to change them (their media threads stop
    /// when the server is dropped).
    pub streams: Arc<StreamSet>,
    endpoint: quinn::Endpoint,
    /// Each listener's admission, to see when its connections are gone.
    admissions: Vec<Admission>,
    tasks: Vec<JoinHandle<()>>,
}

/// Reloads the config file whenever what it says changes, as SIGHUP does; runs until
/// the server's streams are gone. The file is read and compared with the settings in
/// force at each look (a few kilobytes every two seconds): no change made while the
/// server was starting, nor a rewrite within one tick of the file's clock, is missed. A
/// file that does not load (half written, invalid) is logged once per error and tried
/// again at the next look.
async fn watch_config(streams: std::sync::Weak<StreamSet>) {
    let mut refused: Option<String> = None;
    loop {
        tokio::time::sleep(CONFIG_POLL).await;
        let Some(streams) = streams.upgrade() else {
            return;
        };
        match streams.reload_if_changed().await {
            Ok(_) => refused = None,
            Err(error) => {
                let error = error.to_string();
                if refused.as_ref() != Some(&error) {
                    tracing::error!(%error, "config not reloaded: the running config stays");
                    refused = Some(error);
                }
            }
        }
    }
}

/// What [`RunningServer::start_streams`] takes: name, source and renditions of each.
fn to_start(wanted: Vec<StreamSettings>) -> Vec<(String, SourceSpec, Vec<RenditionSpec>)> {
    wanted
        .into_iter()
        .map(|s| (s.name, SourceSpec::parse(&s.source), s.renditions))
        .collect()
}

impl RunningServer {
    /// Starts a server with one test-pattern stream named `stream`. Must run inside a
    /// tokio runtime.
    pub async fn start(settings: &Settings, stream: &str) -> Result<Self, ServerError> {
        Self::start_with(settings, stream, &SourceSpec::TestPattern).await
    }

    /// Starts a server with the streams of `[[streams]]`, or else the command line's
    /// `default_stream`; a reload reads `file` again (when given).
    pub async fn start_from(
        settings: &Settings,
        default_stream: StreamSettings,
        file: Option<std::path::PathBuf>,
        overrides: crate::config::Overrides,
    ) -> Result<Self, ServerError> {
        let wanted = settings.streams_or(&default_stream.name, &default_stream.source);
        let server = Self::start_streams(settings, &to_start(wanted)).await?;
        if let Some(path) = file {
            if settings.server.watch_config {
                tokio::spawn(watch_config(Arc::downgrade(&server.streams)));
            }
            server
                .streams
                .reload_from(ConfigFile {
                    path,
                    overrides,
                    default_stream,
                })
                .await;
        }
        Ok(server)
    }

    /// Reads the config file again and applies it (SIGHUP), and looks at the
    /// certificate's files now. An invalid file changes nothing.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.certificate_nudge.notify_one();
        self.streams.reload().await
    }

    /// [`reload`](Self::reload) on a task of its own, its outcome logged (SIGHUP): a
    /// reload may wait for a replaced stream's source to publish, and the process must
    /// still answer SIGTERM meanwhile.
    pub fn reload_in_background(&self) {
        self.certificate_nudge.notify_one();
        let streams = self.streams.clone();
        tokio::spawn(async move {
            if let Err(error) = streams.reload().await {
                tracing::error!(%error, "config not reloaded: the running config stays");
            }
        });
    }

    /// Starts a server with one stream named `stream` playing `source`, or with the
    /// streams of `[[streams]]` when the settings have any.
    pub async fn start_with(
        settings: &Settings,
        stream: &str,
        source: &SourceSpec,
    ) -> Result<Self, ServerError> {
        let wanted = settings.streams_or(stream, &source.to_string_unredacted());
        Self::start_streams(settings, &to_start(wanted)).await
    }

    /// Starts a server with `streams`: name, source and renditions of each.
    pub async fn start_streams(
        settings: &Settings,
        streams: &[(String, SourceSpec, Vec<RenditionSpec>)],
    ) -> Result<Self, ServerError> {
        let server = &settings.server;
        let tls = tls::load_or_generate(
            server.cert.as_deref(),
            server.key.as_deref(),
            &server.certs_dir,
        )?;
        let target = settings.cmaf.segment_target().max(Duration::from_secs(1));
        // 6.2.2: media leaving the playlist stays fetchable for three target durations
        // more; the whole window plus that, with room.
        let retention = target * (u32::try_from(server.window_segments).unwrap_or(1000) + 6);
        // An equal share of the budget each: one stream's media never evicts another's
        // (shared anew when streams are added or removed).
        let share = server.store_bytes / u64::try_from(streams.len().max(1)).unwrap_or(1);
        let store = Store::partitioned(
            streams.iter().map(|(name, _, _)| (name.clone(), share)),
            0,
            retention,
        );
        let auth = Arc::new(crate::http::auth::Access::new(&settings.auth).map_err(|e| {
            ServerError::Config(crate::config::ConfigError::Invalid {
                field: e.field,
                reason: e.reason,
            })
        })?);
        let push_points = Arc::new(PushPoints::new(
            settings.push.second_publisher,
            settings.push.publisher_clock,
        ));
        let mut live = Vec::with_capacity(streams.len());
        for (name, source, renditions) in streams {
            // The config file's entry (the command line's stream has none: the default
            // policy, no publish key).
            let configured = settings.streams.iter().find(|s| &s.name == name);
            let options = push::options_for(settings, &push_points, name, configured);
            let started = LiveStream::start(name, source, renditions, &options, store.clone())?;
            let policy = configured.and_then(|s| s.policy);
            auth.set_policy(name, policy);
            let settings = StreamSettings {
                name: name.clone(),
                source: source.to_string_unredacted(),
                renditions: renditions.clone(),
                policy,
                publish_key: configured.and_then(|s| s.publish_key.clone()),
                publish_key_sha256: configured.and_then(|s| s.publish_key_sha256.clone()),
                srt_passphrase: configured.and_then(|s| s.srt_passphrase.clone()),
            };
            live.push((started, settings));
        }
        let handles = live
            .iter()
            .map(|(s, _)| s.handle().clone())
            .collect::<Vec<_>>();
        let hls_js = player_script(server.hls_js.as_deref());
        // Tasks started before the listeners: WHIP's (its handle goes in the state).
        let mut early_tasks = Vec::new();
        let whip = push::start_whip(settings, &push_points, &mut early_tasks).await?;
        let state = AppState::new(
            handles,
            store.clone(),
            Bytes::from_static(PAGE.as_bytes()),
            hls_js,
        )
        .with_limits(settings.limits.clone())
        .with_access_log(settings.log.access_sample_every)
        .with_auth(auth.clone());
        let state = match &whip {
            Some((handle, _)) => state.with_whip(handle.clone()),
            None => state,
        };
        let stream_set = StreamSet::new(
            live,
            settings,
            state.streams.clone(),
            state.metrics.clone(),
            store,
            auth,
            push_points.clone(),
        );
        let state = match settings.admin.resolve_token() {
            Ok(Some(token)) => state.with_admin(Admin::new(token, stream_set.clone())),
            Ok(None) => state,
            Err((field, reason)) => {
                return Err(ServerError::Config(crate::config::ConfigError::Invalid {
                    field,
                    reason,
                }));
            }
        };
        let state = Arc::new(state);
        state.metrics.watch(&state.streams);
        raise_open_file_limit();

        let certificate = CertificateResolver::new(&tls)?;
        let certificate_nudge = Arc::new(tokio::sync::Notify::new());
        let quic_tls = tls::server_config_with(certificate.clone(), &[b"h3"], true)?;
        let quic = h3::server_config(quic_tls, &settings.limits)
            .map_err(|e| ServerError::Quic(e.to_string()))?;
        let (endpoint, h3_addr, listener) = bind_same_port(quic, server.listen).await?;
        let tcp_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: h3_addr,
            transport: "TCP",
            source,
        })?;
        let tcp_tls = Arc::new(tls::server_config_with(
            certificate.clone(),
            &[b"h2", b"http/1.1"],
            false,
        )?);

        // Each listener has its own connection budget; the per-address one is shared.
        let mut admissions = vec![
            Admission::new(state.clients.clone()),
            Admission::new(state.clients.clone()),
        ];
        let mut tasks = vec![
            tokio::spawn(tls::watch_files(
                Arc::downgrade(&certificate),
                tls.clone(),
                CERTIFICATE_POLL,
                certificate_nudge.clone(),
            )),
            tokio::spawn(h3::serve(
                endpoint.clone(),
                state.clone(),
                admissions[0].clone(),
            )),
            tokio::spawn(tcp::serve(
                listener,
                tcp::Front::Tls {
                    config: tcp_tls,
                    h3_port: h3_addr.port(),
                },
                state.clone(),
                admissions[1].clone(),
            )),
        ];
        let http_addr = match server.http_listen {
            Some(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Bind {
                            addr,
                            transport: "TCP (plain HTTP)",
                            source,
                        })?;
                let bound = listener.local_addr().map_err(|source| ServerError::Bind {
                    addr,
                    transport: "TCP (plain HTTP)",
                    source,
                })?;
                let admission = Admission::new(state.clients.clone());
                admissions.push(admission.clone());
                tasks.push(tokio::spawn(tcp::serve(
                    listener,
                    tcp::Front::Plain,
                    state.clone(),
                    admission,
                )));
                Some(bound)
            }
            None => None,
        };
        let pushed = push::bind_listeners(settings, &push_points, &mut tasks).await?;
        tasks.extend(early_tasks);
        Ok(Self {
            h3_addr,
            tcp_addr,
            http_addr,
            rtmp_addr: pushed.rtmp,
            srt_addr: pushed.srt,
            whip_addr: whip.map(|(_, candidate)| candidate),
            tls,
            certificate,
            certificate_nudge,
            state,
            streams: stream_set,
            endpoint,
            admissions,
            tasks,
        })
    }

    /// Connections open now, all listeners together.
    pub fn open_connections(&self) -> usize {
        self.admissions.iter().map(Admission::open).sum()
    }

    /// Stops gracefully: no new connections; GOAWAY on every HTTP/3 and HTTP/2
    /// connection and no keep-alive on HTTP/1.1; held requests answered 503 with
    /// Retry-After; responses in flight finish, for at most `grace`; then the QUIC
    /// endpoint closes with H3_NO_ERROR and the streams stop. Returns how many
    /// connections were still open when the grace ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        self.state.clients.begin_draining();
        // QUIC: new handshakes are refused from now on.
        self.endpoint.set_server_config(None);
        let deadline = tokio::time::Instant::now() + grace;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.open_connections();
        self.endpoint.close(H3_NO_ERROR.into(), b"server stopping");
        // Let the CONNECTION_CLOSE frames leave before the socket does.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        left
    }

    /// Stops stream `name`'s media thread without taking it out of service (what a
    /// source that ends does). False when there is no such stream.
    pub fn stop_stream(&self, name: &str) -> bool {
        self.streams.stop_media(name)
    }
}

/// H3_NO_ERROR (RFC 9114 8.1).
const H3_NO_ERROR: u32 = 0x0100;

/// Every connection is a file descriptor: the soft limit (often 1024) is raised to the
/// hard one, as nginx's `worker_rlimit_nofile` and Go's runtime do, so that
/// `limits.max_connections` and not the default decides when connections are refused.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.endpoint.close(H3_NO_ERROR.into(), b"server stopping");
        for task in &self.tasks {
            task.abort();
        }
        self.streams.stop_all();
    }
}

/// hls.js as built into the binary (empty when the build found no `node_modules`).
const EMBEDDED_HLS_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js"));

/// The player page's hls.js: `configured` when given and readable, else the copy built
/// into the binary; none (the page says so) without either.
fn player_script(configured: Option<&std::path::Path>) -> Option<Bytes> {
    if let Some(path) = configured {
        match std::fs::read(path) {
            Ok(js) => return Some(Bytes::from(js)),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "server.hls_js unreadable: serving the built-in hls.js");
            }
        }
    }
    if EMBEDDED_HLS_JS.is_empty() {
        tracing::warn!(
            "no hls.js built in (built without node_modules; run scripts/setup): the player page cannot play"
        );
        return None;
    }
    Some(Bytes::from_static(EMBEDDED_HLS_JS))
}

/// Binds QUIC on `listen` and TCP on the same port, so that Alt-Svc and the URL agree.
/// With port 0 the kernel picks the UDP port, and that number may already be taken on
/// TCP (a client's ephemeral port, another test's listener): then both are dropped and
/// another port is picked, a bounded number of times.
async fn bind_same_port(
    quic: quinn::ServerConfig,
    listen: SocketAddr,
) -> Result<(quinn::Endpoint, SocketAddr, TcpListener), ServerError> {
    const ATTEMPTS_ON_ANY_PORT: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp_error = |source| ServerError::Bind {
            addr: listen,
            transport: "UDP",
            source,
        };
        let endpoint = quinn::Endpoint::server(quic.clone(), listen).map_err(udp_error)?;
        let h3_addr = endpoint.local_addr().map_err(udp_error)?;
        let tcp_bind = SocketAddr::new(listen.ip(), h3_addr.port());
        match TcpListener::bind(tcp_bind).await {
            Ok(listener) => return Ok((endpoint, h3_addr, listener)),
            Err(source)
                if listen.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS_ON_ANY_PORT =>
            {
                endpoint.close(0u32.into(), b"");
                drop(endpoint);
            }
            Err(source) => {
                return Err(ServerError::Bind {
                    addr: tcp_bind,
                    transport: "TCP",
                    source,
                });
            }
        }
    }
}
