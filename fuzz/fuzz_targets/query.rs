//! The LL-HLS delivery directives of a playlist request (`_HLS_msn`, `_HLS_part`,
//! `_HLS_skip`): any query string either parses into values that say what it said, or
//! is refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirror::llhls::blocking::parse_query;

fuzz_target!(|query: &str| {
    if let Ok(parsed) = parse_query(query) {
        // A part is never asked for without its segment.
        assert!(parsed.part.is_none() || parsed.msn.is_some());
        if let Some(msn) = parsed.msn {
            assert!(query.contains(&format!("_HLS_msn={msn}")) || query.contains("_HLS_msn=0"));
        }
    }
});
