//! The `mirror` command line. Errors become `anyhow` here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mirror::config::Settings;
use mirror::record::{RecordOptions, record};

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
    /// Record the live test pattern to a directory as a finished LL-HLS presentation.
    Record {
        /// Seconds of media to record.
        #[arg(long, default_value_t = 6)]
        seconds: u64,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Source; only the built-in test pattern for now.
        #[arg(long, default_value = "testsrc", value_parser = ["testsrc"])]
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut settings = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    match cli.command {
        Command::Record {
            seconds,
            out,
            source: _,
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
            };
            tracing::info!(out = %out.display(), seconds, "recording the test pattern");
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
