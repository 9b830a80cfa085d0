//! The `mirror` command line. Errors become `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mirror::config::{Overrides, Settings, StreamSettings};
use mirror::http::access::LogFormat;
use mirror::ingest::SourceSpec;
use mirror::record::{RecordOptions, record};
use mirror_loadgen::quic_bulk;
use mirror_loadgen::viewers::{LoadMode, Transport};

// quinn, h3 and tokio allocate and free small buffers per packet and per request;
// glibc's malloc spent about 11 % of the server's CPU at 1,000 viewers (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mirror",
    version,
    about = "Low-latency live edge server: LL-HLS over HTTP/3"
)]
struct Cli {
    /// TOML settings file; flags override it.
    #[arg(long, global = true, env = "MIRROR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a server: `mirror bench viewers ...`.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Serve the live test pattern (or a file, looped as live) as LL-HLS over HTTP/3,
    /// with HTTP/1.1 and HTTP/2 over TCP beside it.
    Serve {
        /// Source: `testsrc`, a file (looped as live), `rtsp://…`, or a URL libav opens.
        #[arg(long, default_value = "testsrc")]
        source: String,
        /// Stream name (its path): `test` for the test pattern, else `live`.
        #[arg(long)]
        name: Option<String>,
        /// Listen address of both listeners (overrides `server.listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// PEM certificate chain (overrides `server.cert`).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// PEM private key (overrides `server.key`).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Record a source (the test pattern, a file, an RTSP camera, a URL) to a directory as
    /// a finished LL-HLS presentation, through the same media path `serve` runs.
    Record {
        /// Seconds of media to record.
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Source: `testsrc`, a file (looped as live), `rtsp://…`, or a URL libav opens.
        #[arg(long, default_value = "testsrc")]
        source: String,
        /// Produce media as fast as it encodes instead of at real time.
        #[arg(long)]
        fast: bool,
        /// PART-TARGET in milliseconds (overrides `cmaf.part_target_ms`).
        #[arg(long)]
        part_target_ms: Option<u32>,
        /// Segment target in milliseconds (overrides `cmaf.segment_target_ms`).
        #[arg(long)]
        segment_target_ms: Option<u32>,
    },
    /// Make a playback token for `token` streams, signed with a key of `[auth] keys`:
    /// play `/t/TOKEN/STREAM/index.m3u8`.
    Token {
        /// The stream it admits: a name, or a prefix ending in `*` (`*`: every stream).
        #[arg(long)]
        stream: String,
        /// Seconds until it admits no new viewer.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Bind it to one client address or CIDR block (`203.0.113.7`, `10.0.0.0/8`).
        #[arg(long)]
        address: Option<ipnet::IpNet>,
        /// The key to sign with (default: the first of `[auth] keys`).
        #[arg(long)]
        key_id: Option<String>,
    },
}

/// `mirror token`: the token, and the path it plays under.
fn token(
    settings: &Settings,
    stream: String,
    ttl: u64,
    address: Option<ipnet::IpNet>,
    key_id: Option<String>,
) -> anyhow::Result<()> {
    use mirror::http::auth::token::{Claims, StreamPattern, sign};
    let keys = settings.auth.signing_keys()?;
    let key = match &key_id {
        Some(id) => keys.iter().find(|k| k.id() == id),
        None => keys.first(),
    }
    .with_context(|| match &key_id {
        Some(id) => format!("no key {id:?} in [auth] keys"),
        None => "no key in [auth] keys: add one ([[auth.keys]] id, secret) to sign with".into(),
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = Claims {
        key_id: key.id().to_string(),
        streams: StreamPattern::new(&stream),
        expires: now.checked_add(ttl).context("--ttl is too large")?,
        address,
        not_before: None,
    };
    let token = sign(&claims, key);
    println!("{token}");
    if !stream.contains('*') {
        eprintln!("play: /t/{token}/{stream}/index.m3u8");
    }
    Ok(())
}

/// What every measuring client needs: whom to trust, whose CPU to read, where to write.
#[derive(clap::Args)]
struct ReportArgs {
    /// Certificate to trust: the server's (Mirror's generated one by default).
    #[arg(long, default_value = "certs/cert.pem")]
    ca: PathBuf,
    /// The server's process id, to report its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// N emulated LL-HLS viewers over HTTP/3 against any server (loopback unless
    /// --remote-ok): requests/s, egress, server CPU per GB, errors, announce delay.
    Viewers {
        /// Multivariant or media playlist URL, e.g. https://127.0.0.1:4443/test/index.m3u8.
        #[arg(long)]
        url: String,
        /// Number of viewers, each on its own QUIC connection (1..=20000).
        #[arg(long, default_value_t = 100)]
        viewers: usize,
        /// How long they watch, seconds (1..=86400: a soak may run for hours).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[command(flatten)]
        report: ReportArgs,
        /// Allow a server that is not on loopback (only a host you run).
        #[arg(long)]
        remote_ok: bool,
        /// `live`: follow the live edge like hls.js; `parts`: fetch the listed parts
        /// back to back (egress; works against a static server too).
        #[arg(long, default_value = "live", value_parser = ["live", "parts"])]
        mode: String,
        /// Use HTTP/2 over TCP instead of HTTP/3 (the TCP path of the same server).
        #[arg(long)]
        http2: bool,
        /// Live viewers switch rendition every this many seconds, at the position the
        /// rendition reports give (a multivariant URL with several variants).
        #[arg(long)]
        switch_every: Option<f64>,
    },
    /// One hostile client address holding blocking reloads: N slots on C connections,
    /// each asking for the next part again as soon as it is answered (loopback unless
    /// --remote-ok). Run beside `bench viewers` to see what it costs other viewers.
    Flood {
        /// Media playlist URL, e.g. https://127.0.0.1:4443/test/video.m3u8.
        #[arg(long)]
        url: String,
        /// Blocking reloads kept outstanding (1..=100000).
        #[arg(long, default_value_t = 5000)]
        held: usize,
        /// QUIC connections they spread over.
        #[arg(long, default_value_t = 320)]
        connections: usize,
        /// Seconds (1..=3600).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Local address every connection comes from (127.0.0.2: another client than
        /// viewers on 127.0.0.1).
        #[arg(long, default_value = "127.0.0.2")]
        bind: std::net::IpAddr,
        #[command(flatten)]
        report: ReportArgs,
        /// Allow a server that is not on loopback (only a host you run).
        #[arg(long)]
        remote_ok: bool,
        /// Ask again at once after a 429 (a request flood), not after its Retry-After.
        #[arg(long)]
        ignore_retry_after: bool,
    },
    /// A raw QUIC bulk sender (the same quinn as Mirror): the ceiling for HTTP/3
    /// egress on this machine. Runs until Ctrl-C.
    QuicSource {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4445")]
        listen: std::net::SocketAddr,
        /// Where the certificate lives (generated if missing).
        #[arg(long, default_value = "certs")]
        certs_dir: PathBuf,
    },
    /// Reads from a `quic-source` for S seconds on N connections and reports.
    QuicBulk {
        /// The source's address (loopback).
        #[arg(long, default_value = "127.0.0.1:4445")]
        addr: std::net::SocketAddr,
        /// Connections (one stream each).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[command(flatten)]
        report: ReportArgs,
    },
}

fn bench(what: BenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match what {
        BenchCommand::Viewers {
            url,
            viewers,
            seconds,
            report: args,
            remote_ok,
            mode,
            http2,
            switch_every,
        } => {
            let options = mirror_loadgen::viewers::ViewersOptions {
                transport: if http2 {
                    Transport::Http2
                } else {
                    Transport::Http3
                },
                mode: if mode == "parts" {
                    LoadMode::Parts
                } else {
                    LoadMode::Live
                },
                url,
                viewers,
                duration: Duration::from_secs(seconds),
                ca: args.ca,
                server_pid: args.server_pid,
                remote_ok,
                switch_every: switch_every
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64),
            };
            let report = runtime.block_on(mirror_loadgen::viewers::run(&options))?;
            print!("{}", report.table());
            write_json(&report, args.json.as_deref())
        }
        BenchCommand::Flood {
            url,
            held,
            connections,
            seconds,
            bind,
            report: args,
            remote_ok,
            ignore_retry_after,
        } => {
            let options = mirror_loadgen::flood::FloodOptions {
                url,
                held,
                connections,
                duration: Duration::from_secs(seconds),
                bind,
                ca: args.ca,
                remote_ok,
                ignore_retry_after,
            };
            let report = runtime.block_on(mirror_loadgen::flood::run(&options))?;
            println!("{}", report.summary());
            write_json(&report, args.json.as_deref())
        }
        BenchCommand::QuicSource { listen, certs_dir } => runtime.block_on(async move {
            let tls = mirror::tls::load_or_generate(None, None, &certs_dir)?;
            let endpoint = quic_bulk::source(listen, &tls)?;
            println!(
                "QUIC bulk source on {listen} (ALPN {})",
                quic_bulk::ALPN_STR
            );
            tokio::select! {
                () = quic_bulk::serve(endpoint) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }),
        BenchCommand::QuicBulk {
            addr,
            connections,
            seconds,
            report: args,
        } => {
            let duration = Duration::from_secs(seconds);
            let report = runtime.block_on(quic_bulk::read(
                addr,
                &args.ca,
                connections,
                duration,
                args.server_pid,
            ))?;
            println!("{}", report.summary());
            write_json(&report, args.json.as_deref())
        }
    }
}

/// Prints `report` as one JSON line, and writes it to `path` too when given.
fn write_json(
    report: &impl serde::Serialize,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let text = serde_json::to_string(report).context("encoding the report")?;
    println!("{text}");
    if let Some(path) = path {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn serve(
    settings: Settings,
    stream: StreamSettings,
    file: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        // Before start-up, which can take seconds: a SIGHUP's default action is to end the
        // process, and a reload sent early (a unit's ExecReload) must not.
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let name = stream.name.clone();
        let server = mirror::server::RunningServer::start_from(&settings, stream, file, overrides).await?;
        let port = server.h3_addr.port();
        let host = if server.h3_addr.ip().is_loopback() && server.h3_addr.is_ipv4() { "127.0.0.1" } else { "localhost" };
        println!("Mirror is serving:");
        println!("  player page:   https://{host}:{port}/");
        for stream in server.state.streams.names() {
            println!("  stream {stream:?}: https://{host}:{port}/{stream}/index.m3u8");
            for rendition in server.state.streams.get(&stream).iter().flat_map(|s| s.renditions()) {
                println!("    media:       https://{host}:{port}/{stream}/{}.m3u8", rendition.id());
            }
        }
        println!("  status:        https://{host}:{port}/status (JSON: /streams, Prometheus: /metrics)");
        if server.state.admin.is_some() {
            println!("  admin API:     https://{host}:{port}/admin/streams (bearer token; /admin/openapi.json)");
        }
        println!("  HTTP/3 on UDP {}, HTTP/1.1 + HTTP/2 on TCP {}", server.h3_addr, server.tcp_addr);
        println!("  try:           curl --http3 -k https://{host}:{port}/{name}/video.m3u8");
        println!("  certificate:   {}", server.tls.cert_path.display());
        println!("  SPKI SHA-256:  {}", server.tls.spki_sha256);
        println!(
            "  chromium --origin-to-force-quic-on=127.0.0.1:{port} --ignore-certificate-errors-spki-list={} https://127.0.0.1:{port}/",
            server.tls.spki_sha256
        );
        loop {
            tokio::select! {
                interrupted = tokio::signal::ctrl_c() => {
                    interrupted.context("waiting for Ctrl-C")?;
                    break;
                }
                _ = terminate.recv() => break,
                // The running config stays when the file is invalid; the log names the
                // field.
                _ = hangup.recv() => server.reload_in_background(),
            }
        }
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
        tracing::info!(?grace, "stopping: finishing the responses in flight");
        let left = server.shutdown(grace).await;
        if left > 0 {
            tracing::warn!(connections = left, "grace period over: closing the rest");
        }
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })
}

/// Log lines to stderr, at `RUST_LOG` (default `info`; `mirror::access=off` silences the
/// access log), in `[log] format`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The format is the config's: read it first (its errors are printed plainly).
    let mut settings = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    init_logging(settings.log.format);
    let config_file = cli.config.clone();
    match cli.command {
        Command::Bench { what } => bench(what)?,
        Command::Serve {
            source,
            name,
            listen,
            cert,
            key,
        } => {
            let overrides = Overrides {
                listen,
                cert_and_key: cert.zip(key),
            };
            overrides.apply(&mut settings);
            settings.validate()?;
            let name = name.unwrap_or_else(|| {
                if source == "testsrc" {
                    "test".into()
                } else {
                    "live".into()
                }
            });
            let stream = StreamSettings {
                name,
                source,
                renditions: Vec::new(),
                policy: None,
                publish_key: None,
                publish_key_sha256: None,
                srt_passphrase: None,
            };
            serve(settings, stream, config_file, overrides)?;
        }
        Command::Token {
            stream,
            ttl,
            address,
            key_id,
        } => token(&settings, stream, ttl, address, key_id)?,
        Command::Record {
            seconds,
            out,
            source,
            fast,
            part_target_ms,
            segment_target_ms,
        } => {
            if let Some(ms) = part_target_ms {
                settings.cmaf.part_target_ms = ms;
            }
            if let Some(ms) = segment_target_ms {
                settings.cmaf.segment_target_ms = ms;
            }
            settings.validate()?;
            let options = RecordOptions {
                out_dir: out.clone(),
                duration: Duration::from_secs(seconds),
                realtime: !fast,
                source: SourceSpec::parse(&source),
            };
            // The spec's Display, not the text given: it hides the source's secrets.
            tracing::info!(out = %out.display(), seconds, source = %options.source, "recording");
            let summary = record(&settings, &options)
                .with_context(|| format!("recording into {}", out.display()))?;
            println!(
                "wrote {} segments, {} parts ({:.3} s, PART-TARGET {:.3} s, CODECS {}) to {}",
                summary.segments,
                summary.parts,
                summary.duration.as_secs_f64(),
                summary.part_target.as_secs_f64(),
                summary.codecs,
                out.join(mirror::record::names::MULTIVARIANT).display()
            );
            println!(
                "play it: ffplay {}",
                out.join(mirror::record::names::MULTIVARIANT).display()
            );
        }
    }
    Ok(())
}
