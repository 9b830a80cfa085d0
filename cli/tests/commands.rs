//! The `mirror` command itself: what an operator types, run as a process.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{decode_errors, probe_frames};
use mirror::record::names;

#[test]
fn mirror_record_command_writes_a_presentation_ffmpeg_reads_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .args(["record", "--seconds", "2", "--out"])
        .arg(&out)
        .status()
        .expect("runs mirror");
    assert!(status.success());
    // The test pattern is a live source: 2 s of media take 2 s of wall clock.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ran at real time"
    );
    assert_eq!(decode_errors(&out.join(names::MULTIVARIANT)), "");
    let frames = probe_frames(&out.join(names::MULTIVARIANT));
    assert_eq!(
        frames.iter().filter(|f| f.media_type == "video").count(),
        60
    );
}

#[test]
fn bad_config_stops_start_up_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[cmaf]\npart_target_ms = 5\n").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
        .arg("--config")
        .arg(&config)
        .args(["record", "--seconds", "1", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .expect("runs mirror");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cmaf.part_target_ms"), "{stderr}");
    assert!(!dir.path().join("out").exists(), "nothing written");
}

/// Issue 11.11: a source's secrets (an SRT passphrase and stream id, an RTMP user,
/// password and stream key, an HTTPS user, password and token) appear nowhere an
/// operator or a stranger can read: not in the log at debug level (libav's own
/// included), not in `/streams` (served to anyone, with CORS).
#[test]
fn source_secrets_never_reach_logs_or_status() {
    let sources = [
        "srt://127.0.0.1:9?mode=caller&passphrase=hunter2hunter2&streamid=hunter2id",
        "rtmp://hunter2u:hunter2p@127.0.0.1:9/live/hunter2key",
        "https://hunter2u:hunter2p@127.0.0.1:9/live.m3u8?token=hunter2t",
    ];
    for source in sources {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .current_dir(dir.path())
            .env("RUST_LOG", "debug")
            .env_remove("MIRROR_LIBAV_LOG")
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--source",
                source,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs mirror");
        // Long enough for the source to fail and be retried at least once.
        std::thread::sleep(Duration::from_secs(4));
        let streams = std::process::Command::new("curl")
            .args(["-sk", "--http1.1", "--max-time", "5"])
            .arg(format!("https://127.0.0.1:{port}/streams"))
            .output()
            .expect("curl");
        let _ = server.kill();
        let output = server.wait_with_output().expect("mirror output");
        let streams = String::from_utf8_lossy(&streams.stdout);
        assert!(
            streams.contains("last_error"),
            "{source}: no status: {streams}"
        );
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            log.contains("***"),
            "{source}: the source is never named: {log}"
        );
        for (what, text) in [("log", log.as_str()), ("/streams", &streams)] {
            assert!(
                !text.contains("hunter2"),
                "{source}: a secret in the {what}: {text}"
            );
        }
    }
}

/// `mirror token` signs with the config's first key (or the one named); the server's
/// verifier reads back what was asked for. Without a key it says what to add.
#[test]
fn mirror_token_makes_a_token_the_server_reads() {
    use mirror::http::auth::token::{SigningKey, verify};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mirror.toml");
    let secret = |n: u8| format!("{}", char::from(b'a' + n)).repeat(40);
    std::fs::write(
        &config,
        format!(
            "[[auth.keys]]\nid = \"new\"\nsecret = \"{}\"\n[[auth.keys]]\nid = \"old\"\nsecret = \"{}\"\n",
            secret(0),
            secret(1)
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirror"))
            .arg("--config")
            .arg(&config)
            .arg("token")
            .args(args)
            .output()
            .expect("runs mirror token")
    };
    let keys = [
        SigningKey::new("new", secret(0).as_bytes()).expect("key"),
        SigningKey::new("old", secret(1).as_bytes()).expect("key"),
    ];
    let made = run(&["--stream", "cam", "--ttl", "60", "--address", "10.0.0.0/8"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let claims = verify(&token, &keys).expect("verifies");
    assert_eq!(claims.key_id, "new", "the first key signs");
    assert!(claims.streams.admits("cam") && !claims.streams.admits("cam2"));
    assert_eq!(claims.address, Some("10.0.0.0/8".parse().expect("CIDR")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        (now + 55..=now + 61).contains(&claims.expires),
        "{}",
        claims.expires
    );
    assert!(String::from_utf8_lossy(&made.stderr).contains(&format!("/t/{token}/cam/index.m3u8")));

    let by_old = run(&["--stream", "cam-*", "--key-id", "old"]);
    let token = String::from_utf8_lossy(&by_old.stdout).trim().to_string();
    assert_eq!(verify(&token, &keys).expect("verifies").key_id, "old");

    std::fs::write(&config, "").expect("config");
    let keyless = run(&["--stream", "cam"]);
    assert!(!keyless.status.success());
    assert!(String::from_utf8_lossy(&keyless.stderr).contains("[auth] keys"));
}
