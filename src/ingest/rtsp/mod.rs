//! RTSP ingest with retina: H.264 or H.265 video and AAC audio, received as encoded
//! samples for passthrough (no decode, no encode). G.711 audio is received too, for the
//! stream to transcode to AAC.
//!
//! The session runs on a thread of its own with a single-threaded tokio runtime and
//! feeds a [`JitterBuffer`]; the media thread takes samples from it with a timeout, which
//! is the watchdog for a source that stops sending without failing.
//!
//! Timing:
//! - Media time is retina's `Timestamp::elapsed` (RTP time since the start of play),
//!   aligned across streams by the PLAY response's `RTP-Info` when the server gives it.
//!   retina gives presentation times only; a stream whose presentation times go
//!   backwards has B-frames, whose decode times cannot be recovered without parsing the
//!   slice headers, so such a stream is refused with an error that says so.
//! - The capture wall clock comes from RTCP sender reports (NTP ↔ RTP) when the server
//!   sends them and their clock is within a day of ours (a sender whose "NTP" clock is
//!   its uptime is not a wall clock); before the first usable report, and without any,
//!   it is the arrival time.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};

mod timing;
mod tracks;

use self::timing::Timing;
use self::tracks::tracks_of;
use super::jitter::{JitterBuffer, JitterFill, Popped};
use super::startup::Startup;
use super::{EncodedSource, ForeignAudio, G711, IngestError};
use crate::cmaf::{AUDIO_TRACK_ID, VIDEO_TRACK_ID};
use crate::cmaf::{Sample, TrackInfo};

/// How long each of DESCRIBE, SETUP and PLAY may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long opening may take in all, up to the second keyframe: cameras with long GOPs
/// (10 s is common in "smart" encoding modes) need two of them.
const FIRST_GOP_TIMEOUT: Duration = Duration::from_secs(30);

/// RTP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved on the RTSP connection (default: works through NAT and firewalls).
    #[default]
    Tcp,
    /// RTP/RTCP over UDP (retina: no reordering, suited to a LAN).
    Udp,
}

/// What the receiving thread learnt before the first sample was handed over.
struct Opened {
    tracks: Vec<TrackInfo>,
    gop: Duration,
    frame_rate: Option<(u32, u32)>,
    g711: Option<(G711, u32)>,
}

/// A playing RTSP session. See the module docs.
pub struct RtspSource {
    name: String,
    tracks: Vec<TrackInfo>,
    gop: Duration,
    frame_rate: Option<(u32, u32)>,
    g711: Option<(G711, u32)>,
    buffer: Arc<JitterBuffer>,
    thread: Option<JoinHandle<()>>,
}

impl RtspSource {
    /// Connects, plays, and waits for two video keyframes (so the source's GOP, which
    /// sets the segment length in passthrough, is known before the first playlist).
    pub fn open(
        url: &str,
        transport: RtspTransport,
        buffer_samples: usize,
    ) -> Result<Self, IngestError> {
        let name = super::redact::redact(url);
        let parsed = url::Url::parse(url).map_err(|e| IngestError::Unsupported {
            source_name: name.clone(),
            reason: format!("not a URL: {e}"),
        })?;
        let buffer = Arc::new(JitterBuffer::new(buffer_samples, VIDEO_TRACK_ID));
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
        let session = Session {
            name: name.clone(),
            url: parsed,
            transport,
            buffer: buffer.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("rtsp".into())
            .spawn(move || session.run(opened_tx))
            .map_err(|e| IngestError::Network {
                source_name: name.clone(),
                reason: format!("cannot start the receiving thread: {e}"),
            })?;
        let closing = |reason: String| {
            buffer.close(reason.clone());
            IngestError::Network {
                source_name: name.clone(),
                reason,
            }
        };
        // On failure the receiving thread is left to end by itself (it sees the closed
        // buffer, or its own timeouts fire): joining it could hold the media thread for
        // another RTSP timeout.
        let opened = match opened_rx.recv_timeout(FIRST_GOP_TIMEOUT) {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                buffer.close(error.to_string());
                return Err(error);
            }
            Err(_) => {
                return Err(closing(format!(
                    "no two video keyframes within {} s (is the GOP longer?)",
                    FIRST_GOP_TIMEOUT.as_secs()
                )));
            }
        };
        tracing::info!(
            source = %name,
            codecs = %crate::cmaf::codecs(&opened.tracks),
            gop_ms = opened.gop.as_millis(),
            "RTSP source playing"
        );
        Ok(Self {
            name,
            tracks: opened.tracks,
            gop: opened.gop,
            frame_rate: opened.frame_rate,
            g711: opened.g711,
            buffer,
            thread: Some(thread),
        })
    }
}

impl EncodedSource for RtspSource {
    fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    fn keyframe_interval(&self) -> Duration {
        self.gop
    }

    fn frame_rate(&self) -> Option<(u32, u32)> {
        self.frame_rate
    }

    fn next_sample(&mut self, timeout: Duration) -> Result<Sample, IngestError> {
        match self.buffer.pop(timeout) {
            Popped::Sample(sample) => Ok(sample),
            Popped::TimedOut => Err(IngestError::Stalled {
                source_name: self.name.clone(),
                after: timeout,
            }),
            Popped::Closed(reason) => Err(IngestError::Network {
                source_name: self.name.clone(),
                reason,
            }),
        }
    }

    fn buffer_fill(&self) -> Option<JitterFill> {
        Some(self.buffer.fill())
    }

    fn foreign_audio(&self) -> Option<ForeignAudio> {
        self.g711.map(|(law, rate)| ForeignAudio::G711(law, rate))
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.buffer.close("source closed".into());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A URL's user or password as the camera expects it (RFC 3986 percent-decoding).
fn decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The receiving side, moved to its thread.
struct Session {
    name: String,
    url: url::Url,
    transport: RtspTransport,
    buffer: Arc<JitterBuffer>,
}

type OpenedSender = std::sync::mpsc::SyncSender<Result<Opened, IngestError>>;

impl Session {
    fn run(self, opened: OpenedSender) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = opened.send(Err(self.error(format!("cannot start a runtime: {e}"))));
                return;
            }
        };
        let reason = match runtime.block_on(self.receive(&opened)) {
            Ok(()) => "session ended".to_string(),
            Err(error) => {
                // Before the opener got its answer, the error is the answer.
                let reason = error.to_string();
                let _ = opened.try_send(Err(error));
                reason
            }
        };
        self.buffer.close(reason);
    }

    fn error(&self, reason: String) -> IngestError {
        IngestError::Network {
            source_name: self.name.clone(),
            reason,
        }
    }

    async fn receive(&self, opened: &OpenedSender) -> Result<(), IngestError> {
        let mut url = self.url.clone();
        let creds = (!url.username().is_empty()).then(|| Credentials {
            username: decoded(url.username()),
            password: decoded(url.password().unwrap_or("")),
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(format!("mirror/{}", env!("CARGO_PKG_VERSION")));
        let step = |what: &'static str| move |e: retina::Error| self.error(format!("{what}: {e}"));
        let mut session = tokio::time::timeout(
            OPEN_TIMEOUT,
            retina::client::Session::describe(url, options),
        )
        .await
        .map_err(|_| self.error("DESCRIBE timed out".into()))?
        .map_err(step("DESCRIBE"))?;

        let streams = session.streams();
        let video = streams
            .iter()
            .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
            .ok_or_else(|| IngestError::Unsupported {
                source_name: self.name.clone(),
                reason: format!(
                    "no H.264 or H.265 video stream (offered: {})",
                    streams
                        .iter()
                        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        // AAC is passed through; G.711 (common on cameras) is transcoded to AAC by the
        // stream; anything else is left out.
        let aac = streams
            .iter()
            .position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
        let g711 = streams.iter().enumerate().find_map(|(i, s)| {
            let law = match (s.media(), s.encoding_name()) {
                ("audio", "pcmu") => G711::MuLaw,
                ("audio", "pcma") => G711::ALaw,
                _ => return None,
            };
            (s.channels().is_none_or(|c| c.get() == 1)).then_some((i, law, s.clock_rate_hz()))
        });
        let audio = aac.or(g711.map(|(i, ..)| i));
        let g711 = if aac.is_some() {
            None
        } else {
            g711.map(|(_, law, rate)| (law, rate))
        };
        if audio.is_none() && streams.iter().any(|s| s.media() == "audio") {
            tracing::warn!(
                source = %self.name,
                "audio is neither AAC nor G.711 and is left out"
            );
        }
        let transport = match self.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        for index in std::iter::once(video).chain(audio) {
            tokio::time::timeout(
                OPEN_TIMEOUT,
                session.setup(
                    index,
                    SetupOptions::default()
                        .transport(transport.clone())
                        .frame_format(FrameFormat::MP4),
                ),
            )
            .await
            .map_err(|_| self.error("SETUP timed out".into()))?
            .map_err(step("SETUP"))?;
        }
        let playing = tokio::time::timeout(
            OPEN_TIMEOUT,
            session
                .play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive)),
        )
        .await
        .map_err(|_| self.error("PLAY timed out".into()))?
        .map_err(step("PLAY"))?;
        let mut demuxed = playing.demuxed().map_err(step("demuxing"))?;

        let mut timing = Timing::default();
        let mut start = Startup::default();
        let mut opened = Some(opened);
        // One timer, reset when it fires, wakes the loop now and then to notice a
        // closed buffer (a timer per packet cost more than the packets). Silence itself
        // is the consumer's watchdog's business.
        let wake = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(wake);
        loop {
            if self.buffer.is_closed() {
                return Ok(());
            }
            let item = tokio::select! {
                item = demuxed.next() => item,
                () = &mut wake => {
                    wake.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(500));
                    continue;
                }
            };
            let item = match item {
                None => return Err(self.error("the server ended the session".into())),
                Some(Err(e)) => return Err(self.error(e.to_string())),
                Some(Ok(item)) => item,
            };
            let now = SystemTime::now();
            let sample = match item {
                CodecItem::VideoFrame(frame) if frame.stream_id() == video => {
                    if frame.has_new_parameters() && opened.is_none() {
                        // New SPS/PPS mid-stream: the init segment no longer describes the
                        // samples. Ending the session makes the stream reopen it, with a
                        // discontinuity and a new init segment.
                        return Err(
                            self.error("the camera changed its codec parameters; reopening".into())
                        );
                    }
                    let ts = frame.timestamp();
                    let elapsed = ts.elapsed();
                    if let Some(previous) = timing.last_video
                        && elapsed <= previous
                    {
                        return Err(IngestError::Unsupported {
                            source_name: self.name.clone(),
                            reason: "video presentation times go backwards (B-frames): \
                                     passthrough needs a stream without B-frames"
                                .into(),
                        });
                    }
                    timing.last_video = Some(elapsed);
                    let captured_at = timing.wall(video, elapsed, ts.clock_rate().get(), now);
                    Sample {
                        track_id: VIDEO_TRACK_ID,
                        decode_ticks: u64::try_from(elapsed).unwrap_or(0),
                        composition_offset_ticks: 0,
                        keyframe: frame.is_random_access_point(),
                        data: Bytes::from(frame.into_data()),
                        captured_at,
                    }
                }
                CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == audio => {
                    let ts = frame.timestamp();
                    let elapsed = ts.elapsed();
                    if elapsed < 0 {
                        continue;
                    }
                    let captured_at =
                        timing.wall(frame.stream_id(), elapsed, ts.clock_rate().get(), now);
                    Sample {
                        track_id: AUDIO_TRACK_ID,
                        decode_ticks: u64::try_from(elapsed).unwrap_or(0),
                        composition_offset_ticks: 0,
                        keyframe: true,
                        data: Bytes::copy_from_slice(frame.data()),
                        captured_at,
                    }
                }
                CodecItem::Rtcp(rtcp) => {
                    timing.sender_report(&self.name, &rtcp, now);
                    continue;
                }
                _ => continue,
            };
            if let Some(sender) = opened {
                // Until the GOP is known, samples wait in `start`.
                if let Some(ready) = start.push(sample) {
                    let streams = demuxed.streams();
                    let mut tracks = tracks_of(
                        &self.name,
                        streams[video].parameters(),
                        aac.and_then(|a| streams[a].parameters()),
                        ready.frame_ticks,
                    )?;
                    // The first GOP's bit rate is the only one known before the
                    // multivariant playlist must give BANDWIDTH.
                    for track in &mut tracks {
                        track.average_bitrate = ready.bits_per_second(track.track_id);
                    }
                    // retina gives the frame *duration* in seconds as a fraction.
                    let frame_rate = match streams[video].parameters() {
                        Some(ParametersRef::Video(v)) => v.frame_rate().map(|(n, d)| (d, n)),
                        _ => None,
                    }
                    .or(Some((90_000, ready.frame_ticks.max(1))));
                    let _ = sender.send(Ok(Opened {
                        tracks,
                        gop: ready.gop,
                        frame_rate,
                        g711,
                    }));
                    opened = None;
                    for sample in ready.samples {
                        self.queue(sample);
                    }
                }
                continue;
            }
            self.queue(sample);
        }
    }

    fn queue(&self, sample: Sample) {
        let dropped = self.buffer.push(sample);
        if dropped > 0 {
            let fill = self.buffer.fill();
            tracing::warn!(
                source = %self.name,
                dropped,
                queued = fill.queued,
                capacity = fill.capacity,
                dropped_gops = fill.dropped_gops,
                "jitter buffer full: oldest GOP dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_decoded() {
        assert_eq!(decoded("s%40cret%zz"), "s@cret%zz");
    }
}
