//! RTMP pull against a real RTMP server: Debian's nginx with its RTMP module, fed FLV by
//! the ffmpeg CLI. What Mirror serves decodes; and a pull from a port where nothing
//! listens fails loudly (an error in `/streams`) instead of quietly becoming an RTMP
//! server on that port.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::loopback_settings;
use common::h3client::H3Client;
use common::rtsp::free_port;
use common::sender::Sender;
use common::{decode_errors, probe_frames, with_init};
use mirror::ingest::SourceSpec;
use mirror::server::RunningServer;
use mirror::stream::SourceState;

/// nginx in the foreground with one RTMP application, `live`, on `port`.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("nginx.conf");
        let root = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\nworker_processes 1;\n\
                 pid {root}/nginx.pid;\nerror_log {root}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; \
                 application live {{ live on; }} }} }}\n"
            ),
        )
        .expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx (scripts/setup installs nginx-light and libnginx-mod-rtmp)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_pull_from_nginx_is_served_and_decodes() {
    let port = free_port();
    let _nginx = Nginx::start(port);
    let url = format!("rtmp://127.0.0.1:{port}/live/camera");
    let _sender = Sender::start(&url, "flv");
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let server = RunningServer::start_with(&settings, "net", &SourceSpec::parse(&url))
        .await
        .expect("server starts");
    let client = H3Client::connect(server.h3_addr, &server.tls).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let fetched = client.get("/net/video.m3u8?_HLS_msn=3").await;
        if fetched.status() == 200 && fetched.text().contains("-3.m4s\n") {
            break fetched.text();
        }
        assert!(
            Instant::now() < deadline,
            "no segments from RTMP ({}) {:?}",
            fetched.status(),
            server.state.streams.get("net").expect("stream").status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed = mirror::llhls::parse::parse_media_playlist(&playlist).expect("a media playlist");
    let segment = &listed
        .segments
        .iter()
        .find(|s| s.msn == 2)
        .expect("segment 2")
        .uri;
    let init = client
        .get(&format!("/net/{}", listed.maps.first().expect("map")))
        .await;
    let media = client.get(&format!("/net/{segment}")).await;
    let file = with_init(dir.path(), "seg.mp4", &init.body, &media.body);
    assert_eq!(decode_errors(&file), "");
    let frames = probe_frames(&file);
    assert_eq!(
        frames.iter().filter(|f| f.media_type == "video").count(),
        25
    );
    assert!(frames.iter().filter(|f| f.media_type == "audio").count() >= 40);
}

/// Issue 11.13: libav's `timeout` option means "listen" to RTMP; set on every protocol,
/// it turned a pull from a closed port into a server on that port, "starting" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_pull_from_a_closed_port_fails_and_says_why() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = loopback_settings(dir.path(), 320, 240, 400);
    let url = format!("rtmp://127.0.0.1:{port}/live/camera");
    let server = RunningServer::start_with(&settings, "net", &SourceSpec::parse(&url))
        .await
        .expect("server starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = server.state.streams.get("net").expect("stream").status();
        if status.last_error.is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no error after 10 s of pulling from a closed port: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(status.state, SourceState::Live);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "Mirror listens on the port it was to pull from"
    );
}
