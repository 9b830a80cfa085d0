//! `mirror record`: the whole media path (source → encoders → segmenter) written
//! to a directory as a finished LL-HLS presentation: `index.m3u8` (multivariant),
//! `video.m3u8` (media playlist with parts), `init.mp4`, and every part and segment.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cmaf::init::{InitError, write_init_segment};
use crate::cmaf::{Part, Segment, Segmenter, SegmenterEvent};
use crate::config::Settings;
use crate::ingest::{IngestError, SourceSpec};
use crate::llhls::{MediaPlaylist, PlaylistPart, PlaylistSegment, Variant, render_multivariant};
use crate::pipeline::{PipelineError, Transcoder};

/// File names inside the output directory.
pub mod names {
    /// The multivariant playlist.
    pub const MULTIVARIANT: &str = "index.m3u8";
    /// The media playlist.
    pub const MEDIA: &str = "video.m3u8";
    /// The init segment.
    pub const INIT: &str = "init.mp4";

    /// A segment's file name.
    pub fn segment(msn: u64) -> String {
        format!("seg{msn}.m4s")
    }

    /// A part's file name.
    pub fn part(msn: u64, index: u32) -> String {
        format!("part{msn}.{index}.m4s")
    }
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The source failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// An encoder failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// No usable video encoder.
    #[error(transparent)]
    Encoder(#[from] crate::pipeline::ProbeError),
    /// The init segment could not be written.
    #[error(transparent)]
    Init(#[from] InitError),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Directory to write into (created if missing).
    pub out_dir: PathBuf,
    /// Media duration to record.
    pub duration: Duration,
    /// Run the source at real time (as live); false produces media as fast as it encodes.
    pub realtime: bool,
    /// What to record.
    pub source: SourceSpec,
}

/// What was recorded.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// Segments written.
    pub segments: usize,
    /// Parts written.
    pub parts: usize,
    /// Total media duration of the segments.
    pub duration: Duration,
    /// The rendition's CODECS string.
    pub codecs: String,
    /// PART-TARGET the parts kept.
    pub part_target: Duration,
    /// Samples the segmenter refused (logged one by one).
    pub refused_samples: usize,
}

struct Recorder {
    dir: PathBuf,
    playlist: MediaPlaylist,
    parts: usize,
    refused_samples: usize,
    total_bytes: u64,
    peak_bps: u64,
}

impl Recorder {
    fn write(&self, name: &str, chunks: &[&[u8]]) -> Result<(), RecordError> {
        let path = self.dir.join(name);
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::File::create(&path).map_err(io)?;
        for chunk in chunks {
            file.write_all(chunk).map_err(io)?;
        }
        Ok(())
    }

    fn on_part(&mut self, part: &Part) -> Result<(), RecordError> {
        self.parts += 1;
        self.write(&names::part(part.msn, part.index), &[&part.bytes])
    }

    fn on_segment(&mut self, segment: Segment) -> Result<(), RecordError> {
        let chunks: Vec<&[u8]> = segment.parts.iter().map(|p| &p.bytes[..]).collect();
        self.write(&names::segment(segment.msn), &chunks)?;
        let bytes = segment.byte_len() as u64;
        self.total_bytes += bytes;
        let secs = segment.duration.as_secs_f64();
        if secs > 0.0 {
            self.peak_bps = self.peak_bps.max((bytes as f64 * 8.0 / secs).ceil() as u64);
        }
        self.playlist.segments.push_back(PlaylistSegment {
            discontinuity: false,
            map: 0,
            msn: segment.msn,
            uri: names::segment(segment.msn),
            duration: segment.duration,
            program_date_time: segment.captured_at,
            parts: segment
                .parts
                .iter()
                .map(|p| PlaylistPart {
                    uri: names::part(p.msn, p.index),
                    duration: p.duration,
                    independent: p.independent,
                })
                .collect(),
        });
        // Rewritten after each segment, so the directory is a valid presentation while
        // the recording runs.
        self.write(names::MEDIA, &[self.playlist.render().as_bytes()])
    }

    fn drain(&mut self, segmenter: &mut Segmenter) -> Result<(), RecordError> {
        while let Some(event) = segmenter.poll_event() {
            match event {
                SegmenterEvent::Part(part) => self.on_part(&part)?,
                SegmenterEvent::Segment(segment) => self.on_segment(segment)?,
            }
        }
        Ok(())
    }
}

/// Records `options.source` per `settings` into `options.out_dir`.
pub fn record(settings: &Settings, options: &RecordOptions) -> Result<RecordSummary, RecordError> {
    let dir = options.out_dir.clone();
    fs::create_dir_all(&dir).map_err(|source| RecordError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut source = options.source.open(&settings.source, options.realtime)?;
    let format = source.format();
    let plans = crate::pipeline::plan_renditions(&[], false, &settings.encoder)?;
    let Some(crate::pipeline::RenditionPlan::Transcode {
        encoder,
        bitrate_kbps,
        ..
    }) = plans.first().map(|p| p.plan.clone())
    else {
        unreachable!("a decoded source's default rendition is encoded");
    };
    let profile = crate::pipeline::VideoProfile {
        encoder,
        width: format.width,
        height: format.height,
        bitrate_kbps,
    };
    let fps = format.frame_rate;
    let keyframes = crate::pipeline::Keyframes::Every {
        frames: settings.cmaf.keyframe_interval_frames(
            u32::try_from(fps.numerator()).unwrap_or(30),
            u32::try_from(fps.denominator()).unwrap_or(1),
        ),
    };
    let mut transcoder = Transcoder::open(&settings.encoder, format, &[profile], keyframes, true)?;
    let tracks = transcoder.tracks(0).to_vec();
    let mut segmenter = Segmenter::new(settings.cmaf.segmenter_config(tracks.clone()), 0);
    let mut recorder = Recorder {
        dir: dir.clone(),
        playlist: MediaPlaylist {
            discontinuity_sequence: 0,
            segment_target: settings.cmaf.segment_target(),
            part_target: segmenter.part_target(),
            map_uri: names::INIT.into(),
            later_maps: Vec::new(),
            segments: Default::default(),
            ended: false,
            live: None,
        },
        parts: 0,
        refused_samples: 0,
        total_bytes: 0,
        peak_bps: 0,
    };
    recorder.write(names::INIT, &[&write_init_segment(&tracks)?])?;

    let mut samples = Vec::new();
    let mut first_capture = None;
    loop {
        let frame = source.next_frame()?;
        let start = *first_capture.get_or_insert(frame.captured_at);
        if frame.captured_at.duration_since(start).unwrap_or_default() >= options.duration {
            break;
        }
        transcoder.push(frame, &mut samples)?;
        feed(&mut segmenter, &mut samples, &mut recorder.refused_samples);
        recorder.drain(&mut segmenter)?;
    }
    transcoder.finish(&mut samples)?;
    feed(&mut segmenter, &mut samples, &mut recorder.refused_samples);
    if let Err(error) = segmenter.finish(SystemTime::now()) {
        tracing::warn!(%error, "the last part could not be written");
    }
    recorder.drain(&mut segmenter)?;

    recorder.playlist.ended = true;
    recorder.write(names::MEDIA, &[recorder.playlist.render().as_bytes()])?;
    let duration: Duration = recorder.playlist.segments.iter().map(|s| s.duration).sum();
    let codecs = crate::cmaf::codecs(&tracks);
    let average = if duration.is_zero() {
        None
    } else {
        Some((recorder.total_bytes as f64 * 8.0 / duration.as_secs_f64()).ceil() as u64)
    };
    let resolution = crate::cmaf::resolution(&tracks);
    let multivariant = render_multivariant(&[Variant {
        uri: names::MEDIA.into(),
        bandwidth: recorder.peak_bps.max(average.unwrap_or(0)),
        average_bandwidth: average,
        codecs: codecs.clone(),
        resolution,
        frame_rate: Some(f64::from(fps.numerator()) / f64::from(fps.denominator().max(1))),
    }]);
    recorder.write(names::MULTIVARIANT, &[multivariant.as_bytes()])?;
    Ok(RecordSummary {
        segments: recorder.playlist.segments.len(),
        parts: recorder.parts,
        duration,
        codecs,
        part_target: segmenter.part_target(),
        refused_samples: recorder.refused_samples,
    })
}

/// Hands encoded samples to the segmenter; a refused sample is logged and counted, and
/// the stream goes on.
fn feed(
    segmenter: &mut Segmenter,
    samples: &mut Vec<(usize, crate::cmaf::Sample)>,
    refused: &mut usize,
) {
    for (_, sample) in samples.drain(..) {
        if let Err(error) = segmenter.push(sample, SystemTime::now()) {
            *refused += 1;
            tracing::warn!(%error, "sample refused");
        }
    }
}
