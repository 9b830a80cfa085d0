//! Live streams: each runs its media path (source → encoders → segmenter) on a thread
//! of its own, puts parts and segments in the [`Store`], and publishes an immutable
//! [`Snapshot`] of its playlist through a `watch` channel every time a part or segment
//! completes. Every waiting request wakes from that one channel; the playlist bytes are
//! rendered (and gzipped) once per snapshot and shared by all of them.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::cmaf::init::write_init_segment;
use crate::cmaf::{Segmenter, SegmenterEvent, TrackInfo};
use crate::config::Settings;
use crate::http::headers;
use crate::ingest::{RawMedia, Source, SourceFrame, SourceSpec};
use crate::llhls::blocking::{Position, advance_part_limit};
use crate::llhls::live::{LivePlaylist, MediaNames};
use crate::llhls::{Skip, Variant, render_multivariant};
use crate::pipeline::Transcoder;
use crate::store::{self, Store, StoredMedia};

/// Name of every stream's media playlist (its single rendition, for now).
pub const MEDIA_PLAYLIST: &str = "video.m3u8";
/// Name of every stream's multivariant playlist.
pub const MULTIVARIANT_PLAYLIST: &str = "index.m3u8";

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
    /// The encoders could not be opened.
    #[error("stream {stream}: {error}")]
    Pipeline {
        /// The stream.
        stream: String,
        /// Why.
        error: crate::pipeline::PipelineError,
    },
    /// The init segment could not be written.
    #[error("stream {stream}: {error}")]
    Init {
        /// The stream.
        stream: String,
        /// Why.
        error: crate::cmaf::init::InitError,
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

/// A rendered playlist, plain and gzip-compressed.
#[derive(Debug, Clone, Default)]
pub struct PlaylistBytes {
    /// As rendered.
    pub identity: Bytes,
    /// gzip of `identity`, for clients that accept it.
    pub gzip: Bytes,
}

impl PlaylistBytes {
    fn new(text: String) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 3),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(text.as_bytes());
        let gzip = encoder.finish().unwrap_or_default();
        Self {
            identity: Bytes::from(text),
            gzip: Bytes::from(gzip),
        }
    }
}

/// An immutable view of a stream's playlist at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every snapshot of this stream (part of the ETag).
    pub sequence: u64,
    /// Where the live edge is.
    pub position: Position,
    /// EXT-X-TARGETDURATION.
    pub target_duration: Duration,
    /// PART-TARGET.
    pub part_target: Duration,
    /// The Advance Part Limit for blocking requests (RFC 8216bis 6.2.5.2).
    pub advance_part_limit: u32,
    /// When the playlist last changed.
    pub updated_at: SystemTime,
    /// Whether any media is listed yet.
    pub has_media: bool,
    /// The media names in use.
    pub names: Arc<MediaNames>,
    /// The playlist: whole, and as `_HLS_skip=YES` and `v2` delta updates.
    pub playlists: [PlaylistBytes; 3],
    /// The complete response headers of each form (blocking or not × whole or delta ×
    /// plain or gzip), built with the bytes: at thousands of waiters per part, building
    /// headers per request was most of the wake-up cost.
    response_headers: Vec<http::HeaderMap>,
}

impl Snapshot {
    /// The rendered playlist for `skip`.
    pub fn playlist(&self, skip: Skip) -> &PlaylistBytes {
        &self.playlists[match skip {
            Skip::No => 0,
            Skip::Yes => 1,
            Skip::V2 => 2,
        }]
    }

    /// Renders the snapshot of `live`: its position and its playlist in all three forms,
    /// plain and gzipped. This is the work done once per part, shared by every request.
    pub fn render(sequence: u64, live: &LivePlaylist, names: Arc<MediaNames>) -> Self {
        let playlist = live.playlist();
        let target_duration = Duration::from_secs(playlist.target_duration_secs());
        let playlists = [Skip::No, Skip::Yes, Skip::V2]
            .map(|skip| PlaylistBytes::new(playlist.render_with(skip)));
        let init = names.init();
        let etag_prefix = format!("{}-{sequence}", init.trim_end_matches("-init.mp4"));
        let mut response_headers = Vec::with_capacity(12);
        for blocking in [false, true] {
            for (skip, rendered) in playlists.iter().enumerate() {
                for gzip in [false, true] {
                    let body = if gzip {
                        &rendered.gzip
                    } else {
                        &rendered.identity
                    };
                    response_headers.push(headers::playlist_response(
                        body.len(),
                        blocking,
                        ["", "-s", "-s2"][skip],
                        gzip,
                        target_duration,
                        live.updated_at(),
                        &etag_prefix,
                    ));
                }
            }
        }
        Self {
            sequence,
            position: live.position(),
            target_duration,
            part_target: playlist.part_target,
            advance_part_limit: advance_part_limit(playlist.part_target),
            updated_at: live.updated_at(),
            has_media: live.has_media(),
            names,
            playlists,
            response_headers,
        }
    }

    /// The response headers for a playlist request of this form.
    pub fn response_headers(&self, blocking: bool, skip: Skip, gzip: bool) -> &http::HeaderMap {
        let skip = match skip {
            Skip::No => 0,
            Skip::Yes => 1,
            Skip::V2 => 2,
        };
        &self.response_headers[usize::from(blocking) * 6 + skip * 2 + usize::from(gzip)]
    }
}

/// A running live stream.
pub struct LiveStream {
    name: String,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    multivariant: Bytes,
    init: StoredMedia,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveStream {
    /// Opens the source and the encoders (so that a bad setting or an unplayable source
    /// stops start-up), then runs the stream on a thread of its own, storing media in
    /// `store`.
    pub fn start(
        name: &str,
        spec: &SourceSpec,
        settings: &Settings,
        window_segments: usize,
        store: Store,
    ) -> Result<Self, StreamError> {
        let stream = name.to_string();
        let source = spec
            .open(&settings.source, true)
            .map_err(|error| StreamError::Source {
                stream: stream.clone(),
                error,
            })?;
        let transcoder =
            Transcoder::open(settings, source.format()).map_err(|error| StreamError::Pipeline {
                stream: stream.clone(),
                error,
            })?;
        let tracks = transcoder.tracks().to_vec();
        let init = write_init_segment(&tracks).map_err(|error| StreamError::Init {
            stream: stream.clone(),
            error,
        })?;
        let segmenter = Segmenter::new(settings.segmenter_config(tracks.clone()), 0);
        let epoch = SystemTime::now();
        let names = Arc::new(MediaNames::new("v0", epoch));
        // The init segment lives as long as the stream (not in the store, whose time to
        // live would drop it while parts still need it).
        let init = StoredMedia {
            chunks: vec![Bytes::from(init)].into(),
            modified: epoch,
        };
        let live = LivePlaylist::new(
            (*names).clone(),
            settings.cmaf.segment_target(),
            segmenter.part_target(),
            window_segments,
            0,
        );
        let (sender, snapshot) =
            watch::channel(Arc::new(Snapshot::render(0, &live, names.clone())));
        let multivariant = Bytes::from(multivariant(&tracks, source.format().frame_rate));
        let stop = Arc::new(AtomicBool::new(false));
        let media = MediaLoop {
            stream: stream.clone(),
            source,
            spec: spec.clone(),
            source_settings: settings.source.clone(),
            delivered_end: Duration::ZERO,
            resume_offset: Duration::ZERO,
            transcoder,
            segmenter,
            live,
            names,
            store,
            sender,
            sequence: 0,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("media-{name}"))
            .spawn(move || media.run())
            .map_err(|error| StreamError::Thread {
                stream: stream.clone(),
                error,
            })?;
        Ok(Self {
            name: stream,
            snapshot,
            multivariant,
            init,
            stop,
            thread: Some(thread),
        })
    }

    /// The stream's name (its path segment).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver of the stream's snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The multivariant playlist.
    pub fn multivariant(&self) -> Bytes {
        self.multivariant.clone()
    }

    /// The init segment.
    pub fn init(&self) -> StoredMedia {
        self.init.clone()
    }

    /// Stops the media thread. The last playlist stays served; requests blocked on a
    /// newer one are answered 503 at once instead of hanging.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
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

/// The multivariant playlist of a one-rendition stream. BANDWIDTH is the configured
/// peak (VBV max rate) plus audio, with 10 % for the container: RFC 8216bis 4.4.6.2
/// wants the peak segment bit rate, which a live stream knows only afterwards.
fn multivariant(tracks: &[TrackInfo], fps: ffmpeg_next::Rational) -> String {
    let average: u64 = tracks.iter().map(|t| u64::from(t.average_bitrate)).sum();
    render_multivariant(&[Variant {
        uri: MEDIA_PLAYLIST.into(),
        bandwidth: average * 11 / 10,
        average_bandwidth: Some(average),
        codecs: crate::cmaf::codecs(tracks),
        resolution: crate::cmaf::resolution(tracks),
        frame_rate: Some(f64::from(fps.numerator()) / f64::from(fps.denominator().max(1))),
    }])
}

/// Delays between attempts to reopen a failed source: 0.5 s doubling to 30 s, each
/// with up to 25 % jitter.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = Duration::from_millis(500) * 2u32.saturating_pow(self.failures.min(6));
        self.failures += 1;
        let base = base.min(Duration::from_secs(30));
        // Jitter from the clock's low bits: spreading retries needs no random generator.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The media thread's state.
struct MediaLoop {
    stream: String,
    source: Box<dyn Source + Send>,
    /// What `source` was opened from, to open it again after a failure.
    spec: SourceSpec,
    source_settings: crate::config::SourceSettings,
    /// Media time just past everything delivered so far: a reopened source starts its
    /// timestamps at zero again, and is shifted to continue from here.
    delivered_end: Duration,
    /// Shift applied to the current source instance's timestamps.
    resume_offset: Duration,
    transcoder: Transcoder,
    segmenter: Segmenter,
    live: LivePlaylist,
    names: Arc<MediaNames>,
    store: Store,
    sender: watch::Sender<Arc<Snapshot>>,
    sequence: u64,
    stop: Arc<AtomicBool>,
}

impl MediaLoop {
    fn run(mut self) {
        let mut samples = Vec::new();
        let mut backoff = Backoff::default();
        while !self.stop.load(Ordering::Relaxed) {
            let frame = self.source.next_frame().map_err(|e| e.to_string());
            let encoded = frame.and_then(|mut frame| {
                self.shift(&mut frame);
                self.transcoder
                    .push(frame, &mut samples)
                    .map_err(|e| e.to_string())
            });
            if let Err(error) = encoded {
                self.recover(&error, &mut backoff);
                continue;
            }
            backoff.reset();
            for sample in samples.drain(..) {
                if let Err(error) = self.segmenter.push(sample, SystemTime::now()) {
                    tracing::warn!(stream = %self.stream, %error, "sample refused");
                }
            }
            self.publish_events();
        }
    }

    /// Moves `frame` past everything delivered before the source was last reopened, and
    /// records how far the stream has got.
    fn shift(&mut self, frame: &mut SourceFrame) {
        let tb = frame.time_base;
        let (num, den) = (
            i128::from(tb.numerator().max(1)),
            i128::from(tb.denominator().max(1)),
        );
        let offset = i128::try_from(self.resume_offset.as_nanos()).unwrap_or(0) * den
            / (num * 1_000_000_000);
        let offset = i64::try_from(offset).unwrap_or(0);
        let format = self.source.format();
        let (pts, length) = match &mut frame.media {
            RawMedia::Video(v) => {
                let pts = v.pts().unwrap_or(0) + offset;
                v.set_pts(Some(pts));
                let fps = format.frame_rate;
                let nanos = 1_000_000_000 * i64::from(fps.denominator())
                    / i64::from(fps.numerator().max(1));
                (pts, Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
            }
            RawMedia::Audio(a) => {
                let pts = a.pts().unwrap_or(0) + offset;
                a.set_pts(Some(pts));
                let rate = u64::from(format.sample_rate.max(1));
                (
                    pts,
                    Duration::from_nanos(a.samples() as u64 * 1_000_000_000 / rate),
                )
            }
        };
        let at = i128::from(pts.max(0)) * num * 1_000_000_000 / den;
        let at = Duration::from_nanos(u64::try_from(at).unwrap_or(0));
        self.delivered_end = self.delivered_end.max(at + length);
    }

    /// A source or encoder failed: log it, wait (exponential backoff with jitter, so a
    /// fleet of streams does not retry in step), and open the source again. The playlist
    /// stays served meanwhile, and blocked reloads end with 503 after three target
    /// durations; the stream then goes on from where it was, with the next MSN.
    fn recover(&mut self, error: &str, backoff: &mut Backoff) {
        let delay = backoff.next();
        tracing::warn!(stream = %self.stream, %error, retry_in = ?delay, "source failed; retrying");
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        match self.spec.open(&self.source_settings, true) {
            Ok(source) => {
                self.source = source;
                self.resume_offset = self.delivered_end;
                tracing::info!(stream = %self.stream, "source reopened");
            }
            Err(error) => tracing::warn!(stream = %self.stream, %error, "source still failing"),
        }
    }

    fn publish_events(&mut self) {
        let mut changed = false;
        while let Some(event) = self.segmenter.poll_event() {
            changed = true;
            match event {
                SegmenterEvent::Part(part) => {
                    let name = self.names.part(part.msn, part.index);
                    self.store.insert(
                        store::key(&self.stream, &name),
                        vec![part.bytes],
                        part.completed_at,
                    );
                    self.live.push_part(
                        part.msn,
                        part.index,
                        part.duration,
                        part.independent,
                        part.completed_at,
                    );
                }
                SegmenterEvent::Segment(segment) => {
                    let name = self.names.segment(segment.msn);
                    let completed = segment
                        .parts
                        .last()
                        .map_or_else(SystemTime::now, |p| p.completed_at);
                    let chunks = segment.parts.iter().map(|p| p.bytes.clone()).collect();
                    self.store
                        .insert(store::key(&self.stream, &name), chunks, completed);
                    self.live.push_segment(
                        segment.msn,
                        segment.duration,
                        segment.captured_at,
                        completed,
                    );
                }
            }
        }
        if changed {
            self.sequence += 1;
            let snapshot = Snapshot::render(self.sequence, &self.live, self.names.clone());
            self.sender.send_replace(Arc::new(snapshot));
        }
    }
}
