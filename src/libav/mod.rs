//! The libav boundary: process-wide initialisation, the time arithmetic between libav's
//! rationals and durations, the filter graphs both sources and encoders build, and the
//! few calls outside ffmpeg-next's safe API ([`ffi`]). Ingest and pipeline both use it;
//! it imports neither, and nothing downstream of the pipeline imports it.

pub(crate) mod ffi;

use std::time::Duration;

use ffmpeg::{filter, frame};
use ffmpeg_next as ffmpeg;

/// Initialises libav once per process. libav's own log is off: its messages name
/// sources by their full URL (an SRT passphrase, an RTMP key, a signed query), which
/// Mirror's own errors redact. `MIRROR_LIBAV_LOG=error` (or `warning`, `info`,
/// `debug`) turns it on on stderr, secrets and all, for debugging a source.
pub fn init() -> Result<(), ffmpeg::Error> {
    use ffmpeg::util::log::Level;
    static INIT: std::sync::OnceLock<Result<(), ffmpeg::Error>> = std::sync::OnceLock::new();
    *INIT.get_or_init(|| {
        ffmpeg::init()?;
        let level = match std::env::var("MIRROR_LIBAV_LOG").as_deref() {
            Ok("error") => Level::Error,
            Ok("warning") => Level::Warning,
            Ok("info") => Level::Info,
            Ok("debug") => Level::Debug,
            _ => Level::Quiet,
        };
        ffmpeg::util::log::set_level(level);
        Ok(())
    })
}

/// AAC frames hold 1024 samples; audio is cut to that size so that one source frame is
/// one encoder frame.
pub const AUDIO_FRAME_SAMPLES: u32 = 1024;

/// `pts` ticks of `time_base` as a duration (negative ones as zero).
pub fn media_time(pts: i64, time_base: ffmpeg::Rational) -> Duration {
    let num = u128::try_from(time_base.numerator()).unwrap_or(1);
    let den = u128::try_from(time_base.denominator()).unwrap_or(1).max(1);
    let ticks = u128::try_from(pts).unwrap_or(0);
    Duration::from_nanos(u64::try_from(ticks * num * 1_000_000_000 / den).unwrap_or(u64::MAX))
}

/// `at` in ticks of `time_base`, rounded to the nearest tick.
pub fn ticks(at: Duration, time_base: ffmpeg::Rational) -> i64 {
    let num = i128::from(time_base.numerator()).max(1);
    let den = i128::from(time_base.denominator());
    let scaled = i128::try_from(at.as_nanos()).unwrap_or(0) * den;
    let unit = num * 1_000_000_000;
    i64::try_from((scaled + unit / 2) / unit).unwrap_or(0)
}

/// A graph from a buffer source named "in" through `spec` into a sink named "out".
pub fn buffer_graph(
    source: &str,
    args: &str,
    sink: &str,
    spec: &str,
) -> Result<filter::Graph, ffmpeg::Error> {
    let mut graph = filter::Graph::new();
    graph.add(
        &filter::find(source).ok_or(ffmpeg::Error::FilterNotFound)?,
        "in",
        args,
    )?;
    graph.add(
        &filter::find(sink).ok_or(ffmpeg::Error::FilterNotFound)?,
        "out",
        "",
    )?;
    graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    Ok(graph)
}

/// A frame of `AUDIO_FRAME_SAMPLES` samples of stereo silence at `pts` (in 1/`rate`).
pub fn silence_frame(rate: u32, pts: i64) -> frame::Audio {
    let mut silence = frame::Audio::new(
        ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
        AUDIO_FRAME_SAMPLES as usize,
        ffmpeg::ChannelLayout::STEREO,
    );
    silence.set_rate(rate);
    for plane in 0..2 {
        silence.plane_mut::<f32>(plane).fill(0.0);
    }
    silence.set_pts(Some(pts));
    silence
}
