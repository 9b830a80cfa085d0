//! Response headers that follow from LL-HLS and from running behind caches: content
//! types, Cache-Control per RFC 8216bis Appendix B, CORS, Priority (RFC 9218), dates.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::llhls::delivery::{CacheRule, DeliveryForm, Encoding};

/// `application/vnd.apple.mpegurl` (RFC 8216bis 4).
pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
/// Parts and segments: CMAF media segments (RFC 8216bis 3.1.2 via ISO/IEC 23000-19).
pub const SEGMENT_TYPE: &str = "video/iso.segment";
/// The init segment.
pub const INIT_TYPE: &str = "video/mp4";

/// The Cache-Control header of `rule` for a stream whose target duration is `target`.
pub fn cache_control(rule: CacheRule, target: Duration) -> HeaderValue {
    HeaderValue::from_str(&rule.directive(target)).unwrap_or(HeaderValue::from_static("no-store"))
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

/// The complete headers of a playlist response in `form` but Date: built once per
/// snapshot and form, shared by every request answered with it.
pub fn playlist_response(
    length: usize,
    form: DeliveryForm,
    at_segment_boundary: bool,
    target: Duration,
    updated_at: SystemTime,
    etag_prefix: &str,
) -> HeaderMap {
    let mut headers = common(Some(length));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PLAYLIST_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        cache_control(form.cache_rule(at_segment_boundary), target),
    );
    headers.insert(header::LAST_MODIFIED, http_date(updated_at));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        HeaderName::from_static("priority"),
        Urgency::Playlist.header(),
    );
    let etag = format!("\"{etag_prefix}{}\"", form.etag_suffix());
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    if form.encoding == Encoding::Gzip {
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

/// An HTTP-date (RFC 9110 5.6.7, IMF-fixdate).
pub fn http_date(at: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(at))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Whether the request's Accept-Encoding (RFC 9110 12.5.3) takes gzip: listed, or
/// covered by `*`, with a qvalue above zero, and not less wanted than identity. Written
/// here, not taken from a crate: the crates that parse it are unmaintained alphas, and
/// this is one header's grammar.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut star, mut identity) = (None, None, None::<u16>);
    let codings = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for coding in codings {
        let mut params = coding.split(';');
        let name = params.next().unwrap_or("").trim();
        let weight = params
            .filter_map(|p| p.trim().split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1000), |(_, value)| qvalue(value.trim()));
        let Some(weight) = weight else { continue };
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight);
        } else if name == "*" {
            star = Some(weight);
        } else if name.eq_ignore_ascii_case("identity") {
            identity = Some(weight);
        }
    }
    let gzip = gzip.or(star).unwrap_or(0);
    // Identity only outranks gzip when the client says so by name.
    gzip > 0 && gzip >= identity.unwrap_or(0)
}

/// An RFC 9110 12.4.2 qvalue in thousandths: `0`, `0.` to `0.999`, `1`, `1.` to
/// `1.000`; anything else is malformed.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "5" is 500 thousandths, "05" is 50: the digits, padded on the right to three.
    let digits = fraction
        .bytes()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    let thousandths = digits * 10u16.pow(3 - fraction.len() as u32);
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
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
    fn urgency_puts_playlists_first() {
        assert_eq!(Urgency::Playlist.header(), "u=1");
        assert_eq!(Urgency::Segment.header(), "u=4");
    }

    #[test]
    fn gzip_is_chosen_by_qvalue() {
        let accepts = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("deflate, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(accepts("br, *;q=0.1"));
        assert!(accepts("gzip;q=0.001, identity;q=0"));
        assert!(accepts("identity;q=0, *"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0."));
        assert!(!accepts("gzip;q=0.000"));
        assert!(!accepts("*;q=0"));
        assert!(!accepts("gzip;q=0, *"), "named gzip wins over *");
        assert!(!accepts("gzip;q=0.5, identity"), "identity preferred");
        assert!(!accepts("br"));
        assert!(!accepts("gzip;q=2"), "malformed qvalue ignored");
        assert!(!accepts(""));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
