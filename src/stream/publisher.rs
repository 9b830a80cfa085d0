//! Publishing a stream's state: each rendition's immutable [`Snapshot`] on a `watch`
//! channel, replaced every time a part or segment completes, and the handles the
//! request handler reads them through ([`StreamHandle`], [`Rendition`]).
//!
//! The handle is all the handler needs, and it can be made without a source: tests
//! drive a [`StreamPublisher`] by hand and serve from its handle, with no libav and no
//! socket. This file imports nothing of ingest, the pipeline or HTTP.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

use super::status::{RenditionCounters, StreamCounters, StreamStatus};
use crate::llhls::blocking::{Position, advance_part_limit};
use crate::llhls::delivery::{DeliveryForm, PreparedPlaylist};
use crate::llhls::live::{LivePlaylist, MediaName, MediaNames};
use crate::llhls::playlist::MediaPlaylist;
use crate::store::StoredMedia;

/// An immutable view of a rendition's playlist at one moment.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every snapshot of this rendition (part of the ETag).
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
    /// The newest part listed: its duration and its media end (capture time of its
    /// first sample plus its duration), when the playlist says when it began.
    pub newest_part: Option<(Duration, SystemTime)>,
    /// The media names in use.
    pub names: MediaNames,
    /// The init segments by generation (a new one each time the source came back with
    /// other codec parameters); empty until the source first opens.
    pub inits: Arc<[StoredMedia]>,
    /// The playlist in every rendering, made once and shared by every request.
    pub playlist: PreparedPlaylist,
    /// Whatever the front end derives once per form and shares between the requests
    /// answered with this snapshot (their response headers): at thousands of waiters
    /// per part, building headers per request was most of the wake-up cost. Filled on
    /// first use, so forms nobody asks for cost nothing.
    pub per_form: [OnceLock<http::HeaderMap>; DeliveryForm::COUNT],
}

impl Snapshot {
    /// Renders the snapshot of `live`: its position and its playlist in every form.
    /// This is the work done once per part, shared by every request.
    pub fn render(sequence: u64, live: &LivePlaylist, inits: Arc<[StoredMedia]>) -> Self {
        let playlist = live.playlist();
        Self {
            sequence,
            position: live.position(),
            target_duration: Duration::from_secs(playlist.target_duration_secs()),
            part_target: playlist.part_target,
            advance_part_limit: advance_part_limit(playlist.part_target),
            updated_at: live.updated_at(),
            has_media: live.has_media(),
            newest_part: newest_part(playlist),
            names: live.names().clone(),
            inits,
            playlist: PreparedPlaylist::render(playlist),
            per_form: Default::default(),
        }
    }
}

/// The newest part of `playlist` and when its media ends: the open segment begins where
/// the last complete one ends (unless a break in the source came between them).
fn newest_part(playlist: &MediaPlaylist) -> Option<(Duration, SystemTime)> {
    let last = playlist.segments.back()?;
    let last_end = last.program_date_time + last.duration;
    match &playlist.live {
        Some(edge) if !edge.trailing_parts.is_empty() => {
            if edge.open_discontinuity {
                return None;
            }
            let open: Duration = edge.trailing_parts.iter().map(|p| p.duration).sum();
            let newest = edge.trailing_parts.last()?;
            Some((newest.duration, last_end + open))
        }
        _ => last.parts.last().map(|p| (p.duration, last_end)),
    }
}

/// The handler's view of one rendition.
#[derive(Debug, Clone)]
pub struct Rendition {
    id: String,
    playlist: String,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<RenditionCounters>,
}

impl Rendition {
    /// Its name (the media playlist is `{id}.m3u8`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its media playlist's file name.
    pub fn playlist_name(&self) -> &str {
        &self.playlist
    }

    /// A receiver of its snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// What went into it.
    pub fn counters(&self) -> &RenditionCounters {
        &self.counters
    }
}

/// The handler's view of one stream: its renditions' snapshots, its multivariant
/// playlist and its status. Cloning it clones the receivers.
#[derive(Debug, Clone)]
pub struct StreamHandle {
    name: String,
    renditions: Vec<Rendition>,
    multivariant: watch::Receiver<Option<Bytes>>,
    status: Arc<Mutex<StreamStatus>>,
    counters: Arc<StreamCounters>,
}

impl StreamHandle {
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

    /// The rendition a media name (init, part, segment) belongs to, with its latest
    /// snapshot and what the name names.
    pub fn rendition_of_media(&self, name: &str) -> Option<(&Rendition, Arc<Snapshot>, MediaName)> {
        self.renditions.iter().find_map(|r| {
            let snapshot = r.current();
            let kind = snapshot
                .names
                .parse(name)
                .or_else(|| snapshot.names.parse_cut_hint(name))?;
            Some((r, snapshot, kind))
        })
    }

    /// The first rendition (the only one of a stream without a ladder).
    pub fn primary(&self) -> &Rendition {
        &self.renditions[0]
    }

    /// The first rendition's latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.primary().current()
    }

    /// A receiver of the first rendition's snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.primary().subscribe()
    }

    /// The multivariant playlist, once the source has been opened.
    pub fn multivariant(&self) -> Option<Bytes> {
        self.multivariant.borrow().clone()
    }

    /// What the stream is doing.
    pub fn status(&self) -> StreamStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What its source delivered.
    pub fn counters(&self) -> &StreamCounters {
        &self.counters
    }
}

/// The sending side of one rendition's snapshots.
#[derive(Debug)]
pub struct RenditionPublisher {
    sender: watch::Sender<Arc<Snapshot>>,
    sequence: u64,
    counters: Arc<RenditionCounters>,
}

impl RenditionPublisher {
    /// Publishes a new snapshot of `live` with `inits`; every request waiting on this
    /// rendition wakes.
    pub fn publish(&mut self, live: &LivePlaylist, inits: Arc<[StoredMedia]>) {
        self.sequence += 1;
        if self.sender.receiver_count() == 0 {
            // Nobody reads it (a recording): rendering every form per part would be
            // wasted, and a recording's playlist only grows.
            return;
        }
        let snapshot = Snapshot::render(self.sequence, live, inits);
        self.sender.send_replace(Arc::new(snapshot));
    }

    /// What went into the rendition, for the media thread to count in.
    pub fn counters(&self) -> &RenditionCounters {
        &self.counters
    }
}

/// The sending side of a stream: what its media thread (or a test) publishes through.
#[derive(Debug)]
pub struct StreamPublisher {
    /// One per rendition, in the handle's order.
    pub renditions: Vec<RenditionPublisher>,
    multivariant: watch::Sender<Option<Bytes>>,
    status: Arc<Mutex<StreamStatus>>,
    counters: Arc<StreamCounters>,
}

impl StreamPublisher {
    /// Replaces the multivariant playlist (rewritten at every connect: a source back
    /// with another picture size changes RESOLUTION and CODECS).
    pub fn set_multivariant(&self, playlist: Bytes) {
        self.multivariant.send_replace(Some(playlist));
    }

    /// The multivariant playlist, once set.
    pub fn multivariant(&self) -> Option<Bytes> {
        self.multivariant.borrow().clone()
    }

    /// Changes the status under its lock.
    pub fn update_status(&self, change: impl FnOnce(&mut StreamStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What the source delivered, for the media thread to count in.
    pub fn counters(&self) -> &StreamCounters {
        &self.counters
    }
}

/// A stream's handle and its publisher, each rendition starting at the snapshot of its
/// `(id, playlist)`.
pub fn channel<'a>(
    name: &str,
    renditions: impl IntoIterator<Item = (&'a str, &'a LivePlaylist)>,
    status: StreamStatus,
) -> (StreamHandle, StreamPublisher) {
    let (handles, publishers) = renditions
        .into_iter()
        .map(|(id, live)| {
            let (sender, snapshot) =
                watch::channel(Arc::new(Snapshot::render(0, live, Arc::from([]))));
            let counters = Arc::<RenditionCounters>::default();
            (
                Rendition {
                    id: id.to_string(),
                    playlist: format!("{id}.m3u8"),
                    snapshot,
                    counters: counters.clone(),
                },
                RenditionPublisher {
                    sender,
                    sequence: 0,
                    counters,
                },
            )
        })
        .unzip();
    let (multivariant_sender, multivariant) = watch::channel(None);
    let status = Arc::new(Mutex::new(status));
    let counters = Arc::<StreamCounters>::default();
    (
        StreamHandle {
            name: name.to_string(),
            renditions: handles,
            multivariant,
            status: status.clone(),
            counters: counters.clone(),
        },
        StreamPublisher {
            renditions: publishers,
            multivariant: multivariant_sender,
            status,
            counters,
        },
    )
}
