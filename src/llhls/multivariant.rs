//! The multivariant playlist (RFC 8216bis 4.4.6), written through m3u8-rs.

use m3u8_rs::{MasterPlaylist, Resolution, VariantStream};

/// One rendition as the multivariant playlist lists it (EXT-X-STREAM-INF, 4.4.6.2).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// URI of its media playlist.
    pub uri: String,
    /// Peak segment bit rate, bits per second (BANDWIDTH).
    pub bandwidth: u64,
    /// Average segment bit rate (AVERAGE-BANDWIDTH).
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings, comma-separated (CODECS).
    pub codecs: String,
    /// Picture size (RESOLUTION).
    pub resolution: Option<(u32, u32)>,
    /// Frames per second (FRAME-RATE).
    pub frame_rate: Option<f64>,
}

/// Renders the multivariant playlist for `variants`.
pub fn render_multivariant(variants: &[Variant]) -> String {
    let playlist = MasterPlaylist {
        version: Some(6),
        // 4.4.2.1: every segment of every variant starts with an IDR.
        independent_segments: true,
        variants: variants
            .iter()
            .map(|v| VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: v.average_bandwidth,
                codecs: Some(v.codecs.clone()),
                resolution: v.resolution.map(|(w, h)| Resolution {
                    width: u64::from(w),
                    height: u64::from(h),
                }),
                // 4.4.6.2: FRAME-RATE rounded to three decimal places.
                frame_rate: v.frame_rate.map(|f| (f * 1000.0).round() / 1000.0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = playlist.write_to(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_attribute_a_player_needs() {
        let text = render_multivariant(&[Variant {
            uri: "video.m3u8".into(),
            bandwidth: 2_800_000,
            average_bandwidth: Some(2_600_000),
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30.0),
        }]);
        let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).expect("parses back");
        let v = &parsed.variants[0];
        assert_eq!(v.uri, "video.m3u8");
        assert_eq!(v.bandwidth, 2_800_000);
        assert_eq!(v.average_bandwidth, Some(2_600_000));
        assert_eq!(v.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(
            v.resolution,
            Some(Resolution {
                width: 1280,
                height: 720
            })
        );
        assert_eq!(v.frame_rate, Some(30.0));
        assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    }
}
