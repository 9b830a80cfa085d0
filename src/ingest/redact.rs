//! A source's name as logs, errors and `/streams` show it: its URL without the secrets
//! URLs carry. The user name and password, every query parameter whose name says it
//! holds a secret (`passphrase`, `streamid`, `token`, `key`, `sig`, `auth`…, whatever
//! the case, and AWS's and CloudFront's signing parameters), and an RTMP stream key
//! (the path after the application name) are each replaced by `***`. What is left says
//! which source it is: scheme, host, port, path.
//!
//! Plain text in, plain text out; imports nothing of Mirror.

/// Words that, inside a query parameter's name, mark its value as a secret.
const SECRET_WORDS: [&str; 14] = [
    "pass",
    "secret",
    "token",
    "key",
    "sig",
    "auth",
    "streamid",
    "credential",
    "session",
    "jwt",
    "policy",
    "pwd",
    "hmac",
    "hash",
];

/// What replaces a secret.
const HIDDEN: &str = "***";

/// Whether a query parameter named `name` holds a secret.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `url` without its secrets; text that is not a URL is returned as it is (a file path,
/// `testsrc`).
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL the parser takes (`srt://:9000?passphrase=…` has no host): nothing
        // past the scheme can be shown safely.
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{HIDDEN}"),
            None => url.to_string(),
        };
    };
    // A URL without an authority (`scheme:path?query`) has no user or password, but
    // its query is redacted all the same (found by fuzzing).
    let has_authority = !parsed.cannot_be_a_base();
    if has_authority && !parsed.username().is_empty() {
        let _ = parsed.set_username(HIDDEN);
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret(&name) {
                    HIDDEN.to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        // Rebuilt by hand so that `***` stays readable (the serializer would escape it).
        let query: Vec<String> = pairs
            .iter()
            .map(|(name, value)| {
                if value == HIDDEN {
                    format!("{}={HIDDEN}", encode(name))
                } else {
                    format!("{}={}", encode(name), encode(value))
                }
            })
            .collect();
        parsed.set_query(Some(&query.join("&")));
    }
    if parsed.fragment().is_some() {
        // libav reads no fragment, so one here is likely an unescaped `#` inside a
        // value (SRT's `streamid=#!::u=…`): all of it goes.
        parsed.set_fragment(Some(HIDDEN));
    }
    if has_authority && matches!(parsed.scheme(), "rtmp" | "rtmps") {
        // rtmp://host/app/stream-key: the application names the service, the rest is
        // the key.
        let segments: Vec<String> = parsed
            .path_segments()
            .map(|s| s.map(str::to_string).collect())
            .unwrap_or_default();
        if segments.len() > 1 {
            parsed.set_path(&format!("/{}/{HIDDEN}", segments[0]));
        }
    }
    parsed.to_string().replace("%2A%2A%2A", HIDDEN)
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_loses_its_secrets() {
        let cases = [
            (
                "rtsp://admin:s%40cret@cam.local/stream",
                "rtsp://***:***@cam.local/stream",
            ),
            ("rtsp://cam.local/stream", "rtsp://cam.local/stream"),
            (
                "rtmp://user:pass@live.example:1935/live/sk-12345",
                "rtmp://***:***@live.example:1935/live/***",
            ),
            (
                "rtmps://live.example/app/key",
                "rtmps://live.example/app/***",
            ),
            ("rtmp://live.example/app", "rtmp://live.example/app"),
            (
                "srt://127.0.0.1:9000?mode=caller&passphrase=hunter2hunter2&streamid=%23!::r=live,u=bob&latency=200",
                "srt://127.0.0.1:9000?mode=caller&passphrase=***&streamid=***&latency=200",
            ),
            (
                "srt://127.0.0.1:9000?streamid=#!::r=live,u=bob,s=secret",
                "srt://127.0.0.1:9000?streamid=***#***",
            ),
            (
                "https://cdn.example/live/index.m3u8?token=abc&Signature=x&Key-Pair-Id=y&Policy=z&q=1",
                "https://cdn.example/live/index.m3u8?token=***&Signature=***&Key-Pair-Id=***&Policy=***&q=1",
            ),
            (
                "https://bucket.s3.example/a.m3u8?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff&X-Amz-Security-Token=t&X-Amz-Date=1",
                "https://bucket.s3.example/a.m3u8?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Date=1",
            ),
            (
                "http://u:p@host/x?AUTH=1&Secret=2&api_key=3&sig=4&password=5&jwt=6",
                "http://***:***@host/x?AUTH=***&Secret=***&api_key=***&sig=***&password=***&jwt=***",
            ),
            (
                "udp://239.0.0.1:1234?pkt_size=1316",
                "udp://239.0.0.1:1234?pkt_size=1316",
            ),
            ("tcp://host:9000?listen=0", "tcp://host:9000?listen=0"),
            ("/media/file.mp4", "/media/file.mp4"),
            ("srt://:9000?mode=listener&passphrase=hunter2", "srt://***"),
            ("rtmp://:1935/live/key?listen=1", "rtmp://***"),
            ("testsrc", "testsrc"),
            ("h:0?x=1&passphrase=hunter2", "h:0?x=1&passphrase=***"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn no_secret_survives_in_any_form() {
        for url in [
            "srt://h:1?passphrase=hunter2hunter2",
            "srt://h:1?PassPhrase=hunter2hunter2",
            "rtmp://h/app/hunter2hunter2",
            "https://hunter2hunter2@h/x",
            "https://h/x?token=hunter2hunter2#frag",
            "srt://h:1?streamid=#!::u=hunter2hunter2",
        ] {
            assert!(!redact(url).contains("hunter2"), "{url}: {}", redact(url));
        }
    }
}
