//! Live streams. Each runs its media path (source → encoders or passthrough → one
//! segmenter per rendition) on a thread of its own, puts parts and segments in the
//! [`Store`] (a recording, in a directory), and publishes an immutable [`Snapshot`] of
//! each rendition's playlist on a `watch` channel every time a part or segment
//! completes. Every waiting request wakes from that one channel; the playlist bytes are
//! rendered (and gzipped) once per snapshot and shared by all of them. A stream's
//! failures never reach another stream.
//!
//! - [`publisher`]: snapshots, and the [`StreamHandle`] the handler serves from (made
//!   without a source in tests);
//! - `supervisor`: the thread's life: watchdog, backoff, restart;
//! - `media`, `opening`, `output`: the path itself, readying renditions for an opened
//!   source, and one rendition's segmenter, playlist and init segments;
//! - `outage`, `slate`: the timeline while the source is down, listed as a gap or
//!   filled with a slate;
//! - [`sink`]: where finished media goes: the store (live) or a directory
//!   ([`recording`], `mirror record`): one path, two sinks;
//! - [`status`]: what `/streams` shows;
//! - [`registry`]: the streams being served, by name, changed while the server runs.
//!
//! This module never imports the configuration or the HTTP layer: it is handed its
//! [`StreamOptions`] and is read through [`StreamHandle`].

mod bandwidth;
mod media;
mod opening;
mod outage;
mod output;
pub mod publisher;
pub mod recording;
pub mod registry;
pub mod sink;
mod slate;
pub mod status;
mod supervisor;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::cmaf::CmafOptions;
use crate::ingest::{SourceOptions, SourceSpec};
use crate::llhls::live::{LivePlaylist, MediaNames};
use crate::pipeline::{EncoderOptions, RenditionSpec, plan_renditions};
use crate::store::Store;

pub use crate::pipeline::DEFAULT_RENDITION;
pub use publisher::{Rendition, Snapshot, StreamHandle, StreamPublisher, channel};
pub use registry::StreamRegistry;
pub use status::{SourceState, StreamMode, StreamStatus};

/// The media playlist of [`DEFAULT_RENDITION`].
pub const MEDIA_PLAYLIST: &str = "video.m3u8";
/// Name of every stream's multivariant playlist.
pub const MULTIVARIANT_PLAYLIST: &str = "index.m3u8";

/// What a stream is made with: each stage's own options, and the window it serves.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// How the source is opened and watched.
    pub source: SourceOptions,
    /// How renditions are encoded.
    pub encoder: EncoderOptions,
    /// How they are cut into parts and segments.
    pub cmaf: CmafOptions,
    /// Complete segments each media playlist lists.
    pub window_segments: usize,
    /// Where a `publish` stream meets its publishers (set by the server).
    pub publish: Option<crate::ingest::PublishPoint>,
}

impl StreamOptions {
    /// How long a source may deliver nothing before it is restarted.
    pub fn stall_timeout(&self) -> Duration {
        self.source.stall_timeout(self.cmaf.part_target())
    }

    /// The limits a source is opened with, ending its calls when `stop` is set.
    pub fn open_limits(&self, stop: &Arc<AtomicBool>) -> crate::ingest::OpenLimits {
        crate::ingest::OpenLimits {
            stop: stop.clone(),
            open_timeout: self.source.open_timeout(),
            max_gap: self.source.max_timestamp_gap(self.cmaf.segment_target()),
            publish: self.publish.clone(),
        }
    }

    /// The playlist served before the source first opens: no media, the configured
    /// targets.
    pub fn placeholder_playlist(&self, names: MediaNames) -> LivePlaylist {
        LivePlaylist::new(
            names,
            self.cmaf.segment_target(),
            self.cmaf.part_target(),
            self.window_segments,
            0,
        )
    }
}

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source could not be opened.
    #[error("stream {stream}: {error}")]
    Source {
        /// The stream.
        stream: String,
        /// Why.
        error: crate::ingest::IngestError,
    },
    /// A rendition's encoder cannot be used.
    #[error("stream {stream}: {error}")]
    Encoder {
        /// The stream.
        stream: String,
        /// Why.
        error: crate::pipeline::ProbeError,
    },
    /// The renditions could not be readied for the source (encoders, init segment).
    #[error("stream {stream}: {reason}")]
    Start {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// The media path failed (a recording, which does not retry).
    #[error("stream {stream}: {reason}")]
    Media {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// The media thread could not be started.
    #[error("stream {stream}: cannot start its media thread: {error}")]
    Thread {
        /// The stream.
        stream: String,
        /// Why.
        error: std::io::Error,
    },
}

/// A running live stream: its handle, and the media thread that feeds it. Dropping it
/// stops the thread.
pub struct LiveStream {
    handle: StreamHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveStream {
    /// Starts the stream `name` playing `spec` with `renditions` (none: one default
    /// rendition). Encoders are probed now, and a local source (test pattern, file) is
    /// opened now, so a bad setting or an unplayable file stops start-up; a network
    /// source is opened by the media thread, which retries until it answers.
    pub fn start(
        name: &str,
        spec: &SourceSpec,
        renditions: &[RenditionSpec],
        options: &StreamOptions,
        store: Store,
    ) -> Result<Self, StreamError> {
        let sink = Box::new(sink::StoreSink {
            stream: name.to_string(),
            store,
        });
        let local = !matches!(
            spec,
            SourceSpec::Rtsp(_) | SourceSpec::Url(_) | SourceSpec::Publish
        );
        let (handle, media) = media_path(name, spec, renditions, options, sink, local, true)?;
        let stop = media.stop.clone();
        let stream = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("media-{name}"))
            .spawn(move || media.supervise())
            .map_err(|error| StreamError::Thread {
                stream: stream.clone(),
                error,
            })?;
        Ok(Self {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// What the handler serves it from.
    pub fn handle(&self) -> &StreamHandle {
        &self.handle
    }

    /// Stops the media thread. The last playlist stays served; requests blocked on a
    /// newer one are answered 503 at once instead of hanging.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The media path of stream `name`: `spec` planned into `renditions`, publishing
/// through the returned handle, its media into `sink`. With `open_now` the source is
/// opened and the renditions readied before this returns (a bad file or an encoder that
/// refuses the source stops start-up); otherwise the media thread opens it and retries.
fn media_path(
    name: &str,
    spec: &SourceSpec,
    renditions: &[RenditionSpec],
    options: &StreamOptions,
    sink: Box<dyn sink::MediaSink>,
    open_now: bool,
    realtime: bool,
) -> Result<(StreamHandle, media::MediaLoop), StreamError> {
    let stream = name.to_string();
    let encoded = spec.is_passthrough();
    let plans = plan_renditions(renditions, encoded, &options.encoder).map_err(|error| {
        StreamError::Encoder {
            stream: stream.clone(),
            error,
        }
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let first = if open_now {
        Some(
            spec.open_any(&options.source, realtime, &options.open_limits(&stop))
                .map_err(|error| StreamError::Source {
                    stream: stream.clone(),
                    error,
                })?,
        )
    } else {
        None
    };
    let epoch = SystemTime::now();
    let placeholders: Vec<LivePlaylist> = plans
        .iter()
        .map(|p| options.placeholder_playlist(MediaNames::new(&format!("{}-pending", p.id), epoch)))
        .collect();
    let (handle, mut publisher) = channel(
        name,
        plans.iter().map(|p| p.id.as_str()).zip(&placeholders),
        StreamStatus::default(),
    );
    let outputs = plans
        .into_iter()
        .zip(placeholders)
        .zip(std::mem::take(&mut publisher.renditions))
        .map(|((plan, live), rendition)| output::Output::new(plan.id, plan.plan, live, rendition))
        .collect();
    let mut media = media::MediaLoop {
        stream: stream.clone(),
        spec: spec.clone(),
        options: options.clone(),
        first,
        input: None,
        outputs,
        epoch,
        delivered_end: Duration::ZERO,
        resume_offset: Duration::ZERO,
        sink,
        realtime,
        until: None,
        first_capture: None,
        refused_samples: 0,
        publisher,
        stop,
        bitrate_mark: None,
        advertised: None,
        outage: None,
        slate: None,
        slate_spent: false,
    };
    if media.first.is_some() {
        // The multivariant playlist and init segments are there from the first request.
        media.connect().map_err(|error| StreamError::Start {
            stream,
            reason: error.to_string(),
        })?;
    }
    Ok((handle, media))
}

impl std::ops::Deref for LiveStream {
    type Target = StreamHandle;

    fn deref(&self) -> &StreamHandle {
        &self.handle
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
