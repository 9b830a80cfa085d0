//! Where a rendition's finished parts and segments go: the live store (served while
//! the stream runs) or a directory (`mirror record`). The media path is the same for
//! both; only the sink differs.

use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;

use super::MULTIVARIANT_PLAYLIST;
use super::recording::Recorded;
use crate::store::{self, Store};

/// Why a sink could not keep media.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct SinkError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Takes finished media by its name.
pub trait MediaSink: Send {
    /// `chunks` (a part, or a segment as its parts) are complete under `name`.
    fn put(
        &mut self,
        name: &str,
        chunks: Vec<Bytes>,
        completed: SystemTime,
    ) -> Result<(), SinkError>;

    /// A recording's presentation as it stands: after each segment, and once finished
    /// (its playlists then end with EXT-X-ENDLIST). A live store has no use for it.
    fn presentation(&mut self, _recorded: &Recorded) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The live store, under the stream's name.
pub struct StoreSink {
    /// The stream the keys are made for.
    pub stream: String,
    /// The store.
    pub store: Store,
}

impl MediaSink for StoreSink {
    fn put(
        &mut self,
        name: &str,
        chunks: Vec<Bytes>,
        completed: SystemTime,
    ) -> Result<(), SinkError> {
        self.store
            .insert(store::key(&self.stream, name), chunks, completed);
        Ok(())
    }
}

/// Files in a directory, one per part and segment, named as they are served, and the
/// playlists and init segments that make them a presentation, rewritten after every
/// segment so that the directory plays while the recording runs.
pub struct DirectorySink {
    dir: PathBuf,
    /// Init segments already written (they never change once named).
    inits_written: std::collections::HashSet<String>,
}

impl DirectorySink {
    /// A sink writing into `dir`, which exists.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            inits_written: Default::default(),
        }
    }

    /// Writes `chunks` as the file `name`.
    pub fn write(&self, name: &str, chunks: &[&[u8]]) -> Result<(), SinkError> {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let io = |source| SinkError {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&path).map_err(io)?;
        for chunk in chunks {
            file.write_all(chunk).map_err(io)?;
        }
        Ok(())
    }
}

impl MediaSink for DirectorySink {
    fn put(&mut self, name: &str, chunks: Vec<Bytes>, _: SystemTime) -> Result<(), SinkError> {
        let slices: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        self.write(name, &slices)
    }

    fn presentation(&mut self, recorded: &Recorded) -> Result<(), SinkError> {
        for rendition in &recorded.renditions {
            for (name, init) in &rendition.inits {
                if !self.inits_written.contains(name) {
                    self.write(name, &[init])?;
                    self.inits_written.insert(name.clone());
                }
            }
            let playlist = rendition.playlist.render();
            self.write(&format!("{}.m3u8", rendition.id), &[playlist.as_bytes()])?;
        }
        self.write(MULTIVARIANT_PLAYLIST, &[&recorded.multivariant])
    }
}
