//! WHIP publishers (RFC 9725, WebRTC-HTTP Ingestion): a browser or an encoder POSTs
//! its SDP offer to `/whip/STREAM` with the stream's publish key as bearer token and
//! gets the answer; its media then arrives over WebRTC (ICE-lite, DTLS, SRTP) on one UDP
//! port that every session shares. H.264 goes through the same [`Publication`] as an
//! RTMP publisher's; Opus is carried to the stream as it is, and the pipeline makes it
//! AAC. WebRTC encoders make a keyframe only when asked, so each session asks (PLI)
//! once a segment target has passed since the last one.
//!
//! This module owns the sessions ([`session`]) and the task that drives them
//! (str0m is sans-IO: it reads the socket, feeds every session and sends what they
//! say); [`Whip`] is what the HTTP side calls. It knows nothing of HTTP or playlists.

mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{Publication, PublisherInfo, PushPoints, PushRefusal};
use session::Session;

/// The most WebRTC publishers at once, all streams together.
pub const MAX_SESSIONS: usize = 64;
/// Largest SDP offer taken (Chromium's, with audio and video, is about 5 KiB).
pub const MAX_OFFER_BYTES: usize = 64 << 10;

/// Why a WHIP request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipRefusal {
    /// No `Authorization: Bearer KEY`.
    #[error("a publish key is needed (Authorization: Bearer KEY)")]
    MissingKey,
    /// The key is not this stream's. (It is never repeated: it is a secret.)
    #[error("this key does not publish this stream")]
    UnknownKey,
    /// Someone publishes the stream already (`[push] second_publisher = "refuse"`).
    #[error("stream {0} is being published already")]
    Busy(String),
    /// The body is not an SDP offer Mirror can answer.
    #[error("unusable offer: {0}")]
    BadOffer(String),
    /// [`MAX_SESSIONS`] publishers are connected.
    #[error("the server takes no more WebRTC publishers now")]
    Full,
    /// No such session (it ended, or never was).
    #[error("no such WHIP session")]
    UnknownSession,
    /// The WHIP task is gone (the server is stopping).
    #[error("WHIP is not running")]
    Stopped,
}

impl From<PushRefusal> for WhipRefusal {
    fn from(refusal: PushRefusal) -> Self {
        match refusal {
            PushRefusal::UnknownKey => WhipRefusal::UnknownKey,
            PushRefusal::Busy(stream) => WhipRefusal::Busy(stream),
        }
    }
}

/// A session made: its id (for its URL) and the SDP answer.
#[derive(Debug)]
pub struct Created {
    /// The session's id, the last segment of its URL.
    pub session: String,
    /// The SDP answer, for the response's body.
    pub answer: String,
}

/// What the HTTP side asks of the task.
enum Command {
    /// Take a negotiated session (refused when full).
    Add(Box<Session>, oneshot::Sender<Result<(), WhipRefusal>>),
    /// End session `id` of `stream`; answers whether it was there.
    End {
        stream: String,
        id: String,
        reply: oneshot::Sender<bool>,
    },
}

/// How the sessions are made.
#[derive(Debug, Clone)]
pub struct WhipOptions {
    /// The candidate publishers are given: where they reach the UDP port.
    pub candidate: SocketAddr,
    /// How often a keyframe is asked for: the segment target.
    pub keyframe_every: Duration,
    /// Samples each publication's jitter buffer holds.
    pub buffer_samples: usize,
}

/// The HTTP side's handle on WHIP (cheap to clone).
#[derive(Clone)]
pub struct Whip {
    commands: mpsc::Sender<Command>,
    points: Arc<PushPoints>,
    options: Arc<WhipOptions>,
}

impl std::fmt::Debug for Whip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whip")
            .field("candidate", &self.options.candidate)
            .finish_non_exhaustive()
    }
}

impl Whip {
    /// A publisher at `remote` offers `offer` for `stream` with `key`: on success the
    /// session runs and its answer is returned.
    pub async fn publish(
        &self,
        stream: &str,
        key: &str,
        offer: &str,
        remote: SocketAddr,
    ) -> Result<Created, WhipRefusal> {
        // The key first (nothing is negotiated for a stranger), then the answer, then
        // the claim: an offer that cannot be answered never holds the stream, nor
        // (with `second_publisher = "replace"`) ends its publisher.
        if !self.points.admits(stream, key) {
            return Err(WhipRefusal::UnknownKey);
        }
        let (rtc, answer) = answer(parse_offer(offer)?, self.options.candidate)?;
        let publisher = PublisherInfo::new("whip", remote);
        let claim = self
            .points
            .claim_named(stream, key, publisher.clone())
            .map_err(WhipRefusal::from)?;
        let publication = Publication::new(claim, publisher, self.options.buffer_samples, 1 << 32)
            .with_arrival_clock()
            .with_keyframes_every(self.options.keyframe_every);
        let session = Session::new(rtc, publication, self.options.keyframe_every)
            .ok_or(WhipRefusal::Stopped)?;
        let created = Created {
            session: session.id().to_string(),
            answer,
        };
        let (reply, replied) = oneshot::channel();
        self.commands
            .send(Command::Add(Box::new(session), reply))
            .await
            .map_err(|_| WhipRefusal::Stopped)?;
        replied.await.map_err(|_| WhipRefusal::Stopped)??;
        Ok(created)
    }

    /// Ends session `id` of `stream` (the publisher's DELETE, with the stream's `key`:
    /// the session's URL alone is no credential, so that logs may show it).
    pub async fn end(&self, stream: &str, id: &str, key: &str) -> Result<(), WhipRefusal> {
        if !self.points.admits(stream, key) {
            return Err(WhipRefusal::UnknownKey);
        }
        let (reply, replied) = oneshot::channel();
        self.commands
            .send(Command::End {
                stream: stream.to_string(),
                id: id.to_string(),
                reply,
            })
            .await
            .map_err(|_| WhipRefusal::Stopped)?;
        if replied.await.map_err(|_| WhipRefusal::Stopped)? {
            Ok(())
        } else {
            Err(WhipRefusal::UnknownSession)
        }
    }
}

/// `offer` as SDP.
pub fn parse_offer(offer: &str) -> Result<SdpOffer, WhipRefusal> {
    SdpOffer::from_sdp_string(offer).map_err(|e| WhipRefusal::BadOffer(e.to_string()))
}

/// A WebRTC session (ICE-lite, its one candidate `candidate`) that accepts `offer`,
/// and its SDP answer.
pub fn answer(offer: SdpOffer, candidate: SocketAddr) -> Result<(Rtc, String), WhipRefusal> {
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        // What HLS can carry from a browser: H.264, and Opus (made AAC by the
        // pipeline). Nothing is sent back, so no bandwidth estimation of our own.
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    let candidate = Candidate::host(candidate, "udp")
        .map_err(|e| WhipRefusal::BadOffer(format!("candidate: {e}")))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| WhipRefusal::BadOffer(e.to_string()))?;
    Ok((rtc, answer.to_sdp_string()))
}

/// The UDP socket WHIP's media arrives on, bound to `listen`; the candidate address is
/// `host` (else the bound address, which must then be specific).
pub async fn bind(
    listen: SocketAddr,
    host: Option<IpAddr>,
) -> std::io::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind(listen).await?;
    let local = socket.local_addr()?;
    let candidate = SocketAddr::new(host.unwrap_or(local.ip()), local.port());
    Ok((socket, candidate))
}

/// Starts WHIP on `socket` (bound by [`bind`]) for `points`: the handle, and the task
/// that drives every session, to be spawned.
pub fn start(
    socket: UdpSocket,
    points: Arc<PushPoints>,
    options: WhipOptions,
) -> (Whip, impl std::future::Future<Output = ()> + Send) {
    let (commands, received) = mpsc::channel(16);
    points.set_listening(super::PushProtocol::Whip);
    let candidate = options.candidate;
    let whip = Whip {
        commands,
        points,
        options: Arc::new(options),
    };
    (whip, drive(socket, candidate, received))
}

/// An IPv4 address as it is, an IPv4-mapped IPv6 one (from a dual-stack socket) as
/// the IPv4 address it maps.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// `destination` as `socket` (of `local`'s family) can send to.
fn sendable(destination: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (destination.ip(), local.ip()) {
        (IpAddr::V4(v4), IpAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), destination.port())
        }
        _ => destination,
    }
}

/// The task: reads the socket, feeds the session it belongs to, wakes each session
/// when its timer is due, and takes commands, until the handle is dropped.
async fn drive(socket: UdpSocket, candidate: SocketAddr, mut commands: mpsc::Receiver<Command>) {
    let local = socket.local_addr().unwrap_or(candidate);
    let mut sessions: Vec<Session> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        for session in sessions.iter_mut().filter(|s| s.wants_driving(now)) {
            if session.deadline() <= now {
                session.handle(Input::Timeout(now));
            }
            session.drive(now, |destination, contents| {
                // UDP: a datagram the kernel has no room for is lost, as on the
                // network; the peers retransmit what matters.
                let _ = socket.try_send_to(contents, sendable(destination, local));
            });
        }
        sessions.retain(|session| match session.over() {
            Some(reason) => {
                tracing::info!(
                    stream = session.stream(),
                    session = session.id(),
                    reason,
                    "WHIP publisher left"
                );
                false
            }
            None => true,
        });
        let wake = sessions
            .iter()
            .map(Session::deadline)
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add(session, reply)) => {
                    if sessions.len() >= MAX_SESSIONS {
                        let _ = reply.send(Err(WhipRefusal::Full));
                    } else {
                        tracing::info!(
                            stream = session.stream(),
                            session = session.id(),
                            "WHIP publisher negotiated"
                        );
                        sessions.push(*session);
                        let _ = reply.send(Ok(()));
                    }
                }
                Some(Command::End { stream, id, reply }) => {
                    let found = sessions
                        .iter_mut()
                        .find(|s| s.id() == id && s.stream() == stream);
                    let _ = reply.send(found.is_some());
                    if let Some(session) = found {
                        session.end("the publisher ended it (DELETE)");
                    }
                }
            },
            received = socket.recv_from(&mut buf) => {
                let (len, source) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        // ICMP unreachable from a peer that left, say: the socket goes on.
                        tracing::debug!(%error, "WHIP socket");
                        continue;
                    }
                };
                let Ok(receive) = Receive::new(Protocol::Udp, canonical(source), candidate, &buf[..len]) else {
                    continue;
                };
                let input = Input::Receive(Instant::now(), receive);
                if let Some(session) = sessions.iter_mut().find(|s| s.accepts(&input)) {
                    session.handle(input);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
