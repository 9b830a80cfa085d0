//! Live streams: each runs its media path (source → encoders or passthrough → one
//! segmenter per rendition) on a thread of its own, puts parts and segments in the
//! [`Store`], and publishes an immutable [`Snapshot`] of each rendition's playlist
//! through a `watch` channel every time a part or segment completes. Every waiting
//! request wakes from that one channel; the playlist bytes are rendered (and gzipped)
//! once per snapshot and shared by all of them.
//!
//! The media thread also owns the source's life: it opens it (retrying with backoff
//! when it cannot), restarts it when it fails or goes silent longer than the watchdog
//! allows, and resumes with the next MSN after an EXT-X-DISCONTINUITY. A stream's
//! failures never reach another stream: each has its own thread and its own state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use crate::cmaf::init::write_init_segment;
use crate::cmaf::{Segmenter, SegmenterEvent, TrackInfo};
use crate::config::{RenditionSettings, Settings};
use crate::http::headers;
use crate::ingest::{OpenedSource, RawMedia, Source, SourceFrame, SourceSpec};
use crate::llhls::blocking::{Position, advance_part_limit};
use crate::llhls::live::{LivePlaylist, MediaNames};
use crate::llhls::{Skip, Variant, render_multivariant};
use crate::pipeline::Transcoder;
use crate::store::{self, Store, StoredMedia};

/// Name of the rendition of a stream configured without renditions; its media
/// playlist is `video.m3u8`.
pub const DEFAULT_RENDITION: &str = "video";
/// The media playlist of [`DEFAULT_RENDITION`].
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
        let gzip = gzip(text.as_bytes());
        Self {
            identity: Bytes::from(text),
            gzip: Bytes::from(gzip),
        }
    }
}

thread_local! {
    /// One deflate state per media thread, reset for each playlist: a fresh one zeroes
    /// some 300 KiB of tables, which at three playlists per part was most of a
    /// passthrough stream's CPU.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `data` as a gzip member (RFC 1952): header, raw deflate, CRC-32, length.
fn gzip(data: &[u8]) -> Vec<u8> {
    // ID1 ID2, CM = deflate, no flags, no mtime, XFL 0, OS unknown.
    let mut out = Vec::with_capacity(data.len() / 3 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    DEFLATE.with(|deflate| {
        let mut deflate = deflate.borrow_mut();
        deflate.reset();
        loop {
            let consumed = usize::try_from(deflate.total_in()).unwrap_or(data.len());
            out.reserve(256 + (data.len() - consumed.min(data.len())) / 2);
            match deflate.compress_vec(
                &data[consumed.min(data.len())..],
                &mut out,
                flate2::FlushCompress::Finish,
            ) {
                Ok(flate2::Status::StreamEnd) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
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
    /// The init segments by generation (a new one each time the source came back with
    /// other codec parameters); empty until the source first opens.
    pub inits: Arc<[StoredMedia]>,
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
    pub fn render(
        sequence: u64,
        live: &LivePlaylist,
        names: Arc<MediaNames>,
        inits: Arc<[StoredMedia]>,
    ) -> Self {
        let playlist = live.playlist();
        let target_duration = Duration::from_secs(playlist.target_duration_secs());
        let playlists = [Skip::No, Skip::Yes, Skip::V2]
            .map(|skip| PlaylistBytes::new(playlist.render_with(skip)));
        let init_name = names.init();
        let etag_prefix = format!("{}-{sequence}", init_name.trim_end_matches("-init.mp4"));
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
            inits,
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

/// How a rendition is made, as resolved at start-up.
#[derive(Debug, Clone)]
enum Plan {
    /// The source's samples as they are.
    Passthrough,
    /// Encoded by `encoder`; `size` `None` means the source's.
    Transcode {
        encoder: crate::pipeline::EncoderId,
        size: Option<(u32, u32)>,
        bitrate_kbps: u32,
    },
}

/// The handler's view of one rendition.
pub struct Rendition {
    id: String,
    playlist: String,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Rendition {
    /// Its name (the media playlist is `{id}.m3u8`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A receiver of its snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

/// What a stream is doing, for `/streams` and the logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamStatus {
    /// `starting`, `live` or `retrying`.
    pub state: &'static str,
    /// `passthrough`, `transcode` or `passthrough+transcode` (an RTSP source with
    /// renditions of both kinds), once the source is open.
    pub mode: Option<&'static str>,
    /// The last failure of the source or the pipeline.
    pub last_error: Option<String>,
    /// How many times the source was restarted.
    pub restarts: u64,
    /// The source's jitter buffer, for network sources.
    pub jitter_buffer: Option<crate::ingest::jitter::JitterFill>,
}

/// A running live stream.
pub struct LiveStream {
    name: String,
    renditions: Vec<Rendition>,
    multivariant: Arc<RwLock<Option<Bytes>>>,
    status: Arc<Mutex<StreamStatus>>,
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
        renditions: &[RenditionSettings],
        settings: &Settings,
        store: Store,
    ) -> Result<Self, StreamError> {
        let stream = name.to_string();
        let plans = plan(spec, renditions, settings).map_err(|error| StreamError::Encoder {
            stream: stream.clone(),
            error,
        })?;
        let first = match spec {
            SourceSpec::Rtsp(_) | SourceSpec::Url(_) => None,
            _ => Some(spec.open_any(&settings.source, true).map_err(|error| {
                StreamError::Source {
                    stream: stream.clone(),
                    error,
                }
            })?),
        };
        let epoch = SystemTime::now();
        let mut handles = Vec::with_capacity(plans.len());
        let mut outputs = Vec::with_capacity(plans.len());
        for (id, plan) in plans {
            let names = Arc::new(MediaNames::new(&format!("{id}-pending"), epoch));
            let live = placeholder_playlist(&names, settings);
            let (sender, snapshot) = watch::channel(Arc::new(Snapshot::render(
                0,
                &live,
                names.clone(),
                Arc::from([]),
            )));
            handles.push(Rendition {
                playlist: format!("{id}.m3u8"),
                id: id.clone(),
                snapshot,
            });
            outputs.push(Output {
                id,
                plan,
                segmenter: None,
                next_msn: 0,
                live,
                names,
                inits: Arc::from([]),
                init_tracks: Vec::new(),
                sender,
                sequence: 0,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(StreamStatus {
            state: "starting",
            ..StreamStatus::default()
        }));
        let multivariant = Arc::new(RwLock::new(None));
        let mut media = MediaLoop {
            stream: stream.clone(),
            spec: spec.clone(),
            settings: settings.clone(),
            first,
            input: None,
            outputs,
            epoch,
            delivered_end: Duration::ZERO,
            resume_offset: Duration::ZERO,
            store,
            status: status.clone(),
            multivariant: multivariant.clone(),
            stop: stop.clone(),
        };
        if media.first.is_some() {
            // A local source's renditions are readied now: the multivariant playlist and
            // init segments are there from the first request, and an encoder that
            // refuses the source's format stops start-up.
            media.connect().map_err(|error| StreamError::Start {
                stream: stream.clone(),
                reason: error.to_string(),
            })?;
        }
        let thread = std::thread::Builder::new()
            .name(format!("media-{name}"))
            .spawn(move || media.run())
            .map_err(|error| StreamError::Thread {
                stream: stream.clone(),
                error,
            })?;
        Ok(Self {
            name: stream,
            renditions: handles,
            multivariant,
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The stream's name (its path segment).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its renditions, in the multivariant playlist's order.
    pub fn renditions(&self) -> &[Rendition] {
        &self.renditions
    }

    /// The rendition whose media playlist is `playlist` (`{id}.m3u8`).
    pub fn rendition_by_playlist(&self, playlist: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.playlist == playlist)
    }

    /// The rendition a media name (init, part, segment) belongs to, with what it names.
    pub fn rendition_of_media(
        &self,
        name: &str,
    ) -> Option<(&Rendition, Arc<Snapshot>, crate::llhls::live::MediaName)> {
        self.renditions.iter().find_map(|r| {
            let snapshot = r.current();
            let kind = snapshot.names.parse(name)?;
            Some((r, snapshot, kind))
        })
    }

    /// The first rendition (the only one of a stream without a ladder).
    pub fn primary(&self) -> &Rendition {
        &self.renditions[0]
    }

    /// A receiver of the first rendition's snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.primary().subscribe()
    }

    /// The first rendition's latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.primary().current()
    }

    /// The multivariant playlist, once the source has been opened.
    pub fn multivariant(&self) -> Option<Bytes> {
        self.multivariant
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the stream is doing.
    pub fn status(&self) -> StreamStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

/// Resolves the renditions: names, and for each encoded one the encoder (probed now,
/// so that an encoder that cannot open stops start-up).
fn plan(
    spec: &SourceSpec,
    renditions: &[RenditionSettings],
    settings: &Settings,
) -> Result<Vec<(String, Plan)>, crate::pipeline::ProbeError> {
    use crate::cmaf::codec::VideoCodec;
    use crate::config::RenditionCodec;
    let defaults = [RenditionSettings {
        name: DEFAULT_RENDITION.into(),
        codec: match (spec, settings.encoder.encoder) {
            (SourceSpec::Rtsp(_), _) => RenditionCodec::Copy,
            (_, crate::pipeline::EncoderChoice::X265) => RenditionCodec::H265,
            _ => RenditionCodec::H264,
        },
        width: None,
        height: None,
        video_bitrate_kbps: None,
        encoder: None,
    }];
    let renditions = if renditions.is_empty() {
        &defaults[..]
    } else {
        renditions
    };
    renditions
        .iter()
        .map(|r| {
            let codec = match r.codec {
                RenditionCodec::Copy => return Ok((r.name.clone(), Plan::Passthrough)),
                RenditionCodec::H264 => VideoCodec::H264,
                RenditionCodec::H265 => VideoCodec::H265,
            };
            let choice = r.encoder.unwrap_or(settings.encoder.encoder);
            Ok((
                r.name.clone(),
                Plan::Transcode {
                    encoder: crate::pipeline::select_encoder(choice, codec)?,
                    size: r.width.zip(r.height),
                    bitrate_kbps: r
                        .video_bitrate_kbps
                        .unwrap_or(settings.encoder.video_bitrate_kbps),
                },
            ))
        })
        .collect()
}

/// The playlist served before the source first opens: no media, the configured
/// targets.
fn placeholder_playlist(names: &MediaNames, settings: &Settings) -> LivePlaylist {
    LivePlaylist::new(
        names.clone(),
        settings.cmaf.segment_target(),
        settings.cmaf.part_target(),
        settings.server.window_segments,
        0,
    )
}

/// A short hash of everything that shapes a rendition's bytes, so that a changed
/// profile never names (and a cache never serves) media made with the old one.
fn profile_hash(profile: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(profile.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The multivariant playlist. BANDWIDTH is the configured peak (VBV max rate) plus
/// audio, with 10 % for the container (for passthrough, the first GOP's rate): RFC
/// 8216bis 4.4.6.2 wants the peak segment bit rate, which a live stream knows only
/// afterwards.
fn multivariant(renditions: &[(String, Vec<TrackInfo>)], fps: Option<(u32, u32)>) -> String {
    let variants: Vec<Variant> = renditions
        .iter()
        .map(|(id, tracks)| {
            let average: u64 = tracks.iter().map(|t| u64::from(t.average_bitrate)).sum();
            Variant {
                uri: format!("{id}.m3u8"),
                bandwidth: average * 11 / 10,
                average_bandwidth: Some(average),
                codecs: crate::cmaf::codecs(tracks),
                resolution: crate::cmaf::resolution(tracks),
                frame_rate: fps.map(|(n, d)| f64::from(n) / f64::from(d.max(1))),
            }
        })
        .collect();
    render_multivariant(&variants)
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

/// One rendition's side of the media thread.
struct Output {
    id: String,
    plan: Plan,
    /// `None` before the source first opens and while it is down.
    segmenter: Option<Segmenter>,
    /// The MSN the next segment gets.
    next_msn: u64,
    live: LivePlaylist,
    names: Arc<MediaNames>,
    /// Init segments by generation; empty before the source first opens. They live as
    /// long as the stream, not in the store, whose time to live would drop them while
    /// parts still need them.
    inits: Arc<[StoredMedia]>,
    /// The tracks the latest init segment describes.
    init_tracks: Vec<TrackInfo>,
    sender: watch::Sender<Arc<Snapshot>>,
    sequence: u64,
}

impl Output {
    fn publish(&mut self) {
        self.sequence += 1;
        let snapshot = Snapshot::render(
            self.sequence,
            &self.live,
            self.names.clone(),
            self.inits.clone(),
        );
        self.sender.send_replace(Arc::new(snapshot));
    }

    /// Readies this rendition for a newly opened source: at the first connect its names
    /// (with the profile's hash), playlist and init segment; after a failure an
    /// EXT-X-DISCONTINUITY, and a new init segment when the codec parameters changed.
    /// Then a new segmenter that goes on with the next MSN.
    fn ready(
        &mut self,
        prepared: Prepared,
        epoch: SystemTime,
        window: usize,
        now: SystemTime,
        stream: &str,
    ) -> Result<(), MediaError> {
        let Prepared {
            tracks,
            config,
            profile: key,
        } = prepared;
        if self.inits.is_empty() {
            let hash = profile_hash(&key);
            self.names = Arc::new(MediaNames::new(&format!("{}-{hash}", self.id), epoch));
            self.live = LivePlaylist::new(
                (*self.names).clone(),
                config.segment_target,
                Segmenter::new(config.clone(), 0).part_target(),
                window,
                0,
            );
            self.inits = Arc::from([StoredMedia {
                chunks: vec![Bytes::from(write_init_segment(&tracks)?)].into(),
                modified: now,
            }]);
            self.init_tracks = tracks.clone();
        } else {
            self.live.mark_discontinuity(self.next_msn, now);
            if !same_media(&self.init_tracks, &tracks) {
                // Back with other codec parameters (a camera reconfigured): a new init
                // segment, named by its generation, and EXT-X-MAP from the next
                // segment on.
                let generation = u32::try_from(self.inits.len()).unwrap_or(u32::MAX);
                let mut inits = self.inits.to_vec();
                inits.push(StoredMedia {
                    chunks: vec![Bytes::from(write_init_segment(&tracks)?)].into(),
                    modified: now,
                });
                self.inits = inits.into();
                self.init_tracks = tracks.clone();
                self.live.change_map(self.names.init_generation(generation));
                tracing::info!(stream = %stream, rendition = %self.id, generation, codecs = %crate::cmaf::codecs(&tracks), "codec parameters changed: new init segment");
            }
            tracing::info!(stream = %stream, rendition = %self.id, msn = self.next_msn, "source back: discontinuity");
        }
        self.segmenter = Some(Segmenter::new(config, self.next_msn));
        self.publish();
        Ok(())
    }
}

/// An open source with what turns it into samples.
enum Input {
    /// Decoded frames, encoded into every rendition.
    Raw {
        source: Box<dyn Source + Send>,
        transcoder: Box<Transcoder>,
    },
    /// Encoded samples, passed through to the `copies` renditions and decoded for the
    /// others.
    Encoded {
        source: Box<dyn crate::ingest::EncodedSource + Send>,
        copies: Vec<usize>,
        transcoding: Option<Box<Transcoding>>,
        /// G.711 sound made into AAC for every rendition.
        audio: Option<Box<AudioToAac>>,
    },
}

/// A camera's G.711 sound on its way to AAC.
struct AudioToAac {
    encoder: crate::pipeline::decode::AudioTranscoder,
    samples: Vec<crate::cmaf::Sample>,
}

/// The renditions of an encoded source that are transcoded: its samples decoded once
/// and encoded for each.
struct Transcoding {
    decoder: crate::pipeline::SampleDecoder,
    transcoder: Transcoder,
    /// Output index of each of the transcoder's renditions.
    outputs: Vec<usize>,
    profiles: Vec<crate::pipeline::VideoProfile>,
    frames: Vec<SourceFrame>,
    samples: Vec<(usize, crate::cmaf::Sample)>,
}

/// Why the media path stopped.
#[derive(Debug, thiserror::Error)]
enum MediaError {
    #[error(transparent)]
    Source(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("init segment: {0}")]
    Init(#[from] crate::cmaf::init::InitError),
    #[error("{0}")]
    Plan(String),
    #[error("the encoders produced nothing for {0:?}")]
    EncoderStalled(Duration),
}

/// The media thread's state.
struct MediaLoop {
    stream: String,
    spec: SourceSpec,
    settings: Settings,
    /// The source opened at start-up, used by the first connect.
    first: Option<OpenedSource>,
    input: Option<Input>,
    outputs: Vec<Output>,
    epoch: SystemTime,
    /// Media time just past everything delivered so far: a reopened source starts its
    /// timestamps at zero again, and is shifted to continue from here.
    delivered_end: Duration,
    /// Shift applied to the current source instance's timestamps.
    resume_offset: Duration,
    store: Store,
    status: Arc<Mutex<StreamStatus>>,
    /// Rewritten at every connect: a source back with other parameters (another
    /// picture size) changes RESOLUTION and CODECS.
    multivariant: Arc<RwLock<Option<Bytes>>>,
    stop: Arc<AtomicBool>,
}

impl MediaLoop {
    fn run(mut self) {
        let mut samples = Vec::new();
        let mut backoff = Backoff::default();
        let mut last_output = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if self.input.is_none() {
                match self.connect() {
                    Ok(()) => last_output = Instant::now(),
                    Err(error) => {
                        self.fail(&error, &mut backoff);
                        continue;
                    }
                }
            }
            let stepped = self.step(&mut samples);
            let stepped = stepped.and_then(|()| {
                // The watchdog for encoders: frames go in, nothing comes out.
                let limit = self.settings.stall_timeout().max(Duration::from_secs(2));
                if !samples.is_empty() {
                    last_output = Instant::now();
                    Ok(())
                } else if last_output.elapsed() > limit {
                    Err(MediaError::EncoderStalled(limit))
                } else {
                    Ok(())
                }
            });
            if let Err(error) = stepped {
                self.input = None;
                self.fail(&error, &mut backoff);
                continue;
            }
            backoff.reset();
            let now = SystemTime::now();
            for (index, sample) in samples.drain(..) {
                let Some(segmenter) = self.outputs[index].segmenter.as_mut() else {
                    continue;
                };
                if let Err(error) = segmenter.push(sample, now) {
                    tracing::warn!(stream = %self.stream, %error, "sample refused");
                }
            }
            self.publish_events();
        }
    }

    /// One frame or sample from the source, through the encoders when there are any.
    fn step(&mut self, out: &mut Vec<(usize, crate::cmaf::Sample)>) -> Result<(), MediaError> {
        let stall = self.settings.stall_timeout();
        match self.input.as_mut() {
            None => Ok(()),
            Some(Input::Raw { source, transcoder }) => {
                let mut frame = source.next_frame()?;
                let format = source.format();
                let end = shift_frame(&mut frame, self.resume_offset, format);
                self.delivered_end = self.delivered_end.max(end);
                transcoder.push(frame, out)?;
                Ok(())
            }
            Some(Input::Encoded {
                source,
                copies,
                transcoding,
                audio,
            }) => {
                let mut sample = source.next_sample(stall)?;
                let g711 = source
                    .g711_audio()
                    .filter(|_| sample.track_id == crate::pipeline::AUDIO_TRACK_ID);
                let timing = source
                    .tracks()
                    .iter()
                    .find(|t| t.track_id == sample.track_id)
                    .map(|t| (t.timescale, u64::from(t.nominal_sample_ticks)))
                    .or(g711
                        .map(|(_, rate)| (crate::cmaf::Timescale(rate), sample.data.len() as u64)));
                if let Some((timescale, length)) = timing {
                    sample.decode_ticks += timescale.ticks(self.resume_offset);
                    let end = timescale.to_duration(sample.decode_ticks + length);
                    self.delivered_end = self.delivered_end.max(end);
                }
                match (audio, g711) {
                    (Some(audio), Some(_)) => {
                        audio.encoder.push(&sample, &mut audio.samples)?;
                        for aac in audio.samples.drain(..) {
                            deliver(aac, copies, transcoding, out)?;
                        }
                    }
                    _ => deliver(sample, copies, transcoding, out)?,
                }
                Ok(())
            }
        }
    }

    /// Opens the source (or takes the one opened at start-up), opens the encoders, and
    /// readies every rendition: at the first connect, its names, init segment and
    /// playlist; after a failure, a new segmenter that goes on with the next MSN after an
    /// EXT-X-DISCONTINUITY.
    fn connect(&mut self) -> Result<(), MediaError> {
        let opened = match self.first.take() {
            Some(opened) => opened,
            None => self.spec.open_any(&self.settings.source, true)?,
        };
        let Opening {
            input,
            prepared,
            fps,
            mode,
        } = match opened {
            OpenedSource::Raw(source) => open_raw(&self.settings, &self.outputs, source)?,
            OpenedSource::Encoded(source) => open_encoded(&self.settings, &self.outputs, source)?,
        };
        let renditions: Vec<(String, Vec<TrackInfo>)> = self
            .outputs
            .iter()
            .zip(&prepared)
            .map(|(o, p)| (o.id.clone(), p.tracks.clone()))
            .collect();
        self.resume_offset = self.delivered_end;
        let now = SystemTime::now();
        let window = self.settings.server.window_segments;
        for (output, prepared) in self.outputs.iter_mut().zip(prepared) {
            output.ready(prepared, self.epoch, window, now, &self.stream)?;
        }
        *self.multivariant.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Bytes::from(multivariant(&renditions, fps)));
        let jitter = match &input {
            Input::Encoded { source, .. } => source.buffer_fill(),
            Input::Raw { .. } => None,
        };
        self.input = Some(input);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.state = "live";
        status.mode = Some(mode);
        status.jitter_buffer = jitter;
        tracing::info!(stream = %self.stream, mode, source = %self.spec, "stream live");
        Ok(())
    }

    /// The source or the pipeline failed: close every open segment (so the playlist
    /// lists what was made), log it, note it in the status, and wait (exponential
    /// backoff with jitter, so a fleet of streams does not retry in step) before the
    /// next connect. The playlist stays served meanwhile; blocked reloads end with 503
    /// after three target durations.
    fn fail(&mut self, error: &MediaError, backoff: &mut Backoff) {
        let now = SystemTime::now();
        for output in &mut self.outputs {
            if let Some(mut segmenter) = output.segmenter.take() {
                if let Err(error) = segmenter.finish(now) {
                    tracing::warn!(stream = %self.stream, %error, "the open part is lost");
                }
                drain_events(&self.stream, &self.store, output, &mut segmenter);
                output.next_msn = segmenter.next_msn();
                output.publish();
            }
        }
        let delay = backoff.next();
        tracing::warn!(stream = %self.stream, %error, retry_in = ?delay, "source failed; retrying");
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.state = "retrying";
            status.last_error = Some(error.to_string());
            status.restarts += 1;
        }
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn publish_events(&mut self) {
        let mut changed = vec![false; self.outputs.len()];
        for (index, output) in self.outputs.iter_mut().enumerate() {
            let Some(mut segmenter) = output.segmenter.take() else {
                continue;
            };
            changed[index] = drain_events(&self.stream, &self.store, output, &mut segmenter);
            output.next_msn = segmenter.next_msn();
            output.segmenter = Some(segmenter);
        }
        if !changed.iter().any(|&c| c) {
            return;
        }
        if self.outputs.len() > 1 {
            // RFC 8216bis 4.4.5.4: each playlist reports where the others are. Every
            // rendition gets its parts from the same frame, so reports are at most one
            // part behind.
            let edges: Vec<crate::llhls::RenditionReport> = self
                .outputs
                .iter()
                .filter_map(|o| {
                    let (last_msn, last_part) = o.live.last_part()?;
                    Some(crate::llhls::RenditionReport {
                        uri: format!("{}.m3u8", o.id),
                        last_msn,
                        last_part,
                    })
                })
                .collect();
            for output in &mut self.outputs {
                let own = format!("{}.m3u8", output.id);
                let reports = edges.iter().filter(|r| r.uri != own).cloned().collect();
                output.live.set_rendition_reports(reports);
            }
        }
        if let Some(Input::Encoded { source, .. }) = &self.input {
            let fill = source.buffer_fill();
            self.status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .jitter_buffer = fill;
        }
        for (output, changed) in self.outputs.iter_mut().zip(changed) {
            if changed {
                output.publish();
            }
        }
    }
}

/// What a connect produced: the input, and per rendition what to ready it with.
struct Opening {
    input: Input,
    prepared: Vec<Prepared>,
    fps: Option<(u32, u32)>,
    mode: &'static str,
}

/// One rendition's tracks, segmenter configuration, and the profile its names hash.
struct Prepared {
    tracks: Vec<TrackInfo>,
    config: crate::cmaf::SegmenterConfig,
    profile: String,
}

/// A decoded source: every rendition encoded, on Mirror's own keyframe grid.
fn open_raw(
    settings: &Settings,
    outputs: &[Output],
    source: Box<dyn Source + Send>,
) -> Result<Opening, MediaError> {
    let mut prepared = Vec::with_capacity(outputs.len());
    let format = source.format();
    let mut profiles = Vec::with_capacity(outputs.len());
    for output in outputs {
        let Plan::Transcode {
            encoder,
            size,
            bitrate_kbps,
        } = &output.plan
        else {
            return Err(MediaError::Plan(format!(
                "rendition {} is passthrough but the source is decoded",
                output.id
            )));
        };
        let (width, height) = size.unwrap_or((format.width, format.height));
        profiles.push(crate::pipeline::VideoProfile {
            encoder: *encoder,
            width,
            height,
            bitrate_kbps: *bitrate_kbps,
        });
    }
    let transcoder = Transcoder::open(
        settings,
        format,
        &profiles,
        crate::pipeline::Keyframes::SegmentGrid,
        true,
    )?;
    let fps = format.frame_rate;
    let fps = (
        u32::try_from(fps.numerator()).unwrap_or(30),
        u32::try_from(fps.denominator()).unwrap_or(1),
    );
    let e = &settings.encoder;
    for (index, profile) in profiles.iter().enumerate() {
        let tracks = transcoder.tracks(index).to_vec();
        let key = format!(
            "{}|{}x{}|{}k|{}|b{}|vbv{}|gop{}|{}/{}|{:?}|{:?}|a{}",
            profile.encoder.name,
            profile.width,
            profile.height,
            profile.bitrate_kbps,
            e.preset,
            e.bframes,
            e.vbv_buffer_ms,
            settings.keyframe_interval_frames(fps.0, fps.1),
            fps.0,
            fps.1,
            settings.cmaf.part_target(),
            settings.cmaf.segment_target(),
            e.audio_bitrate_kbps,
        );
        let config = settings.segmenter_config(tracks.clone());
        prepared.push(Prepared {
            tracks,
            config,
            profile: key,
        });
    }
    Ok(Opening {
        input: Input::Raw {
            source,
            transcoder: Box::new(transcoder),
        },
        prepared,
        fps: Some(fps),
        mode: "transcode",
    })
}

/// An encoded source: renditions passed through, and the others decoded once and
/// encoded with the source's keyframes; segments follow the source's GOP.
fn open_encoded(
    settings: &Settings,
    outputs: &[Output],
    source: Box<dyn crate::ingest::EncodedSource + Send>,
) -> Result<Opening, MediaError> {
    let mut prepared = Vec::with_capacity(outputs.len());
    // G.711 sound becomes an AAC track of every rendition.
    let audio = match source.g711_audio() {
        Some((law, rate)) => Some(Box::new(AudioToAac {
            encoder: crate::pipeline::decode::AudioTranscoder::open(settings, law, rate)?,
            samples: Vec::new(),
        })),
        None => None,
    };
    let mut tracks = source.tracks().to_vec();
    if let Some(audio) = &audio {
        tracks.push(audio.encoder.track().clone());
    }
    // Segments follow the source's GOP: a segment ends at the first keyframe
    // at or after the target, so the target is at least one GOP.
    let gop = source.keyframe_interval();
    let (fps_num, fps_den) = source.frame_rate().unwrap_or((30, 1));
    let mut base = settings.segmenter_config(Vec::new());
    base.keyframes_on_segment_grid = false;
    base.segment_target = base.segment_target.max(gop);
    let segment_target = base.segment_target;
    let config = |tracks: &[TrackInfo]| crate::cmaf::SegmenterConfig {
        tracks: tracks.to_vec(),
        ..base.clone()
    };
    let mut copies = Vec::new();
    let mut encoded = Vec::new();
    let mut profiles = Vec::new();
    for (index, output) in outputs.iter().enumerate() {
        match &output.plan {
            Plan::Passthrough => copies.push(index),
            Plan::Transcode {
                encoder,
                size,
                bitrate_kbps,
            } => {
                encoded.push(index);
                profiles.push((*encoder, *size, *bitrate_kbps));
            }
        }
    }
    let transcoding = if encoded.is_empty() {
        None
    } else {
        // Renditions that transcode what the others pass through: decode
        // once, encode each with the camera's keyframes, so that every
        // rendition's segments start at the same frames.
        let fps = ffmpeg_next::Rational(
            i32::try_from(fps_num).unwrap_or(30),
            i32::try_from(fps_den).unwrap_or(1),
        );
        // Only the pictures are decoded: the camera's sound (or the AAC made
        // from its G.711) goes to these renditions as it is.
        let decoder = crate::pipeline::SampleDecoder::open(&tracks, fps)?;
        let format = decoder.format();
        let profiles: Vec<crate::pipeline::VideoProfile> = profiles
            .into_iter()
            .map(|(encoder, size, bitrate_kbps)| {
                let (width, height) = size.unwrap_or((format.width, format.height));
                crate::pipeline::VideoProfile {
                    encoder,
                    width,
                    height,
                    bitrate_kbps,
                }
            })
            .collect();
        let gop_frames =
            (gop.as_secs_f64() * f64::from(fps_num) / f64::from(fps_den.max(1))).round() as u32;
        let transcoder = Transcoder::open(
            settings,
            format,
            &profiles,
            crate::pipeline::Keyframes::FollowSource {
                gop_frames: gop_frames.max(1),
            },
            false,
        )?;
        Some(Box::new(Transcoding {
            decoder,
            transcoder,
            outputs: encoded.clone(),
            frames: Vec::new(),
            samples: Vec::new(),
            profiles,
        }))
    };
    for index in 0..outputs.len() {
        let (tracks, key) = match (&transcoding, encoded.iter().position(|&i| i == index)) {
            (Some(t), Some(j)) => {
                let p = &t.profiles[j];
                let e = &settings.encoder;
                // The transcoded picture with the source's own sound.
                let sound = tracks
                    .iter()
                    .filter(|t| t.kind() == crate::cmaf::TrackKind::Audio);
                (
                    t.transcoder
                        .tracks(j)
                        .iter()
                        .chain(sound)
                        .cloned()
                        .collect(),
                    format!(
                        "{}|{}x{}|{}k|{}|vbv{}|follow|{}|{:?}|{:?}|a{}",
                        p.encoder.name,
                        p.width,
                        p.height,
                        p.bitrate_kbps,
                        e.preset,
                        e.vbv_buffer_ms,
                        crate::cmaf::codecs(&tracks),
                        settings.cmaf.part_target(),
                        segment_target,
                        e.audio_bitrate_kbps,
                    ),
                )
            }
            _ => (
                tracks.clone(),
                format!(
                    "copy|{}|{:?}|{:?}",
                    crate::cmaf::codecs(&tracks),
                    settings.cmaf.part_target(),
                    segment_target
                ),
            ),
        };
        let config = config(&tracks);
        prepared.push(Prepared {
            tracks,
            config,
            profile: key,
        });
    }
    let mode = if transcoding.is_none() {
        "passthrough"
    } else if copies.is_empty() {
        "transcode"
    } else {
        "passthrough+transcode"
    };
    let fps = source.frame_rate();
    Ok(Opening {
        input: Input::Encoded {
            source,
            copies,
            transcoding,
            audio,
        },
        prepared,
        fps,
        mode,
    })
}

/// An encoded source's sample to the renditions that pass it through, and to the
/// decoder of those that transcode.
fn deliver(
    sample: crate::cmaf::Sample,
    copies: &[usize],
    transcoding: &mut Option<Box<Transcoding>>,
    out: &mut Vec<(usize, crate::cmaf::Sample)>,
) -> Result<(), MediaError> {
    if let Some(t) = transcoding {
        if sample.track_id == crate::pipeline::VIDEO_TRACK_ID {
            t.decoder.push(&sample, &mut t.frames)?;
            for frame in t.frames.drain(..) {
                t.transcoder.push(frame, &mut t.samples)?;
                out.extend(t.samples.drain(..).map(|(j, s)| (t.outputs[j], s)));
            }
        } else {
            // Sound is not transcoded: every rendition carries the same samples.
            out.extend(t.outputs.iter().map(|&index| (index, sample.clone())));
        }
    }
    if let Some((&last, rest)) = copies.split_last() {
        for &index in rest {
            out.push((index, sample.clone()));
        }
        out.push((last, sample));
    }
    Ok(())
}

/// Whether two track lists decode alike (same codecs, configurations and timescales;
/// bit rates may differ).
fn same_media(a: &[TrackInfo], b: &[TrackInfo]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.track_id == b.track_id && a.timescale == b.timescale && a.codec == b.codec
        })
}

/// Moves `frame` past everything delivered before the source was last reopened.
/// Returns the media time just past the frame.
fn shift_frame(
    frame: &mut SourceFrame,
    resume_offset: Duration,
    format: crate::ingest::SourceFormat,
) -> Duration {
    let tb = frame.time_base;
    let (num, den) = (
        i128::from(tb.numerator().max(1)),
        i128::from(tb.denominator().max(1)),
    );
    let offset =
        i128::try_from(resume_offset.as_nanos()).unwrap_or(0) * den / (num * 1_000_000_000);
    let offset = i64::try_from(offset).unwrap_or(0);
    let (pts, length) = match &mut frame.media {
        RawMedia::Video(v) => {
            let pts = v.pts().unwrap_or(0) + offset;
            v.set_pts(Some(pts));
            let fps = format.frame_rate;
            let nanos =
                1_000_000_000 * i64::from(fps.denominator()) / i64::from(fps.numerator().max(1));
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
    at + length
}

/// Takes the segmenter's events into the store and the rendition's playlist; true when
/// the playlist changed.
fn drain_events(
    stream: &str,
    store: &Store,
    output: &mut Output,
    segmenter: &mut Segmenter,
) -> bool {
    let mut changed = false;
    while let Some(event) = segmenter.poll_event() {
        changed = true;
        match event {
            SegmenterEvent::Part(part) => {
                let name = output.names.part(part.msn, part.index);
                store.insert(
                    store::key(stream, &name),
                    vec![part.bytes],
                    part.completed_at,
                );
                output.live.push_part(
                    part.msn,
                    part.index,
                    part.duration,
                    part.independent,
                    part.completed_at,
                );
            }
            SegmenterEvent::Segment(segment) => {
                let name = output.names.segment(segment.msn);
                let completed = segment
                    .parts
                    .last()
                    .map_or_else(SystemTime::now, |p| p.completed_at);
                let chunks = segment.parts.iter().map(|p| p.bytes.clone()).collect();
                store.insert(store::key(stream, &name), chunks, completed);
                output.live.push_segment(
                    segment.msn,
                    segment.duration,
                    segment.captured_at,
                    completed,
                );
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn gzip_members_decode_and_the_reused_state_starts_clean() {
        let first = "#EXTM3U\n".repeat(200);
        let second = "#EXT-X-PART:DURATION=0.200\n".repeat(50);
        for text in [&first, &second, &first] {
            let packed = gzip(text.as_bytes());
            assert!(packed.len() < text.len() / 4, "compressed");
            let mut unpacked = String::new();
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_string(&mut unpacked)
                .expect("valid gzip");
            assert_eq!(&unpacked, text);
        }
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&gzip(b"")[..])
            .read_to_end(&mut empty)
            .expect("valid gzip of nothing");
        assert!(empty.is_empty());
    }

    #[test]
    fn profile_hashes_differ_with_the_profile() {
        let a = profile_hash("libx264|1280x720|2500k");
        assert_eq!(a.len(), 8);
        assert_eq!(a, profile_hash("libx264|1280x720|2500k"));
        assert_ne!(a, profile_hash("libx264|1280x720|2000k"));
    }
}
