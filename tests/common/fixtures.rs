//! Fixtures shared by the tests and the benchmarks (which include this file by path):
//! a 720p30 H.264 + 48 kHz AAC rendition with real parameter sets, and the settings of
//! a small server on loopback.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use std::time::Duration;

use mirror::cmaf::{AacConfig, AvcConfig, CodecConfig, SegmenterConfig, Timescale, TrackInfo};
use mirror::config::{Settings, StreamSettings};
use mirror::pipeline::{RenditionCodec, RenditionSpec};

/// SPS of a libx264 High profile level 3.1 stream (1280×720).
pub const SPS: [u8; 28] = [
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x80, 0x50, 0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02, 0x80,
    0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e, 0x07, 0x8c, 0x18, 0xcd,
];
/// Its PPS.
pub const PPS: [u8; 5] = [0x68, 0xe9, 0x7b, 0x2c, 0x8b];
/// AudioSpecificConfig of AAC-LC, 48 kHz, stereo.
pub const ASC: [u8; 2] = [0x11, 0x90];
/// Track IDs of the fixture rendition.
pub const VIDEO: u32 = 1;
pub const AUDIO: u32 = 2;
/// One frame at 30 fps on the 90 kHz clock.
pub const FRAME_90K: u64 = 3000;
/// One AAC frame at 48 kHz.
pub const AAC_FRAME: u64 = 1024;

/// Video (track 1, 90 kHz) and audio (track 2, 48 kHz).
pub fn tracks() -> Vec<TrackInfo> {
    vec![
        TrackInfo {
            track_id: VIDEO,
            timescale: Timescale::VIDEO_90K,
            codec: CodecConfig::Avc(
                AvcConfig::new(SPS.to_vec(), PPS.to_vec(), 1280, 720).expect("valid"),
            ),
            nominal_sample_ticks: FRAME_90K as u32,
            average_bitrate: 2_500_000,
        },
        TrackInfo {
            track_id: AUDIO,
            timescale: Timescale(48_000),
            codec: CodecConfig::Aac(AacConfig::from_audio_specific_config(&ASC).expect("valid")),
            nominal_sample_ticks: AAC_FRAME as u32,
            average_bitrate: 128_000,
        },
    ]
}

/// The segmenter of the fixture rendition: 200 ms parts, 1 s segments, samples up to
/// 1 MiB; `on_grid` when keyframes come exactly on the segment target.
pub fn segmenter_config(on_grid: bool) -> SegmenterConfig {
    SegmenterConfig {
        tracks: tracks(),
        part_target: Duration::from_millis(200),
        segment_target: Duration::from_secs(1),
        max_sample_bytes: 1 << 20,
        keyframes_on_segment_grid: on_grid,
    }
}

/// A light server on 127.0.0.1 (random port) with its certificate under `dir`: a
/// `width`×`height` test pattern, so that several run at once on two cores.
pub fn loopback_settings(dir: &Path, width: u32, height: u32, video_kbps: u32) -> Settings {
    let mut settings = Settings::default();
    settings.source.width = width;
    settings.source.height = height;
    settings.encoder.video_bitrate_kbps = video_kbps;
    settings.server.listen = "127.0.0.1:0".parse().expect("addr");
    settings.server.certs_dir = dir.join("certs");
    settings
}

/// Waits, up to 20 s, until `stream` of `server` has `msn` segments behind it (the
/// segment in progress is `msn` or later), as a viewer joining a running stream finds it.
pub async fn until_segment(server: &mirror::server::RunningServer, stream: &str, msn: u64) {
    let mut updates = server
        .state
        .streams
        .get(stream)
        .expect("stream")
        .subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while updates.borrow_and_update().position.open_msn < msn {
        tokio::time::timeout_at(deadline, updates.changed())
            .await
            .expect("the stream starts")
            .expect("stream runs");
    }
}

/// An H.264 rendition of a ladder at `width`×`height` and `kbps`.
pub fn rendition(name: &str, width: u32, height: u32, kbps: u32) -> RenditionSpec {
    RenditionSpec {
        name: name.into(),
        codec: RenditionCodec::H264,
        width: Some(width),
        height: Some(height),
        video_bitrate_kbps: Some(kbps),
        encoder: None,
    }
}

/// A rendition that passes the source's pictures through.
pub fn copy_rendition(name: &str) -> RenditionSpec {
    RenditionSpec {
        name: name.into(),
        codec: RenditionCodec::Copy,
        width: None,
        height: None,
        video_bitrate_kbps: None,
        encoder: None,
    }
}

/// A public `[[streams]]` entry `name` playing `source` as `renditions`.
pub fn public_stream(name: &str, source: &str, renditions: Vec<RenditionSpec>) -> StreamSettings {
    StreamSettings {
        name: name.into(),
        source: source.into(),
        renditions,
        policy: None,
        publish_key: None,
        publish_key_sha256: None,
        srt_passphrase: None,
    }
}
