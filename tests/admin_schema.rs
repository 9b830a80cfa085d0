//! The admin API fuzzed against its own OpenAPI document by schemathesis (PyPI; the
//! set-up installs it into `target/tools-venv`): every operation, with examples,
//! boundary values, invalid bodies, missing or wrong tokens and stateful sequences
//! (add, then get, replace and delete what was added; the stream the server started
//! with included). Every response must conform to the document and no request may get a
//! 5xx; afterwards the API still works: every stream left is deleted and a new one added
//! plays.

use std::path::PathBuf;
use std::time::Duration;

use mirror::http::admin::Secret;
use mirror::server::RunningServer;

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/h3client.rs"]
mod h3client;

const TOKEN: &str = "schemathesis-admin-token-0123";

fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools-venv/bin/schemathesis"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_conforms_to_its_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = fixtures::loopback_settings(dir.path(), 160, 90, 200);
    settings.admin.token = Some(Secret(TOKEN.into()));
    // Every stream it manages to add is a test pattern: a few at a time on two cores.
    settings.admin.max_streams = 4;
    // One client asking as fast as it can: not what the per-address limits are for.
    settings.limits.requests_per_second_per_address = 100_000;
    settings.limits.request_burst_per_address = 100_000;
    let server = RunningServer::start(&settings, "test")
        .await
        .expect("server");
    let port = server.tcp_addr.port();
    let binary = schemathesis();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&binary)
            .arg("run")
            .arg(format!("https://127.0.0.1:{port}/admin/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--tls-verify", "false", "--checks", "all"])
            // A schema-valid stream may still name a file that is not there: 400 is
            // the right answer to it, so valid bodies are not all accepted.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "25", "--workers", "1", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap_or_else(|e| panic!("{} (scripts/setup installs it): {e}", binary.display()))
    })
    .await
    .expect("schemathesis ran");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "schemathesis:\n{report}");
    assert!(
        report.contains("/admin/streams"),
        "tested nothing?\n{report}"
    );

    // Afterwards the API still works: whatever was left is deleted, and a stream added
    // plays.
    let client = h3client::H3Client::connect(server.h3_addr, &server.tls).await;
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str())];
    assert_eq!(client.get("/healthz").await.response.status(), 200);
    let listed = client
        .request(http::Method::GET, "/admin/streams", &headers)
        .await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).expect("JSON");
    for stream in listed["streams"].as_array().expect("streams") {
        let name = stream["name"].as_str().expect("name");
        let path = format!("/admin/streams/{name}");
        let deleted = client.request(http::Method::DELETE, &path, &headers).await;
        assert_eq!(deleted.response.status(), 204, "{path}");
    }
    let added = client
        .send(
            http::Method::POST,
            "/admin/streams",
            &headers,
            r#"{"name":"after","source":"testsrc"}"#,
        )
        .await;
    assert_eq!(added.response.status(), 201, "{}", added.text());
    let playlist = tokio::time::timeout(Duration::from_secs(5), client.get("/after/video.m3u8"))
        .await
        .expect("answered");
    assert_eq!(playlist.response.status(), 200);
    assert!(playlist.text().contains("#EXT-X-PART:"));
}
