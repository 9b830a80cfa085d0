//! The media names a request asks for: a name the parser accepts is exactly the name
//! the playlist would give that init segment, part or segment; a name taken as a hint
//! cut short (iOS 16.1.1) is a part's whole name less its last character.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mirror::llhls::live::{MediaName, MediaNames};

fuzz_target!(|name: &str| {
    let names = MediaNames::new(
        "video-0123abcd",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    match names.parse(name) {
        Some(MediaName::Part(msn, index)) => assert_eq!(names.part(msn, index), name),
        Some(MediaName::Segment(msn)) => assert_eq!(names.segment(msn), name),
        Some(MediaName::Init(_)) => assert!(name.ends_with(".mp4")),
        None => {}
    }
    if let Some(cut) = names.parse_cut_hint(name) {
        let MediaName::Part(msn, index) = cut else {
            panic!("{name}: only parts are hinted");
        };
        assert_eq!(format!("{name}s"), names.part(msn, index));
    }
});
