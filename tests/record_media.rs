//! The whole media path against real libav: the test pattern recorded to disk, every
//! part and segment decoded by ffmpeg, timelines checked by parsing the boxes back.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{decode_errors, make_file, probe_frames, with_init};
use mirror::config::Settings;
use mirror::ingest::SourceSpec;
use mirror::record::{RecordOptions, names, record};
use mp4_atom::{Decode, Moof, TrunSamples};

const SECONDS: u64 = 3;
const AAC_FRAME_SECS: f64 = 1024.0 / 48_000.0;

/// Per-track (tfdt, summed trun durations) of one part.
fn timeline(part: &[u8]) -> Vec<(u32, u64, u64)> {
    let moof = Moof::decode(&mut &part[..]).expect("part starts with moof");
    moof.traf
        .iter()
        .map(|traf| {
            let TrunSamples::Explicit(entries) = &traf.trun[0].samples else {
                panic!("explicit")
            };
            let total: u64 = entries
                .iter()
                .map(|e| u64::from(e.duration.unwrap_or(0)))
                .sum();
            (
                traf.tfhd.track_id,
                traf.tfdt.as_ref().expect("tfdt").base_media_decode_time,
                total,
            )
        })
        .collect()
}

fn record_to(dir: &Path, settings: &Settings) -> mirror::record::RecordSummary {
    record(
        settings,
        &RecordOptions {
            out_dir: dir.to_owned(),
            duration: Duration::from_secs(SECONDS),
            realtime: false,
            source: SourceSpec::TestPattern,
        },
    )
    .expect("records")
}

#[test]
fn recorded_presentation_decodes_part_by_part_and_segment_by_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let summary = record_to(out, &Settings::default());
    assert_eq!(summary.segments, SECONDS as usize);
    assert_eq!(summary.parts, SECONDS as usize * 5);
    assert_eq!(summary.codecs, "avc1.64001f,mp4a.40.2");
    assert_eq!(summary.refused_samples, 0);
    let init = std::fs::read(out.join(summary.names.init())).expect("init");
    let scratch = tempfile::tempdir().expect("tempdir");

    let mut next_tfdt = std::collections::HashMap::new();
    for msn in 0..SECONDS {
        // Every segment, with the init segment before it: 30 frames, an IDR first.
        let segment = std::fs::read(out.join(summary.names.segment(msn))).expect("segment");
        let file = with_init(scratch.path(), &format!("seg{msn}.mp4"), &init, &segment);
        assert_eq!(decode_errors(&file), "", "segment {msn} decodes cleanly");
        let frames = probe_frames(&file);
        let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
        assert_eq!(video.len(), 30, "segment {msn} frame count");
        assert!(
            video[0].key_frame && video[0].pict_type == "I",
            "segment {msn} starts with an IDR"
        );
        assert!(
            video[1..].iter().all(|f| !f.key_frame),
            "one keyframe per 1 s segment"
        );
        assert!(
            (video[0].pts_time - msn as f64).abs() < 1e-3,
            "segment {msn} starts at {msn} s"
        );
        assert!(
            frames.iter().any(|f| f.media_type == "audio"),
            "segment {msn} has audio"
        );

        let mut concatenated = Vec::new();
        for index in 0..5u32 {
            // Every part alone decodes too: 6 frames, the first one a keyframe only in
            // part 0.
            let part = std::fs::read(out.join(summary.names.part(msn, index))).expect("part");
            let file = with_init(
                scratch.path(),
                &format!("part{msn}.{index}.mp4"),
                &init,
                &part,
            );
            assert_eq!(
                decode_errors(&file),
                "",
                "part {msn}.{index} decodes cleanly"
            );
            let frames = probe_frames(&file);
            let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
            if index == 0 {
                assert_eq!(video.len(), 6, "part {msn}.{index} frame count");
                assert!(video[0].key_frame);
            }
            // tfdt is continuous across parts and segments, per track.
            for (track, tfdt, duration) in timeline(&part) {
                if let Some(expected) = next_tfdt.get(&track) {
                    assert_eq!(tfdt, *expected, "track {track} tfdt at part {msn}.{index}");
                }
                next_tfdt.insert(track, tfdt + duration);
            }
            concatenated.extend_from_slice(&part);
        }
        assert_eq!(
            concatenated, segment,
            "segment {msn} is exactly its parts' bytes"
        );
    }

    // The presentation as a player sees it, through the playlists.
    let index = out.join(names::MULTIVARIANT);
    assert_eq!(decode_errors(&index), "");
    let frames = probe_frames(&index);
    let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
    let audio: Vec<_> = frames.iter().filter(|f| f.media_type == "audio").collect();
    assert_eq!(video.len(), SECONDS as usize * 30);
    // A/V in sync: both tracks start together, within one audio frame, and end together.
    assert!(
        (video[0].pts_time - audio[0].pts_time).abs() <= AAC_FRAME_SECS,
        "{} vs {}",
        video[0].pts_time,
        audio[0].pts_time
    );
    let audio_span = audio.len() as f64 * AAC_FRAME_SECS;
    assert!(
        (audio_span - SECONDS as f64).abs() < 0.2,
        "audio lasts {audio_span} s"
    );
}

#[test]
fn playlists_describe_the_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let summary = record_to(out, &Settings::default());
    let multivariant = std::fs::read(out.join(names::MULTIVARIANT)).expect("index");
    let master = m3u8_rs::parse_master_playlist_res(&multivariant).expect("multivariant parses");
    let variant = &master.variants[0];
    assert_eq!(variant.uri, names::MEDIA);
    assert_eq!(variant.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
    assert_eq!(
        variant.resolution.map(|r| (r.width, r.height)),
        Some((1280, 720))
    );
    assert_eq!(variant.frame_rate, Some(30.0));
    // 2.5 Mbit/s video + 128 kbit/s audio, measured from the segments written.
    assert!(
        (1_000_000..6_000_000).contains(&variant.bandwidth),
        "BANDWIDTH {}",
        variant.bandwidth
    );
    assert!(variant.average_bandwidth.expect("AVERAGE-BANDWIDTH") <= variant.bandwidth);

    let media = std::fs::read_to_string(out.join(names::MEDIA)).expect("media playlist");
    let parsed =
        m3u8_rs::parse_media_playlist_res(media.as_bytes()).expect("media playlist parses");
    assert!(parsed.end_list);
    assert_eq!(parsed.target_duration, 1);
    assert_eq!(parsed.segments.len(), SECONDS as usize);
    for (msn, segment) in parsed.segments.iter().enumerate() {
        assert_eq!(segment.uri, summary.names.segment(msn as u64));
        assert!((segment.duration - 1.0).abs() < 1e-3);
        assert!(
            segment.program_date_time.is_some(),
            "PROGRAM-DATE-TIME on segment {msn}"
        );
    }
    assert!(media.contains(&format!("#EXT-X-MAP:URI=\"{}\"", summary.names.init())));
    assert!(media.contains("#EXT-X-PART-INF:PART-TARGET=0.200"));
    assert_eq!(
        media.matches("#EXT-X-PART:").count(),
        15,
        "parts of the last 3 target durations"
    );
    assert_eq!(media.matches("INDEPENDENT=YES").count(), 3);
}

#[test]
fn b_frames_get_signed_composition_offsets_and_a_timeline_from_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let mut settings = Settings::default();
    settings.encoder.bframes = 2;
    let summary = record_to(out, &settings);
    assert_eq!(decode_errors(&out.join(names::MULTIVARIANT)), "");
    let frames = probe_frames(&out.join(names::MULTIVARIANT));
    assert_eq!(
        frames.iter().filter(|f| f.media_type == "video").count(),
        SECONDS as usize * 30
    );
    let first = std::fs::read(out.join(summary.names.part(0, 0))).expect("part");
    let moof = Moof::decode(&mut &first[..]).expect("moof");
    let video = &moof.traf[0];
    assert_eq!(
        video.tfdt.as_ref().expect("tfdt").base_media_decode_time,
        0,
        "decode starts at 0"
    );
    let TrunSamples::Explicit(entries) = &video.trun[0].samples else {
        panic!("explicit")
    };
    // Presentation starts at zero too: the first sample (the IDR) has offset 0, and
    // B-frames are presented before their decode time on the shifted timeline.
    assert_eq!(entries[0].cts, Some(0));
    assert!(
        entries.iter().any(|e| e.cts.is_some_and(|c| c < 0)),
        "signed offsets used"
    );
}

#[test]
fn a_file_loops_as_live_with_continuous_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2 s of file, 5 s of recording: it plays two and a half times.
    let file = make_file(dir.path(), "clip.mp4", 2, true);
    let out = dir.path().join("out");
    let summary = record(
        &Settings::default(),
        &RecordOptions {
            out_dir: out.clone(),
            duration: Duration::from_secs(5),
            realtime: false,
            source: SourceSpec::File(file),
        },
    )
    .expect("records the file");
    assert_eq!(summary.segments, 5);
    assert_eq!(
        summary.refused_samples, 0,
        "timestamps never went backwards across loops"
    );
    assert!(
        summary.codecs.starts_with("avc1.64") && summary.codecs.ends_with(",mp4a.40.2"),
        "{}",
        summary.codecs
    );
    assert_eq!(decode_errors(&out.join(names::MULTIVARIANT)), "");
    let frames = probe_frames(&out.join(names::MULTIVARIANT));
    let video: Vec<_> = frames.iter().filter(|f| f.media_type == "video").collect();
    assert_eq!(video.len(), 125, "5 s at the file's 25 fps");
    for pair in video.windows(2) {
        let step = pair[1].pts_time - pair[0].pts_time;
        assert!(
            (step - 0.04).abs() < 1e-3,
            "continuous across the loop: step {step} at {}",
            pair[0].pts_time
        );
    }
    let audio =
        frames.iter().filter(|f| f.media_type == "audio").count() as f64 * 1024.0 / 48_000.0;
    assert!((audio - 5.0).abs() < 0.2, "sound all along: {audio} s");
}

#[test]
fn a_file_without_sound_gets_silence_and_an_unplayable_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = make_file(dir.path(), "mute.mp4", 1, false);
    let out = dir.path().join("out");
    let options = RecordOptions {
        out_dir: out.clone(),
        duration: Duration::from_secs(2),
        realtime: false,
        source: SourceSpec::File(file),
    };
    record(&Settings::default(), &options).expect("records");
    assert_eq!(decode_errors(&out.join(names::MULTIVARIANT)), "");
    let not_media = dir.path().join("notes.txt");
    std::fs::write(&not_media, "not a video").expect("write");
    let error = record(
        &Settings::default(),
        &RecordOptions {
            source: SourceSpec::File(not_media),
            ..options
        },
    )
    .expect_err("refused");
    assert!(error.to_string().contains("notes.txt"), "{error}");
}

#[test]
fn the_directory_plays_while_the_recording_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_owned();
    let recording = std::thread::spawn(move || {
        record(
            &Settings::default(),
            &RecordOptions {
                out_dir: out,
                duration: Duration::from_secs(4),
                realtime: true,
                source: SourceSpec::TestPattern,
            },
        )
    });
    let media = dir.path().join(names::MEDIA);
    let deadline = std::time::Instant::now() + Duration::from_millis(3500);
    loop {
        if let Ok(text) = std::fs::read_to_string(&media)
            && text.contains("#EXTINF")
        {
            assert!(!text.contains("#EXT-X-ENDLIST"), "still recording: {text}");
            assert!(dir.path().join(names::MULTIVARIANT).exists());
            let init = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("EXT-X-MAP");
            assert!(dir.path().join(init).exists(), "its init segment is there");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no segment listed while recording"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    recording.join().expect("thread").expect("records");
    let finished = std::fs::read_to_string(&media).expect("media playlist");
    assert!(finished.ends_with("#EXT-X-ENDLIST\n"), "{finished}");
}
