//! How a media playlist is delivered: the forms a request can ask for (blocking or not,
//! whole or a delta update, plain or gzip), their bodies rendered once per playlist
//! update and shared by every request, and the caching rules of RFC 8216bis Appendix B
//! for each kind of response.
//!
//! Sans-IO: it renders and compresses bytes and names cache lifetimes; it never sees a
//! socket, a header map or a clock.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;

use super::{MediaPlaylist, Skip};

/// Whether the request held for a future playlist (`_HLS_msn`, RFC 8216bis 6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reload {
    /// A plain request: the playlist as it is now.
    Plain,
    /// A blocking playlist reload.
    Blocking,
}

/// The content coding of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// As rendered.
    Identity,
    /// gzip (RFC 1952), for clients that accept it.
    Gzip,
}

/// One way a playlist can be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryForm {
    /// Blocking or not.
    pub reload: Reload,
    /// Whole, or a delta update.
    pub skip: Skip,
    /// Plain or gzip.
    pub encoding: Encoding,
}

impl DeliveryForm {
    /// How many forms there are.
    pub const COUNT: usize = 12;

    /// A dense index in `0..COUNT`, for tables of per-form values.
    pub fn index(self) -> usize {
        let reload = match self.reload {
            Reload::Plain => 0,
            Reload::Blocking => 1,
        };
        let skip = match self.skip {
            Skip::No => 0,
            Skip::Yes => 1,
            Skip::V2 => 2,
        };
        let encoding = match self.encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
        };
        (reload * 3 + skip) * 2 + encoding
    }

    /// What an entity tag adds for this form, so that every body has its own tag (a
    /// blocking and a plain response with the same body share one).
    pub fn etag_suffix(self) -> &'static str {
        match (self.skip, self.encoding) {
            (Skip::No, Encoding::Identity) => "",
            (Skip::No, Encoding::Gzip) => "-gz",
            (Skip::Yes, Encoding::Identity) => "-s",
            (Skip::Yes, Encoding::Gzip) => "-s-gz",
            (Skip::V2, Encoding::Identity) => "-s2",
            (Skip::V2, Encoding::Gzip) => "-s2-gz",
        }
    }

    /// The Cache-Control rule of a successful response in this form, with a playlist
    /// that ends at a segment boundary or not
    /// ([`Position::ends_at_segment_boundary`](super::blocking::Position)).
    pub fn cache_rule(self, at_segment_boundary: bool) -> CacheRule {
        match self.reload {
            Reload::Plain => CacheRule::Playlist,
            Reload::Blocking if at_segment_boundary => CacheRule::BlockingPlaylistAtBoundary,
            Reload::Blocking => CacheRule::BlockingPlaylist,
        }
    }
}

/// One rendering of a playlist, plain and gzip-compressed.
#[derive(Debug, Clone, Default)]
pub struct RenderedPlaylist {
    /// As rendered.
    pub identity: Bytes,
    /// gzip of `identity`; `None` if compression failed (then only `identity` is
    /// served: a failed compression never becomes a corrupt body).
    pub gzip: Option<Bytes>,
}

impl RenderedPlaylist {
    /// `text`, and its gzip.
    pub fn new(text: String) -> Self {
        let gzip = match gzip(text.as_bytes()) {
            Ok(packed) => Some(Bytes::from(packed)),
            Err(error) => {
                tracing::warn!(%error, "gzip of a playlist failed; serving it uncompressed");
                None
            }
        };
        Self {
            identity: Bytes::from(text),
            gzip,
        }
    }

    /// The body for `encoding`, and the encoding it really has (identity when gzip is
    /// missing).
    pub fn body(&self, encoding: Encoding) -> (&Bytes, Encoding) {
        match (encoding, &self.gzip) {
            (Encoding::Gzip, Some(gzip)) => (gzip, Encoding::Gzip),
            _ => (&self.identity, Encoding::Identity),
        }
    }
}

/// A playlist in all three renderings: whole, and as `_HLS_skip=YES` and `v2` delta
/// updates (6.2.5.1), each plain and gzipped. Made once per playlist update.
#[derive(Debug, Clone, Default)]
pub struct PreparedPlaylist {
    whole: RenderedPlaylist,
    skip: RenderedPlaylist,
    skip_v2: RenderedPlaylist,
}

impl PreparedPlaylist {
    /// Renders `playlist` in every form.
    pub fn render(playlist: &MediaPlaylist) -> Self {
        Self {
            whole: RenderedPlaylist::new(playlist.render_with(Skip::No)),
            skip: RenderedPlaylist::new(playlist.render_with(Skip::Yes)),
            skip_v2: RenderedPlaylist::new(playlist.render_with(Skip::V2)),
        }
    }

    /// The rendering for `skip`.
    pub fn rendered(&self, skip: Skip) -> &RenderedPlaylist {
        match skip {
            Skip::No => &self.whole,
            Skip::Yes => &self.skip,
            Skip::V2 => &self.skip_v2,
        }
    }
}

/// Cache-Control for each kind of response (RFC 8216bis Appendix B, and what a cache
/// tier in front needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRule {
    /// A blocking playlist request answered: six target durations, since it names a
    /// state that never changes once reached.
    BlockingPlaylist,
    /// A blocking playlist request answered with a playlist that ends at a segment
    /// boundary. video.js's VHS (3.17) merges such an update into its previous playlist
    /// keeping the old segment's parts, and asks for the same URL again at once: a copy
    /// kept for seconds would answer it with the same playlist until it expired, and
    /// VHS stalled for that long each segment (6 s behind the edge with max-age=6).
    /// Kept by no cache; every other blocking answer still is, for six target durations.
    BlockingPlaylistAtBoundary,
    /// A blocking playlist request's 4xx: four target durations.
    BlockingPlaylistError,
    /// A plain playlist request: half a target duration, and stale-while-revalidate so a
    /// CDN can answer at once while it refetches.
    Playlist,
    /// Media named by epoch, profile and number: never changes.
    Immutable,
    /// Errors and 503s: short, so caches collapse a burst of them into one.
    Error,
    /// Must not be stored (the player page, status).
    NoStore,
}

impl CacheRule {
    /// The Cache-Control value, for a stream whose target duration is `target`.
    pub fn directive(self, target: Duration) -> String {
        let td = target.as_secs().max(1);
        match self {
            CacheRule::BlockingPlaylist => format!("public, max-age={}", 6 * td),
            CacheRule::BlockingPlaylistAtBoundary => "public, max-age=0".to_string(),
            CacheRule::BlockingPlaylistError => format!("public, max-age={}", 4 * td),
            // max-age takes whole seconds: half a target duration rounded up.
            CacheRule::Playlist => format!(
                "public, max-age={}, stale-while-revalidate={td}",
                td.div_ceil(2)
            ),
            CacheRule::Immutable => "public, max-age=31536000, immutable".to_string(),
            CacheRule::Error => "public, max-age=1".to_string(),
            CacheRule::NoStore => "no-store".to_string(),
        }
    }
}

thread_local! {
    /// One deflate state per thread, reset for each playlist: a fresh one zeroes some
    /// 300 KiB of tables, which at three playlists per part was most of a passthrough
    /// stream's CPU.
    static DEFLATE: RefCell<flate2::Compress> =
        RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `data` as a gzip member (RFC 1952): header, raw deflate, CRC-32, length. Written by
/// hand around a reused raw deflate state rather than with `flate2::GzEncoder`, which
/// allocates a new state for every member (see [`DEFLATE`]).
fn gzip(data: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
    // ID1 ID2, CM = deflate, no flags, no mtime, XFL 0, OS unknown.
    let mut out = Vec::with_capacity(data.len() / 3 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    DEFLATE.with_borrow_mut(|deflate| {
        deflate.reset();
        loop {
            let consumed = usize::try_from(deflate.total_in())
                .unwrap_or(data.len())
                .min(data.len());
            out.reserve(256 + (data.len() - consumed) / 2);
            match deflate.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })?;
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952 2.3.1).
    out.extend_from_slice(&((data.len() & 0xffff_ffff) as u32).to_le_bytes());
    Ok(out)
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
            let packed = gzip(text.as_bytes()).expect("compresses");
            assert!(packed.len() < text.len() / 4, "compressed");
            let mut unpacked = String::new();
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_string(&mut unpacked)
                .expect("valid gzip");
            assert_eq!(&unpacked, text);
        }
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&gzip(b"").expect("compresses")[..])
            .read_to_end(&mut empty)
            .expect("valid gzip of nothing");
        assert!(empty.is_empty());
    }

    #[test]
    fn every_form_has_its_own_index_and_etag() {
        let mut indices = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for reload in [Reload::Plain, Reload::Blocking] {
            for skip in [Skip::No, Skip::Yes, Skip::V2] {
                for encoding in [Encoding::Identity, Encoding::Gzip] {
                    let form = DeliveryForm {
                        reload,
                        skip,
                        encoding,
                    };
                    assert!(form.index() < DeliveryForm::COUNT);
                    assert!(indices.insert(form.index()), "{form:?}");
                    tags.insert((skip, encoding, form.etag_suffix()));
                }
            }
        }
        assert_eq!(indices.len(), DeliveryForm::COUNT);
        // One tag per body (skip × encoding), the same whether the request blocked.
        assert_eq!(tags.len(), 6);
        let suffixes: std::collections::HashSet<_> = tags.iter().map(|t| t.2).collect();
        assert_eq!(suffixes.len(), 6);
    }

    #[test]
    fn cache_control_follows_appendix_b() {
        let td = Duration::from_secs(1);
        assert_eq!(
            CacheRule::BlockingPlaylist.directive(td),
            "public, max-age=6"
        );
        assert_eq!(
            CacheRule::BlockingPlaylistAtBoundary.directive(td),
            "public, max-age=0"
        );
        assert_eq!(
            DeliveryForm {
                reload: Reload::Blocking,
                skip: Skip::No,
                encoding: Encoding::Identity
            }
            .cache_rule(true),
            CacheRule::BlockingPlaylistAtBoundary
        );
        assert_eq!(
            CacheRule::BlockingPlaylistError.directive(td),
            "public, max-age=4"
        );
        assert_eq!(
            CacheRule::Playlist.directive(Duration::from_secs(4)),
            "public, max-age=2, stale-while-revalidate=4"
        );
        assert_eq!(
            CacheRule::Immutable.directive(td),
            "public, max-age=31536000, immutable"
        );
    }
}
