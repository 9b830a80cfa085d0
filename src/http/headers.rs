//! Response headers that follow from LL-HLS and from running behind caches: content
//! types, Cache-Control per RFC 8216bis Appendix B, CORS, Priority (RFC 9218), dates.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `application/vnd.apple.mpegurl` (RFC 8216bis 4).
pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Parts and segments: CMAF media segments (RFC 8216bis 3.1.2 via ISO/IEC 23000-19).
pub const SEGMENT_TYPE: &str = "video/iso.segment";
/// The init segment.
pub const INIT_TYPE: &str = "video/mp4";

/// Cache-Control for each kind of response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// A blocking playlist request answered (Appendix B: 6 target durations: it names a
    /// state that never changes once reached).
    BlockingPlaylist,
    /// A blocking playlist request's 4xx (Appendix B: 4 target durations).
    BlockingPlaylistError,
    /// A plain playlist request (half a target duration, and stale-while-revalidate so
    /// a CDN can answer at once while it refetches).
    Playlist,
    /// Media named by epoch and number: never changes.
    Immutable,
    /// Errors and 503s: short, so caches collapse a burst of them into one.
    Error,
    /// Must not be stored (the player page).
    NoStore,
}

impl Caching {
    /// The header value, for a stream whose target duration is `target`.
    pub fn header(self, target: Duration) -> HeaderValue {
        let td = target.as_secs().max(1);
        let value = match self {
            Caching::BlockingPlaylist => format!("public, max-age={}", 6 * td),
            Caching::BlockingPlaylistError => format!("public, max-age={}", 4 * td),
            // max-age takes whole seconds: half a target duration rounded up.
            Caching::Playlist => format!(
                "public, max-age={}, stale-while-revalidate={td}",
                td.div_ceil(2)
            ),
            Caching::Immutable => "public, max-age=31536000, immutable".to_string(),
            Caching::Error => "public, max-age=1".to_string(),
            Caching::NoStore => "no-store".to_string(),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("no-store"))
    }
}

/// RFC 9218 urgency: playlists first (1), then init (2), parts (3) and segments (4);
/// never more urgent for a bigger resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Playlists.
    Playlist = 1,
    /// Init segments.
    Init = 2,
    /// Parts: the live edge.
    Part = 3,
    /// Whole segments.
    Segment = 4,
    /// Everything else.
    Other = 5,
}

impl Urgency {
    /// The `priority` header value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_str(&format!("u={}", self as u8))
            .unwrap_or(HeaderValue::from_static("u=3"))
    }
}

/// The `Date` header for now. Formatted once per second per worker thread (no lock):
/// every response carries it, and at thousands of responses per part the formatting
/// showed.
pub fn date_now() -> HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<Option<(u64, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with_borrow_mut(|cache| match cache {
        Some((s, value)) if *s == secs => value.clone(),
        _ => {
            let value = http_date(now);
            *cache = Some((secs, value.clone()));
            value
        }
    })
}

/// The complete headers of a playlist response but Date: built once per snapshot and
/// form, shared by every request answered with it.
pub fn playlist_response(
    length: usize,
    blocking: bool,
    skip_tag: &str,
    gzip: bool,
    target: Duration,
    updated_at: SystemTime,
    etag_prefix: &str,
) -> HeaderMap {
    let mut headers = common(Some(length));
    let caching = if blocking {
        Caching::BlockingPlaylist
    } else {
        Caching::Playlist
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PLAYLIST_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, caching.header(target));
    headers.insert(header::LAST_MODIFIED, http_date(updated_at));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        HeaderName::from_static("priority"),
        Urgency::Playlist.header(),
    );
    let encoding = if gzip { "-gz" } else { "" };
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag_prefix}{skip_tag}{encoding}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers
}

/// Headers every response carries, but Date: CORS, and the length when known.
pub fn common(length: Option<usize>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(12);
    // Players on other origins read playlists and media, and a player measuring latency
    // behind a CDN needs Age. Content-Length and Last-Modified are CORS-safelisted
    // already (Fetch 3.2.3): not repeated, since every response's headers are encoded
    // anew by QPACK (h3 keeps no dynamic table) and they showed in the profile.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("age, content-range, date, etag"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers
}

/// An HTTP-date (RFC 9110 5.6.7).
pub fn http_date(at: SystemTime) -> HeaderValue {
    let t = time::OffsetDateTime::from(at);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let value = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
    HeaderValue::from_str(&value)
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn http_date_is_imf_fixdate() {
        let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn cache_control_follows_appendix_b() {
        let td = Duration::from_secs(1);
        assert_eq!(Caching::BlockingPlaylist.header(td), "public, max-age=6");
        assert_eq!(
            Caching::BlockingPlaylistError.header(td),
            "public, max-age=4"
        );
        assert_eq!(
            Caching::Playlist.header(Duration::from_secs(4)),
            "public, max-age=2, stale-while-revalidate=4"
        );
        assert_eq!(Urgency::Playlist.header(), "u=1");
    }
}
