//! Headless Chromium for the tests: the Node scripts in `tests/browser/` drive Debian's
//! chromium through playwright-core (both installed by `scripts/setup`) and print what
//! the page reported as JSON.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

/// Runs `node tests/browser/{script} args…` from the repository root and returns the
/// JSON it printed; a script that fails fails the test with its output.
pub async fn run_script(script: &str, args: &[String]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .args(args)
        .current_dir(root)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run {script} {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("JSON from the page")
}

/// The latency samples of a `players.mjs` report (seconds, four a second once playing).
pub fn latencies(report: &serde_json::Value) -> Vec<f64> {
    report["latencies"]
        .as_array()
        .expect("latencies")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect()
}
