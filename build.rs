//! Embeds hls.js (installed from npm by `scripts/setup`, pinned in package-lock.json)
//! into the binary, so that the player page plays wherever the binary runs: an
//! installed binary, a container, a systemd unit. Without `node_modules` the build
//! still succeeds; the page then needs `server.hls_js`.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = manifest.join("node_modules/hls.js/dist/hls.min.js");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("hls.min.js");
    println!("cargo:rerun-if-changed={}", source.display());
    match std::fs::copy(&source, &out) {
        Ok(_) => {}
        Err(error) => {
            println!(
                "cargo:warning=hls.js not embedded ({}: {error}); run scripts/setup first",
                source.display()
            );
            std::fs::write(&out, b"").expect("OUT_DIR is writable");
        }
    }
}
