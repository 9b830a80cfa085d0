//! Where a token stands in a request's path (`/t/TOKEN/…`), and the path as a log may
//! show it. Text in, text out.

/// `path` and `query` as a log may show them: a token in the path (`/t/TOKEN/…`, with
/// any number of leading slashes) or in the query (`token=`, the player page's) is
/// `***`.
pub fn redacted_target(path: &str, query: Option<&str>) -> String {
    let trimmed = path.trim_start_matches('/');
    let path = match trimmed.strip_prefix("t/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, after)) => format!("/t/***/{after}"),
            None => "/t/***".to_string(),
        },
        None => path.to_string(),
    };
    match query {
        None => path,
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("token", _)) => "token=***".to_string(),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    }
}

/// Splits `/t/TOKEN/rest` into the token and `/rest`; other paths are returned whole.
pub fn split_token(path: &str) -> (Option<&str>, &str) {
    match path
        .strip_prefix("/t/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((token, rest)) if !token.is_empty() => {
            (Some(token), &path[path.len() - rest.len() - 1..])
        }
        _ => (None, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_token() {
        assert_eq!(
            redacted_target("/t/m1.a.b/cam/x.m4s", None),
            "/t/***/cam/x.m4s"
        );
        assert_eq!(redacted_target("//t/m1.a.b/cam/x", None), "/t/***/cam/x");
        assert_eq!(redacted_target("/t/m1.a.b", None), "/t/***");
        assert_eq!(
            redacted_target("/", Some("stream=cam&token=m1.a.b")),
            "/?stream=cam&token=***"
        );
        assert_eq!(
            redacted_target("/cam/video.m3u8", Some("_HLS_msn=3")),
            "/cam/video.m3u8?_HLS_msn=3"
        );
    }

    #[test]
    fn a_token_prefix_is_split_off() {
        assert_eq!(
            split_token("/t/m1.a.b/cam/index.m3u8"),
            (Some("m1.a.b"), "/cam/index.m3u8")
        );
        assert_eq!(split_token("/cam/index.m3u8"), (None, "/cam/index.m3u8"));
        assert_eq!(split_token("/t//cam/x"), (None, "/t//cam/x"));
        assert_eq!(split_token("/t/only"), (None, "/t/only"));
    }
}
