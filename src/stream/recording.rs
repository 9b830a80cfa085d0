//! A bounded run of the same media path a live stream runs: the source planned into
//! renditions, encoded or passed through, cut by the same segmenters, into a sink of
//! the caller's (a directory for `mirror record`), until enough media has gone in. It
//! does not retry: a recording that loses its source fails and says why.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::opening::Input;
use super::sink::MediaSink;
use super::{StreamError, StreamOptions, media_path};
use crate::cmaf::TrackInfo;
use crate::ingest::SourceSpec;
use crate::llhls::MediaPlaylist;
use crate::llhls::live::MediaNames;
use crate::pipeline::RenditionSpec;

/// What a recording made, besides the media its sink holds.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The multivariant playlist, as a live stream of the same renditions serves it.
    pub multivariant: Bytes,
    /// Each rendition, in the multivariant playlist's order.
    pub renditions: Vec<RecordedRendition>,
    /// Samples the segmenters refused (each logged).
    pub refused_samples: u64,
}

/// One rendition of a recording.
#[derive(Debug, Clone)]
pub struct RecordedRendition {
    /// Its name: its media playlist is `{id}.m3u8`.
    pub id: String,
    /// The names of its media (the same as it would be served under).
    pub names: MediaNames,
    /// Its finished playlist: every segment, EXT-X-ENDLIST, no live edge.
    pub playlist: MediaPlaylist,
    /// Its init segments by generation, with their names.
    pub inits: Vec<(String, Bytes)>,
    /// The tracks of its latest init segment.
    pub tracks: Vec<TrackInfo>,
}

/// Records `duration` of `spec` (by capture time) as `renditions` (none: the default
/// one) into `sink`; `realtime` releases a local source at its own pace, as live.
pub fn record(
    spec: &SourceSpec,
    renditions: &[RenditionSpec],
    options: &StreamOptions,
    duration: Duration,
    realtime: bool,
    sink: Box<dyn MediaSink>,
) -> Result<Recorded, StreamError> {
    let name = "record";
    let failed = |error: super::media::MediaError| StreamError::Media {
        stream: name.to_string(),
        reason: error.to_string(),
    };
    let (handle, mut media) = media_path(name, spec, renditions, options, sink, true, realtime)?;
    // Nobody serves a recording: without receivers no snapshot is rendered per part.
    drop(handle);
    media.until = Some(duration);
    let mut samples = Vec::new();
    let mut segments = 0;
    loop {
        let more = media.step(&mut samples).map_err(failed)?;
        media.feed(&mut samples);
        media.publish_events().map_err(failed)?;
        let now_listed: usize = media
            .outputs
            .iter()
            .map(|o| o.live.playlist().segments.len())
            .sum();
        if now_listed != segments {
            segments = now_listed;
            let so_far = recorded(&media, false);
            media
                .sink
                .presentation(&so_far)
                .map_err(|e| failed(e.into()))?;
        }
        if !more {
            break;
        }
    }
    // What the encoders still hold, then the open part and segment.
    match media.input.as_mut() {
        Some(Input::Raw { transcoder, .. }) => {
            transcoder
                .finish(&mut samples)
                .map_err(|e| failed(e.into()))?;
        }
        Some(Input::Encoded {
            transcoding: Some(t),
            ..
        }) => {
            t.transcoder
                .finish(&mut t.samples)
                .map_err(|e| failed(e.into()))?;
            samples.extend(t.samples.drain(..).map(|(j, s)| (t.outputs[j], s)));
        }
        _ => {}
    }
    media.feed(&mut samples);
    let now = SystemTime::now();
    for output in &mut media.outputs {
        output
            .close(name, media.sink.as_mut(), true, now)
            .map_err(|e| failed(e.into()))?;
    }
    let finished = recorded(&media, true);
    media
        .sink
        .presentation(&finished)
        .map_err(|e| failed(e.into()))?;
    Ok(finished)
}

/// The presentation as the media loop holds it: every segment so far, EXT-X-ENDLIST
/// once `ended`.
fn recorded(media: &super::media::MediaLoop, ended: bool) -> Recorded {
    let renditions = media
        .outputs
        .iter()
        .map(|output| {
            let mut playlist = output.live.playlist().clone();
            playlist.live = None;
            playlist.ended = ended;
            let names = output.live.names().clone();
            let inits = output
                .inits
                .iter()
                .enumerate()
                .map(|(generation, init)| {
                    let generation = u32::try_from(generation).unwrap_or(u32::MAX);
                    let bytes = init.chunks.first().cloned().unwrap_or_default();
                    (names.init_generation(generation), bytes)
                })
                .collect();
            RecordedRendition {
                id: output.id.clone(),
                names,
                playlist,
                inits,
                tracks: output.tracks().to_vec(),
            }
        })
        .collect();
    Recorded {
        multivariant: media.publisher.multivariant().unwrap_or_default(),
        renditions,
        refused_samples: media.refused_samples,
    }
}
