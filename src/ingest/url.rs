//! Network sources libav can open: `srt://`, `udp://` and `rtp://` MPEG-TS, `rtmp://`,
//! `http(s)://` (HLS or progressive), `tcp://`. One demuxer, one decoder per stream,
//! and per stream a filter graph that brings frames to what the encoders take
//! (constant frame rate, even size, yuv420p; 48 kHz stereo float in 1024-sample frames).
//!
//! A dead peer never hangs the media thread: libav's interrupt callback ([`Deadline`])
//! ends an open that takes longer than the open timeout and any read once no frame has
//! come out for the read timeout (a peer that sends packets whose frames are all
//! dropped is as dead as a silent one), and the stream restarts the source with
//! backoff. A jump in the timestamps beyond the largest gap is a discontinuity: the
//! source is reopened rather than the gap filled with copies (or the rest dropped).
//! Frames are taken from the filter graphs as they are needed, so at most
//! `MAX_QUEUED` pictures wait here whatever the graph could make. Timestamps start at zero at the first picture; frames are released at the
//! pace of their timestamps (a source that bursts, like HLS fetching whole segments, is
//! smoothed to real time), and each frame's capture time is the arrival of the first
//! picture plus its media time. A source without sound gets silence.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use ffmpeg::{Dictionary, Rational, codec, filter, format, frame, media};
use ffmpeg_next as ffmpeg;

use super::deadline::{Armed, Deadline};
use super::{IngestError, OpenLimits, RawMedia, Source, SourceFormat, SourceFrame};
use crate::libav::{AUDIO_FRAME_SAMPLES, buffer_graph, media_time, silence_frame, ticks};

/// Sampling rate audio is resampled to.
const SAMPLE_RATE: u32 = 48_000;
/// Longest read wait when the watchdog is left at its default.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames decoded ahead of the other track before giving up on order.
const MAX_QUEUED: usize = 64;

/// Whether `text` names a network source this module opens.
pub fn is_url(text: &str) -> bool {
    const SCHEMES: [&str; 8] = [
        "srt://", "udp://", "rtp://", "rtmp://", "rtmps://", "http://", "https://", "tcp://",
    ];
    SCHEMES.iter().any(|s| text.starts_with(s))
}

fn is_rtmp(url: &str) -> bool {
    url.starts_with("rtmp://") || url.starts_with("rtmps://")
}

/// Whether `url` waits for a sender: UDP and RTP receive, SRT in listener mode, TCP and
/// RTMP told to listen.
pub(crate) fn listens(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let has = |pair: &str| query.split('&').any(|p| p == pair);
    url.starts_with("udp://")
        || url.starts_with("rtp://")
        || (url.starts_with("srt://") && has("mode=listener"))
        || ((url.starts_with("tcp://") || is_rtmp(url)) && (has("listen=1") || has("listen=2")))
}

/// A stream's decoder and the graph after it.
struct Track<D> {
    index: usize,
    decoder: D,
    graph: filter::Graph,
    /// The sink's time base.
    out_time_base: Rational,
}

/// See the module docs.
pub struct UrlSource {
    name: String,
    input: format::context::Input,
    video: Track<codec::decoder::Video>,
    audio: Option<Track<codec::decoder::Audio>>,
    format: SourceFormat,
    /// First picture's timestamp, in the video stream's time base: media time zero.
    origin: Option<i64>,
    video_time_base: Rational,
    audio_time_base: Rational,
    start: Instant,
    start_wall: SystemTime,
    queued_video: VecDeque<(frame::Video, Duration)>,
    queued_audio: VecDeque<(frame::Audio, Duration)>,
    /// Media time just past the last audio frame (silence is made up to the video).
    audio_end: Duration,
    /// Media time of the latest picture decoded, to see a jump.
    last_video_at: Option<Duration>,
    /// The largest timestamp jump that is not a discontinuity.
    max_gap: Duration,
    /// What libav's calls give up at.
    deadline: Deadline,
    read_timeout: Duration,
    /// Packet bytes read since [`Source::take_bytes_read`] last asked.
    bytes_read: u64,
}

impl UrlSource {
    /// Opens `url` within `limits`; reads wait at most `read_timeout` (`None`: 2 s) for
    /// a frame.
    pub fn open(
        url: &str,
        read_timeout: Option<Duration>,
        limits: &OpenLimits,
    ) -> Result<Self, IngestError> {
        // Errors and logs name the source without its secrets (see `redact`).
        let name = super::redact::redact(url);
        let err = |what| IngestError::libav(&name, what);
        crate::libav::init().map_err(err("initialising libav"))?;
        let timeout = read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
        let micros = timeout.as_micros().to_string();
        let mut options = Dictionary::new();
        // A listener waits for its sender as long as it takes: only the deadline bounds
        // its reads, once it is open. Everything else: every read gives up after this,
        // and `timeout` means a socket (and connect) timeout for SRT, TCP, UDP and HTTP,
        // but for RTMP how long to wait for a client to connect, and setting it turns
        // RTMP's listen mode on: a pull would become a server.
        if !listens(url) {
            options.set("rw_timeout", &micros);
            if !is_rtmp(url) {
                options.set("timeout", &micros);
            }
        }
        // Start fast: a live source is probed for half a second, not five.
        options.set("analyzeduration", "500000");
        options.set("probesize", "1000000");
        options.set("fflags", "nobuffer");
        let deadline = Deadline::new(limits.stop.clone());
        deadline.arm(if listens(url) {
            Armed::Never
        } else {
            Armed::Open(limits.open_timeout)
        });
        let input = {
            let deadline = deadline.clone();
            format::input_with_interrupt_and_dictionary(url, move || deadline.expired(), options)
        }
        .map_err(|error| match deadline.armed() {
            Armed::Open(within) if deadline.expired() && !deadline.stopped() => {
                IngestError::Network {
                    source_name: name.clone(),
                    reason: format!("not open within {within:?} (the open timeout)"),
                }
            }
            _ => err("opening")(error),
        })?;
        deadline.arm(Armed::Frame(timeout));
        let stream =
            input
                .streams()
                .best(media::Type::Video)
                .ok_or_else(|| IngestError::Unsupported {
                    source_name: name.clone(),
                    reason: "no video stream".into(),
                })?;
        let video_index = stream.index();
        let video_time_base = stream.time_base();
        let rate = stream.avg_frame_rate();
        let rate = if rate.numerator() > 0 && rate.denominator() > 0 {
            rate
        } else {
            let r = stream.rate();
            if r.numerator() > 0 && r.denominator() > 0 {
                r
            } else {
                Rational(30, 1)
            }
        };
        let decoder = codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(err("opening the video decoder"))?;
        let (width, height) = (decoder.width() & !1, decoder.height() & !1);
        if width == 0 || height == 0 {
            return Err(IngestError::Unsupported {
                source_name: name,
                reason: "the video has no size".into(),
            });
        }
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect=1/1",
            decoder.width(),
            decoder.height(),
            ffmpeg::ffi::AVPixelFormat::from(decoder.format()) as i32,
            video_time_base.numerator(),
            video_time_base.denominator().max(1),
        );
        let spec = format!(
            "fps={}/{},scale={width}:{height},format=yuv420p",
            rate.numerator(),
            rate.denominator()
        );
        let mut video_graph = buffer_graph("buffer", &args, "buffersink", &spec)
            .map_err(err("building the video graph"))?;
        let video_out = video_graph
            .get("out")
            .ok_or(ffmpeg::Error::FilterNotFound)
            .map_err(err("building the video graph"))?
            .sink()
            .time_base();
        let audio = match input.streams().best(media::Type::Audio) {
            None => None,
            Some(stream) => {
                let index = stream.index();
                let decoder = codec::context::Context::from_parameters(stream.parameters())
                    .and_then(|c| c.decoder().audio())
                    .map_err(err("opening the audio decoder"))?;
                let layout = if decoder.channel_layout().is_empty() {
                    ffmpeg::ChannelLayout::default(i32::from(decoder.channels()))
                } else {
                    decoder.channel_layout()
                };
                let tb = stream.time_base();
                let args = format!(
                    "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
                    tb.numerator(),
                    tb.denominator().max(1),
                    decoder.rate(),
                    decoder.format().name(),
                    layout.bits()
                );
                let spec = format!(
                    "aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"
                );
                let mut graph = buffer_graph("abuffer", &args, "abuffersink", &spec)
                    .map_err(err("building the audio graph"))?;
                let mut out = graph
                    .get("out")
                    .ok_or(ffmpeg::Error::FilterNotFound)
                    .map_err(err("building the audio graph"))?;
                out.sink().set_frame_size(AUDIO_FRAME_SAMPLES);
                let out_time_base = out.sink().time_base();
                Some(Track {
                    index,
                    decoder,
                    graph,
                    out_time_base,
                })
            }
        };
        let audio_time_base = audio
            .as_ref()
            .map_or(Rational(1, SAMPLE_RATE as i32), |a| a.out_time_base);
        Ok(Self {
            format: SourceFormat {
                width,
                height,
                frame_rate: rate,
                video_time_base: video_out,
                sample_rate: SAMPLE_RATE,
                audio_time_base,
            },
            name,
            input,
            video: Track {
                index: video_index,
                decoder,
                graph: video_graph,
                out_time_base: video_out,
            },
            audio,
            origin: None,
            video_time_base,
            audio_time_base,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            queued_video: VecDeque::new(),
            queued_audio: VecDeque::new(),
            bytes_read: 0,
            audio_end: Duration::ZERO,
            last_video_at: None,
            max_gap: limits.max_gap,
            deadline,
            read_timeout: timeout,
        })
    }

    /// A read that failed: the watchdog's doing when no frame came out in time.
    fn read_failed(&self, error: ffmpeg::Error) -> IngestError {
        match self.deadline.armed() {
            Armed::Frame(after) if self.deadline.expired() && !self.deadline.stopped() => {
                IngestError::Stalled {
                    source_name: self.name.clone(),
                    after,
                }
            }
            _ => self.error("reading")(error),
        }
    }

    /// A picture at media time `at` (from the first picture) after the latest one: a
    /// jump beyond the largest gap either way is a discontinuity.
    fn check_jump(&self, at: Duration) -> Result<(), IngestError> {
        let Some(last) = self.last_video_at else {
            return Ok(());
        };
        let jump = if at > last + self.max_gap {
            format!("forward by {:.1} s", (at - last).as_secs_f64())
        } else if at + self.max_gap < last {
            format!("back by {:.1} s", (last - at).as_secs_f64())
        } else {
            return Ok(());
        };
        Err(IngestError::TimestampJump {
            source_name: self.name.clone(),
            jump,
        })
    }

    /// Moves pictures out of the video graph until `MAX_QUEUED` wait; the graph makes
    /// the rest (copies filling a gap, say) only when asked.
    fn drain_video(&mut self) {
        let mut out = frame::Video::empty();
        while self.queued_video.len() < MAX_QUEUED {
            let Some(mut sink) = self.video.graph.get("out") else {
                break;
            };
            if sink.sink().frame(&mut out).is_err() {
                break;
            }
            let at = media_time(out.pts().unwrap_or(0), self.video.out_time_base);
            self.queued_video.push_back((out.clone(), at));
        }
    }

    /// The same for sound.
    fn drain_audio(&mut self) {
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        let mut out = frame::Audio::empty();
        while self.queued_audio.len() < MAX_QUEUED {
            let Some(mut sink) = audio.graph.get("out") else {
                break;
            };
            if sink.sink().frame(&mut out).is_err() {
                break;
            }
            if out.samples() != AUDIO_FRAME_SAMPLES as usize {
                continue;
            }
            let at = media_time(out.pts().unwrap_or(0), audio.out_time_base);
            self.queued_audio.push_back((out.clone(), at));
        }
    }

    fn error(&self, what: &'static str) -> impl FnOnce(ffmpeg::Error) -> IngestError + use<> {
        IngestError::libav(&self.name, what)
    }

    /// Reads one packet and queues whatever frames it yields.
    fn read_packet(&mut self) -> Result<(), IngestError> {
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut self.input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => return Err(IngestError::Ended(self.name.clone())),
            Err(error) => return Err(self.read_failed(error)),
        }
        self.bytes_read += packet.size() as u64;
        let index = packet.stream();
        if index == self.video.index {
            // The decoder's errors on a damaged packet are the source's problem, not
            // the stream's: drop the packet and go on.
            if self.video.decoder.send_packet(&packet).is_err() {
                return Ok(());
            }
            let mut decoded = frame::Video::empty();
            while self.video.decoder.receive_frame(&mut decoded).is_ok() {
                let Some(pts) = decoded.timestamp().or(decoded.pts()) else {
                    continue;
                };
                if self.origin.is_none() {
                    // Media time zero is the first picture; its arrival is its capture.
                    self.origin = Some(pts);
                    self.start = Instant::now();
                    self.start_wall = SystemTime::now();
                }
                let origin = self.origin.unwrap_or(pts);
                if pts < origin {
                    // Before the first picture: how far back of the latest one it is.
                    let back = self.last_video_at.unwrap_or_default()
                        + media_time(origin.saturating_sub(pts), self.video_time_base);
                    if back > self.max_gap {
                        return Err(IngestError::TimestampJump {
                            source_name: self.name.clone(),
                            jump: format!("back by {:.1} s", back.as_secs_f64()),
                        });
                    }
                    continue;
                }
                let at = media_time(pts.saturating_sub(origin), self.video_time_base);
                self.check_jump(at)?;
                if self.last_video_at.is_some_and(|last| at < last) {
                    continue; // a little back: out of order, dropped
                }
                self.last_video_at = Some(at);
                decoded.set_pts(Some(pts.saturating_sub(origin)));
                let mut source = self
                    .video
                    .graph
                    .get("in")
                    .ok_or(ffmpeg::Error::FilterNotFound);
                source
                    .as_mut()
                    .map_err(|e| *e)
                    .and_then(|s| s.source().add(&decoded))
                    .map_err(self.error("filtering video"))?;
            }
            self.drain_video();
        } else if let Some(audio) = self.audio.as_mut().filter(|a| a.index == index) {
            let Some(origin) = self.origin else {
                return Ok(()); // no sound before the first picture
            };
            if audio.decoder.send_packet(&packet).is_err() {
                return Ok(());
            }
            let stream_tb = self
                .input
                .stream(index)
                .map_or(Rational(1, 90_000), |s| s.time_base());
            let origin_at = media_time(origin, self.video_time_base);
            let mut decoded = frame::Audio::empty();
            while audio.decoder.receive_frame(&mut decoded).is_ok() {
                let Some(pts) = decoded.timestamp().or(decoded.pts()) else {
                    continue;
                };
                let at = media_time(pts, stream_tb);
                if at < origin_at {
                    continue;
                }
                decoded.set_pts(Some(ticks(at - origin_at, stream_tb)));
                if decoded.channel_layout().is_empty() {
                    decoded.set_channel_layout(ffmpeg::ChannelLayout::default(i32::from(
                        decoded.channels(),
                    )));
                }
                if let Some(mut input) = audio.graph.get("in") {
                    let _ = input.source().add(&decoded);
                }
            }
            self.drain_audio();
        }
        Ok(())
    }
}

impl Source for UrlSource {
    fn format(&self) -> SourceFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<SourceFrame, IngestError> {
        loop {
            let video_at = self.queued_video.front().map(|(_, at)| *at);
            let audio_at = self.queued_audio.front().map(|(_, at)| *at);
            let take_audio = match (video_at, audio_at) {
                (_, Some(a)) if video_at.is_none_or(|v| a <= v) => Some(true),
                // Without a sound track, silence keeps up with the pictures.
                (Some(v), None) if self.audio.is_none() && self.audio_end <= v => {
                    let silence =
                        silence_frame(SAMPLE_RATE, ticks(self.audio_end, self.audio_time_base));
                    let at = self.audio_end;
                    self.audio_end += Duration::from_nanos(
                        u64::from(AUDIO_FRAME_SAMPLES) * 1_000_000_000 / u64::from(SAMPLE_RATE),
                    );
                    self.queued_audio.push_back((silence, at));
                    continue;
                }
                (Some(_), None)
                    if self.audio.is_none() || self.queued_video.len() >= MAX_QUEUED =>
                {
                    Some(false)
                }
                (Some(_), Some(_)) => Some(false),
                _ => None,
            };
            let Some(take_audio) = take_audio else {
                // What the graphs hold already first; a packet only when they are empty.
                let queued = self.queued_video.len() + self.queued_audio.len();
                self.drain_video();
                self.drain_audio();
                if self.queued_video.len() + self.queued_audio.len() == queued {
                    self.read_packet()?;
                }
                continue;
            };
            let (media, time_base, at) = if take_audio {
                let (f, at) = self
                    .queued_audio
                    .pop_front()
                    .ok_or(IngestError::Ended(self.name.clone()))?;
                (RawMedia::Audio(f), self.audio_time_base, at)
            } else {
                let (f, at) = self
                    .queued_video
                    .pop_front()
                    .ok_or(IngestError::Ended(self.name.clone()))?;
                (RawMedia::Video(f), self.video.out_time_base, at)
            };
            let due = self.start + at;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A frame delivered: the next one has the read timeout to come.
            self.deadline.arm(Armed::Frame(self.read_timeout));
            return Ok(SourceFrame {
                media,
                time_base,
                captured_at: self.start_wall + at,
            });
        }
    }

    fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_schemes_are_urls_and_paths_are_not() {
        assert!(is_url("srt://127.0.0.1:9000?mode=listener"));
        assert!(is_url("udp://127.0.0.1:5000"));
        assert!(is_url("https://example.com/live.m3u8"));
        assert!(!is_url("clips/intro.mp4"));
        assert!(!is_url("rtsp://camera/stream"));
    }

    #[test]
    fn a_password_in_the_url_never_reaches_the_error() {
        // Nothing listens there: the open fails at once, naming the source.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let Err(error) = UrlSource::open(
            &format!("http://viewer:hunter2@127.0.0.1:{port}/live.ts"),
            Some(Duration::from_millis(500)),
            &OpenLimits::default(),
        ) else {
            panic!("nothing listens there");
        };
        let text = error.to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_listener_waits_for_its_sender_until_the_stream_stops() {
        // Nothing sends to this port: a listener waits (state "waiting"), and stopping
        // the stream ends the wait at once.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        drop(socket);
        let limits = OpenLimits::default();
        let stop = limits.stop.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let started = Instant::now();
        let result = UrlSource::open(
            &format!("udp://127.0.0.1:{port}"),
            Some(Duration::from_millis(500)),
            &limits,
        );
        assert!(result.is_err(), "no data, no source");
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(1400)..Duration::from_secs(4)).contains(&waited),
            "{waited:?}: a listener gave up before it was stopped, or did not stop"
        );
        stopper.join().expect("stopper");
    }
}
