//! What a client sends before the handler sees it: the bytes of an HTTP/3 stream
//! through the frame bound (in any split, a stream is refused or not whatever the
//! chunking), Accept-Encoding's q-values, and a source URL through the redactor (no
//! query value named a secret survives).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mirror::http::frame_limit::{FrameLimit, StreamKind};
use mirror::http::headers::accepts_gzip;
use mirror::ingest::redact::redact;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    stream: &'a [u8],
    split: u8,
    unidirectional: bool,
    accept_encoding: &'a str,
    url: &'a str,
}

fuzz_target!(|input: Input| {
    let kind = if input.unidirectional {
        StreamKind::Unidirectional
    } else {
        StreamKind::Request
    };
    let mut whole = FrameLimit::new(kind, 1024);
    let at_once = whole.feed(input.stream).is_ok();
    let mut pieces = FrameLimit::new(kind, 1024);
    let split = usize::from(input.split).max(1);
    let piecewise = input
        .stream
        .chunks(split)
        .all(|piece| pieces.feed(piece).is_ok());
    assert_eq!(
        at_once, piecewise,
        "the verdict depends on how the bytes were split"
    );

    if let Ok(value) = http::HeaderValue::from_str(input.accept_encoding) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::ACCEPT_ENCODING, value);
        let _ = accepts_gzip(&headers);
    }

    // Every query parameter named for a secret is shown as `***`, and so is a password.
    let shown = redact(input.url);
    if let Ok(parsed) = url::Url::parse(&shown) {
        for (name, value) in parsed.query_pairs() {
            let lower = name.to_ascii_lowercase();
            if lower.contains("token") || lower.contains("passphrase") || lower.contains("key") {
                assert_eq!(value, "***", "{name} shown in {shown}");
            }
        }
        assert!(parsed.password().is_none_or(|p| p == "***"), "{shown}");
    }
});
