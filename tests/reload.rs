//! Changing a running server without a restart, with viewers connected: a config
//! reload (what SIGHUP does) keeps unchanged streams playing under the same names,
//! restarts changed ones, starts new ones, stops removed ones, and changes nothing when
//! the file is invalid; the certificate is reloaded when its files change, a new
//! connection sees the new one and a connection already open is not dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use mirror::config::{Overrides, Settings, StreamSettings};
use mirror::server::RunningServer;

#[path = "common/h3client.rs"]
mod h3client;

use h3client::H3Client;

/// The init segment a media playlist maps.
fn init_of(playlist: &str) -> String {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no EXT-X-MAP in\n{playlist}"))
        .to_string()
}

fn media_sequence_end(playlist: &str) -> u64 {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MEDIA-SEQUENCE");
    first
        + playlist
            .lines()
            .filter(|l| l.starts_with("#EXTINF"))
            .count() as u64
}

/// A config of small test-pattern streams, `streams` appended as written; the file is
/// watched for changes when `watch`.
fn config_text(certs: &Path, bitrate: u32, watch: bool, streams: &str) -> String {
    format!(
        "[source]\nwidth = 320\nheight = 180\n\
         [encoder]\nvideo_bitrate_kbps = {bitrate}\n\
         [server]\nlisten = \"127.0.0.1:0\"\ncerts_dir = {certs:?}\nwindow_segments = 6\n\
         watch_config = {watch}\n{streams}"
    )
}

/// Writes a config whose reloads the test makes itself (the file is not watched, so
/// each reload's summary is the test's own).
fn write_config(path: &Path, certs: &Path, bitrate: u32, streams: &str) {
    std::fs::write(path, config_text(certs, bitrate, false, streams)).expect("config written");
}

/// A server started from the config file `config` (read into `settings`), which a
/// reload reads again.
async fn serve_config(settings: &Settings, config: &Path) -> RunningServer {
    let default = StreamSettings {
        name: "test".into(),
        source: "testsrc".into(),
        renditions: Vec::new(),
        policy: None,
        publish_key: None,
        publish_key_sha256: None,
        srt_passphrase: None,
    };
    RunningServer::start_from(
        settings,
        default,
        Some(config.to_path_buf()),
        Overrides::default(),
    )
    .await
    .expect("server")
}

const A_AND_B: &str = "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\n\
                       [[streams]]\nname = \"b\"\nsource = \"testsrc\"\n";

/// With `server.watch_config` (the default), saving the file is enough: no signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_without_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, certs) = (dir.path().join("mirror.toml"), dir.path().join("certs"));
    let one = "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\n";
    std::fs::write(&config, config_text(&certs, 300, true, one)).expect("config written");
    let settings = Settings::load(Some(&config), &Overrides::default()).expect("valid");
    assert!(settings.server.watch_config);
    let server = serve_config(&settings, &config).await;
    assert!(server.state.streams.get("b").is_none());
    std::fs::write(&config, config_text(&certs, 300, true, A_AND_B)).expect("config written");
    let started = Instant::now();
    while server.state.streams.get("b").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the changed file was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let started = Instant::now();
    while client.get("/b/video.m3u8").await.response.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b does not play"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_touches_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, certs) = (dir.path().join("mirror.toml"), dir.path().join("certs"));
    write_config(&config, &certs, 300, A_AND_B);
    let settings = Settings::load(Some(&config), &Overrides::default()).expect("valid");
    let server = serve_config(&settings, &config).await;
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let a = client.get("/a/video.m3u8").await.text();
    let b = client.get("/b/video.m3u8").await.text();
    let (a_init, b_init) = (init_of(&a), init_of(&b));

    // A viewer of `a` holds a blocking reload across the reload.
    let next = media_sequence_end(&a) + 1;
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("/a/video.m3u8?_HLS_msn={next}")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // `a` unchanged, `b` given a ladder, `c` new.
    write_config(
        &config,
        &certs,
        300,
        "[[streams]]\nname = \"a\"\nsource = \"testsrc\"\n\
         [[streams]]\nname = \"b\"\nsource = \"testsrc\"\n\
         [[streams.renditions]]\nname = \"low\"\nwidth = 160\nheight = 90\n\
         [[streams]]\nname = \"c\"\nsource = \"testsrc\"\n",
    );
    let summary = server.reload().await.expect("reloaded");
    assert_eq!(summary.kept, ["a"]);
    assert_eq!(summary.restarted, ["b"]);
    assert_eq!(summary.started, ["c"]);
    assert!(summary.stopped.is_empty() && summary.failed.is_empty());
    let held = held.await.expect("held request");
    assert_eq!(
        held.response.status(),
        200,
        "a's viewer held across the reload"
    );
    assert_eq!(
        init_of(&held.text()),
        a_init,
        "a kept its names (its epoch)"
    );
    let low = client.get("/b/low.m3u8").await;
    assert_eq!(low.response.status(), 200);
    assert_ne!(init_of(&low.text()), b_init);
    assert_eq!(client.get("/c/video.m3u8").await.response.status(), 200);

    // An invalid file changes nothing, and says which field.
    std::fs::write(&config, "[cmaf]\npart_target_ms = 1\n").expect("written");
    let error = server.reload().await.expect_err("invalid");
    assert!(error.to_string().contains("cmaf.part_target_ms"), "{error}");
    assert_eq!(client.get("/c/video.m3u8").await.response.status(), 200);
    std::fs::write(&config, "[[streams]]\nname = \"a\"\n").expect("written");
    let error = server.reload().await.expect_err("no source");
    assert!(error.to_string().contains("source"), "{error}");

    // `c` removed; a setting every stream is made with changed: both others restart.
    write_config(&config, &certs, 400, A_AND_B);
    let summary = server.reload().await.expect("reloaded");
    assert_eq!(summary.stopped, ["c"]);
    assert_eq!(summary.restarted, ["a", "b"]);
    let a_now = client.get("/a/video.m3u8").await;
    assert_ne!(
        init_of(&a_now.text()),
        a_init,
        "a restarted with the new bit rate"
    );
    let listed = client.get("/streams").await.text();
    assert!(!listed.contains("\"c\""), "{listed}");
}

/// A self-signed certificate for localhost, written as PEM files.
fn write_certificate(cert: &Path, key: &Path) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    // Written beside and renamed into place, as an ACME client does.
    let (cert_tmp, key_tmp) = (cert.with_extension("new"), key.with_extension("new"));
    std::fs::write(&cert_tmp, made.cert.pem()).expect("cert");
    std::fs::write(&key_tmp, made.key_pair.serialize_pem()).expect("key");
    std::fs::rename(&key_tmp, key).expect("key in place");
    std::fs::rename(&cert_tmp, cert).expect("cert in place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write_certificate(&cert, &key);
    let mut settings = Settings::default();
    settings.source.width = 160;
    settings.source.height = 90;
    settings.server.listen = "127.0.0.1:0".parse().expect("addr");
    settings.server.cert = Some(cert.clone());
    settings.server.key = Some(key.clone());
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let first = mirror::tls::load_or_generate(Some(&cert), Some(&key), dir.path()).expect("A");
    let before = H3Client::connect(server.h3_addr, &first).await;
    assert_eq!(before.get("/healthz").await.response.status(), 200);

    write_certificate(&cert, &key);
    let renewed = mirror::tls::load_or_generate(Some(&cert), Some(&key), dir.path()).expect("B");
    assert_ne!(renewed.spki_sha256, first.spki_sha256);
    let started = Instant::now();
    while server.certificate.spki_sha256() != renewed.spki_sha256 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new connection is shown the renewed certificate (it trusts only that one)...
    let after = H3Client::connect(server.h3_addr, &renewed).await;
    assert_eq!(after.get("/healthz").await.response.status(), 200);
    let config = mirror::tls::client_config_trusting(&first, &[b"h3"]).expect("client");
    let stale =
        mirror_loadgen::client::H3Client::connect(server.h3_addr, "localhost", config).await;
    assert!(stale.is_err(), "the old certificate is still shown");
    // ... and over TCP too (curl trusting only the renewed one).
    let port = server.tcp_addr.port();
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/healthz"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200");
    // The connection made before the renewal was not dropped.
    assert_eq!(before.get("/healthz").await.response.status(), 200);

    // A half-written renewal (a key that is not the certificate's) is refused and the
    // certificate in use stays.
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&key, other.serialize_pem()).expect("mismatched key");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.certificate.spki_sha256(), renewed.spki_sha256);
    let again = H3Client::connect(server.h3_addr, &renewed).await;
    assert_eq!(again.get("/healthz").await.response.status(), 200);
}
