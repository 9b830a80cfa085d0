//! The ffmpeg CLI as a live sender: 20 s of a 25 fps test pattern with a tone, encoded
//! H.264 + AAC, pushed to a URL in a container (MPEG-TS over UDP or SRT, FLV over RTMP).

use std::process::{Child, Command, Stdio};

/// A running `ffmpeg`; dropping it stops it.
pub struct Sender(Child);

impl Sender {
    /// Starts sending to `url` as `format` (`mpegts`, `flv`).
    pub fn start(url: &str, format: &str) -> Self {
        Self::start_with(url, format, &[])
    }

    /// The same, with `output` options before the URL (`-output_ts_offset 60`, say).
    pub fn start_with(url: &str, format: &str, output: &[&str]) -> Self {
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "20", "-c:v", "libx264", "-preset", "ultrafast"])
            .args([
                "-tune",
                "zerolatency",
                "-g",
                "25",
                "-c:a",
                "aac",
                "-f",
                format,
            ])
            .args(output)
            .arg(url)
            .stdin(Stdio::null())
            .spawn()
            .expect("ffmpeg runs");
        Self(child)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
