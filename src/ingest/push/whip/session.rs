//! One WHIP session: its WebRTC state machine (str0m's [`Rtc`]), the publication it
//! feeds, and when to ask the publisher for a keyframe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::ingest::push::Publication;

/// How long ICE and DTLS may take before a negotiated session that never connected is
/// dropped (its claim on the stream with it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a keyframe asked for may take before it is asked for again (the request,
/// RTCP over UDP, may be lost).
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

/// See the module docs.
pub(super) struct Session {
    id: String,
    rtc: Rtc,
    publication: Publication,
    created: Instant,
    connected: bool,
    /// The video m-line, once str0m has added it.
    video: Option<Mid>,
    keyframes: Keyframes,
    timeline: Timeline,
    /// The next time [`Rtc`] wants a timeout.
    rtc_deadline: Instant,
    /// Why it is over, once it is.
    over: Option<String>,
    /// Whether media of a codec Mirror leaves out has been logged.
    warned_codec: bool,
    /// Fed since it was last driven (or new): it has output to poll.
    fed: bool,
}

/// Where each track's RTP clock sits on the publication's 90 kHz timeline. WebRTC
/// starts every track's RTP clock at random, so each is anchored at the arrival of its
/// first packet, counted from the first packet of any track: sound and picture line
/// up within the network jitter of those first packets.
#[derive(Default)]
struct Timeline {
    origin: Option<Instant>,
    video: Option<Anchor>,
    audio: Option<Anchor>,
}

/// A track's first RTP time (90 kHz) and where it sits on the timeline.
#[derive(Clone, Copy)]
struct Anchor {
    rtp: u64,
    at: u64,
}

impl Timeline {
    /// Where `rtp` (90 kHz, extended) of the track anchored by `anchor` sits, that
    /// track's first packet having arrived at `arrived`.
    fn place(
        origin: &mut Option<Instant>,
        anchor: &mut Option<Anchor>,
        rtp: u64,
        arrived: Instant,
    ) -> u64 {
        let origin = *origin.get_or_insert(arrived);
        let anchor = *anchor.get_or_insert_with(|| Anchor {
            rtp,
            at: u64::try_from(arrived.saturating_duration_since(origin).as_micros() * 9 / 100)
                .unwrap_or(0),
        });
        anchor.at + rtp.saturating_sub(anchor.rtp)
    }

    fn video(&mut self, rtp: u64, arrived: Instant) -> u64 {
        Self::place(&mut self.origin, &mut self.video, rtp, arrived)
    }

    fn audio(&mut self, rtp: u64, arrived: Instant) -> u64 {
        Self::place(&mut self.origin, &mut self.audio, rtp, arrived)
    }
}

/// When to ask for a keyframe: once `every` has passed since the last (the segment
/// target), again if one asked for does not come.
struct Keyframes {
    every: Duration,
    last: Option<Instant>,
    asked: Option<Instant>,
    /// Frames were lost: what follows is undecodable until the next keyframe.
    broken: bool,
}

impl Keyframes {
    fn due(&self) -> Instant {
        let by_interval = self
            .last
            .map_or_else(Instant::now, |last| last + self.every);
        match self.asked {
            Some(asked) => by_interval.max(asked + KEYFRAME_RETRY),
            None => by_interval,
        }
    }
}

impl Session {
    /// A session of `rtc` (negotiated) feeding `publication`, asking for a keyframe
    /// every `keyframe_every`; `None` when the system has no randomness for its id.
    pub(super) fn new(
        rtc: Rtc,
        publication: Publication,
        keyframe_every: Duration,
    ) -> Option<Self> {
        let now = Instant::now();
        Some(Self {
            id: session_id()?,
            rtc,
            publication,
            created: now,
            connected: false,
            video: None,
            keyframes: Keyframes {
                every: keyframe_every,
                last: None,
                asked: None,
                broken: false,
            },
            timeline: Timeline::default(),
            rtc_deadline: now,
            over: None,
            warned_codec: false,
            fed: true,
        })
    }

    /// Its id: random, unguessable (its URL ends it).
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The stream it publishes.
    pub(super) fn stream(&self) -> &str {
        self.publication.stream()
    }

    /// Whether `input` (a datagram) is this session's.
    pub(super) fn accepts(&self, input: &Input) -> bool {
        self.over.is_none() && self.rtc.accepts(input)
    }

    /// When it must be driven next.
    pub(super) fn deadline(&self) -> Instant {
        if self.over.is_some() {
            return self.created;
        }
        if !self.connected {
            return self.rtc_deadline.min(self.created + CONNECT_TIMEOUT);
        }
        if self.video.is_some() {
            return self.rtc_deadline.min(self.keyframes.due());
        }
        self.rtc_deadline
    }

    /// Why it is over, once it is.
    pub(super) fn over(&self) -> Option<&str> {
        self.over.as_deref()
    }

    /// Ends it for `reason`: the publication ends (the stream waits for the next
    /// publisher), the peer is told nothing more (a DELETE's answer tells it).
    pub(super) fn end(&mut self, reason: &str) {
        if self.over.is_none() {
            self.over = Some(reason.to_string());
            self.rtc.disconnect();
        }
    }

    /// Feeds `input` to the WebRTC state machine.
    pub(super) fn handle(&mut self, input: Input) {
        if self.over.is_some() {
            return;
        }
        self.fed = true;
        if let Err(error) = self.rtc.handle_input(input) {
            self.end(&format!("WebRTC: {error}"));
        }
    }

    /// Whether it must be driven at `now`: fed since it last was, or its deadline has
    /// come. (Driving every session for every datagram would poll them all per packet.)
    pub(super) fn wants_driving(&self, now: Instant) -> bool {
        self.fed || self.deadline() <= now
    }

    /// Runs it until it waits: what it sends goes to `send`, what it received to the
    /// publication; asks for a keyframe when one is due.
    pub(super) fn drive(&mut self, now: Instant, mut send: impl FnMut(SocketAddr, &[u8])) {
        self.fed = false;
        if self.over.is_some() {
            return;
        }
        if !self.connected && now >= self.created + CONNECT_TIMEOUT {
            self.end("ICE and DTLS did not connect in time");
            return;
        }
        if !self.publication.is_current() {
            self.end("the stream no longer takes this publisher");
            return;
        }
        if self.connected && now >= self.keyframes.due() {
            self.ask_keyframe(now);
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.rtc_deadline = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => send(transmit.destination, &transmit.contents),
                Ok(Output::Event(event)) => self.event(event, now),
                Err(error) => {
                    self.end(&format!("WebRTC: {error}"));
                    return;
                }
            }
            if self.over.is_some() {
                return;
            }
        }
    }

    fn event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connected = true;
                tracing::info!(
                    stream = self.stream(),
                    session = self.id,
                    "WHIP publisher connected"
                );
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end("ICE disconnected");
            }
            Event::MediaAdded(added) if added.kind == MediaKind::Video => {
                self.video = Some(added.mid);
            }
            Event::MediaData(data) => self.media(data, now),
            _ => {}
        }
    }

    fn media(&mut self, data: MediaData, now: Instant) {
        match data.params.spec().codec {
            Codec::H264 => self.video(data, now),
            Codec::Opus => {
                let rtp = data.time.rebase(Frequency::NINETY_KHZ).numer();
                let dts = self.timeline.audio(rtp, data.network_time);
                if let Err(error) = self
                    .publication
                    .opus(dts, Bytes::copy_from_slice(&data.data))
                {
                    self.end(&error.to_string());
                }
            }
            codec => {
                if !self.warned_codec {
                    self.warned_codec = true;
                    tracing::warn!(stream = self.stream(), ?codec, "WHIP media left out");
                }
            }
        }
    }

    fn video(&mut self, data: MediaData, now: Instant) {
        let keyframe = data.is_keyframe();
        if !data.contiguous && !keyframe {
            // Packets were lost: the pictures that follow refer to what is missing.
            self.keyframes.broken = true;
        }
        if keyframe {
            tracing::debug!(
                session = self.id,
                since_last_ms = self
                    .keyframes
                    .last
                    .map(|l| now.duration_since(l).as_millis()),
                since_asked_ms = self
                    .keyframes
                    .asked
                    .map(|a| now.duration_since(a).as_millis()),
                "WHIP keyframe"
            );
            self.keyframes.broken = false;
            self.keyframes.last = Some(now);
            self.keyframes.asked = None;
        } else if self.keyframes.broken {
            if self.keyframes.asked.is_none() {
                self.ask_keyframe(now);
            }
            return;
        }
        let rtp = data.time.rebase(Frequency::NINETY_KHZ).numer();
        let dts = self.timeline.video(rtp, data.network_time);
        // WebRTC's H.264 has no B-frames: presentation is decode order.
        if let Err(error) = self.publication.annexb_video(dts, 0, &data.data) {
            self.end(&error.to_string());
        }
    }

    fn ask_keyframe(&mut self, now: Instant) {
        // Asked or not, not again before the retry interval: the task sleeps until then.
        self.keyframes.asked = Some(now);
        let Some(mid) = self.video else { return };
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        // Refused when the publisher's video has not started: asked again after the
        // retry interval.
        let _ = writer.request_keyframe(None, kind);
        // str0m writes the request into RTCP when it handles a timeout: now, not at
        // its next timer.
        self.handle(Input::Timeout(now));
    }
}

/// 128 random bits, hex.
fn session_id() -> Option<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_are_placed_by_the_arrival_of_their_first_packet() {
        let start = Instant::now();
        let mut timeline = Timeline::default();
        // Video's random RTP origin, first; sound's own, 20 ms later.
        assert_eq!(timeline.video(4_000_000_000, start), 0);
        let sound = timeline.audio(123_456, start + Duration::from_millis(20));
        assert_eq!(sound, 1_800, "20 ms on the 90 kHz timeline");
        // Each goes on by its own clock, whenever its packets arrive.
        assert_eq!(timeline.video(4_000_003_000, start), 3_000);
        assert_eq!(timeline.audio(123_456 + 1_800, start), 3_600);
        // A packet from before its track's first is placed at the first.
        assert_eq!(timeline.audio(100, start), 1_800);
    }

    #[test]
    fn a_connected_session_sleeps_until_it_has_something_to_do() {
        use std::sync::Arc;

        use crate::ingest::push::{PublisherClock, PublisherInfo, PushPoints, SecondPublisher};
        let points = Arc::new(PushPoints::new(
            SecondPublisher::Refuse,
            PublisherClock::Arrival,
        ));
        points.set(
            "live",
            Some(crate::ingest::push::hash_key("a-key-for-the-test")),
            None,
        );
        let publisher = PublisherInfo::new("whip", "127.0.0.1:1".parse().expect("address"));
        let claim = points
            .claim("a-key-for-the-test", publisher.clone())
            .expect("claims");
        let publication = Publication::new(claim, publisher, 64, 1 << 32);
        let now = Instant::now();
        let rtc = str0m::RtcConfig::new().build(now);
        let mut session = Session::new(rtc, publication, Duration::from_secs(1)).expect("id");
        session.rtc_deadline = now + Duration::from_secs(3);
        assert_eq!(session.deadline(), now + Duration::from_secs(3));
        // Connected long after its connect timeout, with nothing due: it must not be
        // woken at once (a task that wakes at a past deadline spins a core).
        session.created = now.checked_sub(Duration::from_secs(60)).expect("past");
        session.connected = true;
        assert!(session.deadline() > now, "{:?}", session.deadline());
        // Not connected and past its timeout: due now.
        session.connected = false;
        assert!(session.deadline() <= now);
    }

    #[test]
    fn keyframes_are_asked_for_each_interval_and_again_if_none_comes() {
        let start = Instant::now();
        let every = Duration::from_secs(1);
        let mut keyframes = Keyframes {
            every,
            last: Some(start),
            asked: None,
            broken: false,
        };
        assert_eq!(keyframes.due(), start + every);
        // Asked at the interval: not again before the retry time.
        keyframes.asked = Some(start + every);
        assert_eq!(keyframes.due(), start + every + KEYFRAME_RETRY);
        // A keyframe came: the next is due an interval after it.
        keyframes.last = Some(start + every + Duration::from_millis(50));
        keyframes.asked = None;
        assert_eq!(
            keyframes.due(),
            start + every * 2 + Duration::from_millis(50)
        );
    }
}
